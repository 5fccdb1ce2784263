"""swiftlike: fine-tune open LLMs through a plugin registry."""
from .registry import hookimpl  # noqa: F401  (the marker plugins use: @swiftlike.hookimpl)

__version__ = "0.1.0"


def __getattr__(name):
    # Heavy APIs are imported on first use so `import swiftlike` (and `swiftlike --help`) stays fast.
    lazy = {
        "get_model_tokenizer": "swiftlike.models",
        "get_template": "swiftlike.templates",
        "inference": "swiftlike.infer",
    }
    import importlib

    if name in lazy:
        return getattr(importlib.import_module(lazy[name]), name)
    if name in ("adapters", "templates", "data", "train", "models", "serve", "hub"):
        return importlib.import_module(f"swiftlike.{name}")
    raise AttributeError(f"module 'swiftlike' has no attribute {name!r}")
