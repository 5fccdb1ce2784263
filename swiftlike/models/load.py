"""Load (model, tokenizer) from a resolved model directory."""
from __future__ import annotations

import contextlib
import warnings

from ..registry import SwiftlikeError
from .resolve import ResolvedModel, resolve_model

# PEFT reads a property transformers has deprecated, on every adapter load: a warning about library internals that
# the user can do nothing about.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


@contextlib.contextmanager
def quiet_progress():
    """No per-tensor progress bars from transformers while a local model loads in a few seconds (downloads keep
    huggingface_hub's own bars)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _no_load_report(quiet: bool):
    """A reward model built on a causal LM always has a new score head and an unused LM head; transformers' load
    report (a red MISSING/UNEXPECTED table) says so on every load. Errors still show."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")


def pick_dtype(name: str | None):
    """auto = bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on CPU."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise SwiftlikeError(f"--torch_dtype {name!r}: use auto, float32, bfloat16 or float16")
    return table[name]


def bnb_config(quant_bits: int, quant_type: str = "nf4", double_quant: bool = True, compute_dtype=None):
    import torch
    from transformers import BitsAndBytesConfig

    if quant_bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                  bnb_4bit_use_double_quant=double_quant,
                                  bnb_4bit_compute_dtype=compute_dtype or torch.float32)
    if quant_bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    raise SwiftlikeError(f"--quant_bits {quant_bits}: use 4 or 8")


def load_tokenizer(path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model_tokenizer(model_type=None, model=None, *, model_cache_dir=None, hub=None, revision=None,
                         cache_dir=None, torch_dtype=None, model_kwargs=None, load_model=True, quant_bits=0,
                         quant_type="nf4", double_quant=True, trust_remote_code=False, attn_implementation="sdpa",
                         device_map=None, resolved: ResolvedModel | None = None, tokenizer=None, task="causal_lm"):
    """(model, tokenizer); pass `tokenizer` when it is already loaded (it is returned as is). task: causal_lm, or
    reward (one score per sequence: a sequence-classification head with one output, as reward models have)."""
    resolved = resolved or resolve_model(model_type, model, hub=hub, revision=revision, cache_dir=cache_dir,
                                         model_cache_dir=model_cache_dir)
    if tokenizer is None:
        tokenizer = load_tokenizer(resolved.path, trust_remote_code)
    if not load_model:
        return None, tokenizer
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    dtype = pick_dtype(torch_dtype) if not hasattr(torch_dtype, "is_floating_point") else torch_dtype
    kwargs = dict(dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    if quant_bits:
        kwargs["quantization_config"] = bnb_config(quant_bits, quant_type, double_quant, dtype)
    if device_map:
        kwargs["device_map"] = device_map
    if task == "reward":
        kwargs["num_labels"] = 1
    elif task != "causal_lm":
        raise SwiftlikeError(f"unknown model task {task!r}: causal_lm or reward")
    kwargs.update(model_kwargs or {})
    auto = AutoModelForSequenceClassification if task == "reward" else AutoModelForCausalLM
    try:
        with quiet_progress(), _no_load_report(task == "reward"):
            model_obj = auto.from_pretrained(resolved.path, **kwargs)
    except ValueError as err:
        if "trust_remote_code" in str(err) and not trust_remote_code:
            raise SwiftlikeError(f"{resolved.path} ships its own modelling code; re-run with --trust_remote_code "
                                 f"if you trust it") from None
        raise
    if task == "reward" and model_obj.config.pad_token_id is None:
        model_obj.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    return model_obj, tokenizer
