"""swiftlike: fine-tune open LLMs through a plugin registry.

    import swiftlike
    swiftlike.sft(model_type="smollm2-135m-instruct", dataset="self-cognition#200", model_name="Nova")
    loaded = swiftlike.infer.load_checkpoint("output/…/checkpoint-50")
"""
from .registry import hookimpl  # noqa: F401  (the marker plugins use: @swiftlike.hookimpl)

__version__ = "0.1.0"

# Heavy APIs are imported on first use so `import swiftlike` (and `swiftlike --help`) stays fast.
_LAZY = {
    "sft": "swiftlike.stages",
    "pt": "swiftlike.stages",
    "rlhf": "swiftlike.stages",
    "SftArguments": "swiftlike.train.arguments",
    "PtArguments": "swiftlike.train.arguments",
    "RlhfArguments": "swiftlike.train.rlhf.arguments",
    "InferArguments": "swiftlike.infer",
    "load_checkpoint": "swiftlike.infer",
    "merge_lora": "swiftlike.merge",
    "get_model_tokenizer": "swiftlike.models",
    "get_template": "swiftlike.templates",
    "inference": "swiftlike.infer",
}
_MODULES = ("adapters", "checkpoint", "data", "export", "hub", "infer", "merge", "models", "serve", "templates", "train")


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"swiftlike.{name}")
    raise AttributeError(f"module 'swiftlike' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_MODULES))
