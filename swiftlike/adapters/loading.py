"""Put a LoRA adapter on a base model, after checking it was trained on that base."""
from __future__ import annotations

import json
from pathlib import Path

from ..registry import SwiftlikeError

MANIFEST = "swiftlike.json"


def read_manifest(path) -> dict:
    file = Path(path) / MANIFEST
    if not file.exists():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise SwiftlikeError(f"{file}: invalid JSON ({err}); the adapter is damaged — reinstall it") from None


def check_base(manifest: dict, base_dir, base_model_type: str | None, force: bool = False) -> None:
    """Refuse an adapter trained on another model type or other base weights (fingerprint)."""
    if force or not manifest:
        return
    want_type = manifest.get("base_model_type")
    if want_type and base_model_type and want_type != base_model_type:
        raise SwiftlikeError(f"adapter was trained on {want_type!r}, the base model is {base_model_type!r}; "
                             f"load it on {want_type} (or pass --force)")
    want_fp = manifest.get("base_fingerprint")
    if want_fp and base_dir is not None:
        from ..train.sft import base_fingerprint

        have = base_fingerprint(Path(base_dir))
        if have != want_fp:
            raise SwiftlikeError(f"adapter was trained on other {want_type or 'base'} weights (fingerprint "
                                 f"{want_fp[:12]}…, this base {have[:12]}…); use the same base (or pass --force)")


def load_adapter(model, path, *, adapter_name="default", force=False, is_trainable=False):
    from peft import PeftModel

    path = Path(path)
    if not (path / "adapter_config.json").exists():
        raise SwiftlikeError(f"{path}: no adapter_config.json — not a LoRA adapter directory")
    if not (path / "adapter_model.safetensors").exists():
        raise SwiftlikeError(f"{path}: no adapter_model.safetensors (swiftlike loads safetensors adapters only)")
    resolved = getattr(model, "swiftlike_resolved", None)
    check_base(read_manifest(path), resolved.path if resolved else None,
               resolved.spec.name if resolved else None, force)
    # low_cpu_mem_usage: LoRA layers are created empty (meta) and take the saved tensors as they are, instead of
    # being randomly initialised first and overwritten: the same model, loaded faster.
    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=adapter_name, is_trainable=is_trainable, low_cpu_mem_usage=True)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, is_trainable=is_trainable,
                                     low_cpu_mem_usage=True)
