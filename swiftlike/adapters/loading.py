"""Put a LoRA adapter on a base model, after checking it was trained on that base."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import adapter_config, check_base, read_manifest


def loaded_from(model) -> Path | None:
    """The weights dir a transformers model was loaded from (its `name_or_path`), when it is a local dir."""
    name = getattr(model, "name_or_path", None)
    path = Path(name) if name else None
    return path if path is not None and (path / "config.json").is_file() else None


def load_adapter(model, path, *, adapter_name="default", force=False, is_trainable=False, base_dir=None,
                 base_model_type=None):
    """Load the PEFT adapter dir `path` onto `model`. The base is checked against the adapter's manifest (type and
    weights fingerprint): `base_dir`/`base_model_type` when the caller knows them, else the weights where `model` was
    loaded from (the fingerprint alone: a dir name does not say the model type reliably)."""
    from peft import PeftModel

    path = Path(path)
    config = adapter_config(path)
    if base_dir is None and base_model_type is None:
        base_dir = loaded_from(model.get_base_model() if isinstance(model, PeftModel) else model)
    check_base(read_manifest(path), base_dir=base_dir, base_model_type=base_model_type, force=force,
               where=f"adapter {path}")
    # low_cpu_mem_usage: LoRA layers are created empty (meta) and take the saved tensors as they are, instead of
    # being randomly initialised first and overwritten: the same model, loaded faster. LoRA only: other methods
    # (AdaLoRA resizing to its saved rank pattern) compute on the layers as they load, which meta tensors cannot.
    lazy = config.get("peft_type", "LORA") == "LORA"
    if isinstance(model, PeftModel):
        model.load_adapter(str(path), adapter_name=adapter_name, is_trainable=is_trainable, low_cpu_mem_usage=lazy)
        return model
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, is_trainable=is_trainable,
                                     low_cpu_mem_usage=lazy)
