"""What an export writes: the checkpoint's model with its adapter merged (a full checkpoint as is), checked before
any weights load, then loaded."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from ..models.options import ModelArguments
from ..registry import SwiftlikeError, get_registry


@dataclass
class Source:
    ckpt: Path
    is_adapter: bool
    options: ModelArguments
    architectures: list  # [] when nothing on disk says, before the weights load
    force: bool = False
    model_dir: Path | None = None  # where the model's config and tokenizer are, when known before loading


def check_source(ckpt_dir, *, dequantize=False, force=False, options: ModelArguments | None = None) -> Source:
    """The checkpoint to export, checked without loading weights (a QLoRA adapter needs `dequantize`)."""
    from ..adapters import resolve as resolve_adapter
    from ..checkpoint import is_adapter_dir, read_manifest, refuse_reward_model
    from ..merge import check_mergeable

    opts = options or ModelArguments()
    ckpt = Path(resolve_adapter(ckpt_dir, force=force))
    if not ckpt.is_dir():
        raise SwiftlikeError(f"--ckpt_dir {ckpt}: no such directory")
    refuse_reward_model(ckpt)
    if not is_adapter_dir(ckpt):
        if not (ckpt / "config.json").is_file():
            raise SwiftlikeError(f"--ckpt_dir {ckpt}: neither a LoRA adapter (adapter_config.json) nor a model "
                                 f"(config.json)")
        return Source(ckpt, False, opts, _read_config(ckpt / "config.json").get("architectures") or [], force, ckpt)
    ckpt, saved, opts = check_mergeable(ckpt, dequantize=dequantize, force=force, options=opts)
    base_dir = opts.model_cache_dir or opts.model or saved.get("model_dir")
    if base_dir and (Path(base_dir) / "config.json").is_file():
        base = Path(base_dir)
        return Source(ckpt, True, opts, _read_config(base / "config.json").get("architectures") or [], force, base)
    model_type = opts.model_type or saved.get("model_type") or read_manifest(ckpt).get("base_model_type")
    models = get_registry().models
    architectures = list(models.get(model_type).architectures) if model_type and model_type in models else []
    return Source(ckpt, True, opts, architectures, force)


def load_source(source: Source):
    """infer's `Loaded`: the merged model (fp32 unless --torch_dtype says otherwise), tokenizer and template."""
    from ..infer import load_checkpoint
    from ..merge import merged_model

    opts = source.options
    if opts.torch_dtype == "auto":  # exported weights are converted from full precision
        opts = replace(opts, torch_dtype="float32")
    if source.is_adapter:
        return merged_model(source.ckpt, force=source.force, options=opts)
    return load_checkpoint(source.ckpt, force=source.force, options=opts)


def tokenizer_json(source: Source) -> dict:
    """The tokenizer.json the export will load (the checkpoint's own, else its base's); {} when not known yet."""
    for where in (source.ckpt, source.model_dir):
        if where is not None and (Path(where) / "tokenizer.json").is_file():
            return _read_config(Path(where) / "tokenizer.json")
    return {}


def _read_config(file: Path) -> dict:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise SwiftlikeError(f"{file}: unreadable ({err})") from None
    return data if isinstance(data, dict) else {}
