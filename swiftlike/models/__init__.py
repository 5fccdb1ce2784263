"""Model types → local weights → (model, tokenizer). Heavy imports happen inside functions."""
from .resolve import ResolvedModel, resolve_model, swiftlike_home  # noqa: F401


def get_model_tokenizer(model_type=None, torch_dtype=None, model_kwargs=None, load_model=True, **kwargs):
    """ms-swift-shaped API: returns (model, tokenizer); model is None when load_model=False."""
    from .load import load_model_tokenizer

    return load_model_tokenizer(model_type=model_type, torch_dtype=torch_dtype, model_kwargs=model_kwargs,
                                load_model=load_model, **kwargs)
