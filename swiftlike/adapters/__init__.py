"""Adapters: the manifest, loading onto a base model (and, in the marketplace, store/publish/install)."""


def load(model, path, *, adapter_name: str = "default", force: bool = False, is_trainable: bool = False):
    """Load a PEFT adapter dir onto `model`, refusing a base of another type or other weights unless force."""
    from .loading import load_adapter

    return load_adapter(model, path, adapter_name=adapter_name, force=force, is_trainable=is_trainable)
