"""Adapters: loading onto a base model, and the marketplace (publish, store, install, package)."""


def load(model, path, *, adapter_name: str = "default", force: bool = False, is_trainable: bool = False,
         base_dir=None, base_model_type=None):
    """Load a PEFT adapter dir onto `model`, refusing a base of another type or other weights unless force."""
    from .loading import load_adapter

    return load_adapter(model, path, adapter_name=adapter_name, force=force, is_trainable=is_trainable,
                        base_dir=base_dir, base_model_type=base_model_type)


def resolve(name_or_ref_or_path, *, hub_root=None, base=None, force: bool = False):
    """-> Path: a directory as is, an installed or plugin adapter by name, or a hub reference (hf:ORG/NAME[@REV],
    ms:…, local:…) installed into the store on first use. `base` (a model dir or type) refuses a wrong base before
    anything is installed. A store entry is checked against what was installed (its seal, else a full re-hash)
    before its path is handed out."""
    from .store import resolve as _resolve

    return _resolve(name_or_ref_or_path, hub_root=hub_root, base=base, force=force)
