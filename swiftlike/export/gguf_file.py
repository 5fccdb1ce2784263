"""`swiftlike export --to_gguf OUT.gguf`: the merged model as one GGUF file (llama.cpp, Ollama), written with the
`gguf` package's writer to a temporary name beside OUT, then renamed."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..models.options import ModelArguments
from ..registry import SwiftlikeError
from .arguments import GGUF_TYPES


def check_output_file(out, *, overwrite=False, flag="--to_gguf") -> Path:
    out = Path(out)
    if out.is_dir():
        raise SwiftlikeError(f"{flag} {out}: is a directory; give a file name (OUT.gguf)")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise SwiftlikeError(f"{flag} {out}: exists; choose a new name, or pass --overwrite to replace it")
    return out


def to_gguf(ckpt_dir, out, *, gguf_type="f16", dequantize=False, force=False, overwrite=False,
            options: ModelArguments | None = None) -> Path:
    """Write checkpoint `ckpt_dir` (an adapter merged into its base, or a full model) to GGUF file `out`."""
    from .gguf_arch import gguf_arch
    from .gguf_vocab import check_tokenizer_json
    from .source import check_source, tokenizer_json

    if gguf_type not in GGUF_TYPES:
        raise SwiftlikeError(f"--gguf_type {gguf_type}: use {' or '.join(GGUF_TYPES)}")
    out = check_output_file(out, overwrite=overwrite)
    source = check_source(ckpt_dir, dequantize=dequantize, force=force, options=options)
    if source.architectures:
        gguf_arch(source.architectures, source.ckpt)
    tokenizer = tokenizer_json(source)
    if tokenizer:
        check_tokenizer_json(tokenizer, source.ckpt)
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SwiftlikeError("GGUF export needs the gguf package: pip install gguf") from None
    from .source import load_source

    loaded = load_source(source)
    return write_gguf(loaded, out, gguf_type=gguf_type, name=source.ckpt.name, where=source.ckpt)


def write_gguf(loaded, out: Path, *, gguf_type: str, name: str, where) -> Path:
    """`loaded` (infer's Loaded: model, tokenizer, template) -> `out`; nothing is left at `out` on failure."""
    import gguf
    import torch

    from .gguf_arch import check_config, gguf_arch, gguf_tensors, write_hparams
    from .gguf_vocab import add_tokenizer, check_tokenizer

    config = loaded.model.config
    arch = gguf_arch(getattr(config, "architectures", None) or [type(loaded.model).__name__], where)
    check_config(config, arch, where)
    tokenizer_json = check_tokenizer(loaded.tokenizer, where)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(name)
        write_hparams(writer, config, arch)
        quantize = gguf_type == "q8_0"
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.MOSTLY_F16)
        if quantize:
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(writer, loaded.tokenizer, tokenizer_json, config.vocab_size,
                      loaded.template.chat_template_for_export() if loaded.template else None)
        with torch.no_grad():
            for tensor_name, data in gguf_tensors(loaded.model.state_dict(), config, arch):
                _add_tensor(writer, tensor_name, data, quantize=quantize)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _add_tensor(writer, name: str, data, *, quantize: bool) -> None:
    """Norms, biases and rope factors stay float32 (as llama.cpp's converter keeps them); matrices are f16, or
    q8_0 where a row splits into whole 32-value blocks (else f16)."""
    import gguf
    import numpy as np

    if data.ndim <= 1:
        writer.add_tensor(name, data.astype(np.float32))
        return
    q8 = gguf.GGMLQuantizationType.Q8_0
    if quantize and data.shape[-1] % gguf.GGML_QUANT_SIZES[q8][0] == 0:
        writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), q8), raw_dtype=q8)
        return
    writer.add_tensor(name, data.astype(np.float16))
