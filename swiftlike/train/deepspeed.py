"""`--deepspeed`: a config file, or one of ms-swift's built-in names (zero2, zero3, their offload variants).

The config goes to the HF Trainer as is; "auto" values are filled in by transformers from the training arguments.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..registry import SwiftlikeError

_COMMON = {
    "fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
}
_OFFLOAD = {"device": "cpu", "pin_memory": True}


def _zero(stage: int, offload: bool) -> dict:
    zero = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True}
    if stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True, stage3_prefetch_bucket_size="auto",
                    stage3_param_persistence_threshold="auto", reduce_bucket_size="auto")
    if offload:
        zero["offload_optimizer"] = dict(_OFFLOAD)
        if stage == 3:
            zero["offload_param"] = dict(_OFFLOAD)
    return {**_COMMON, "zero_optimization": zero}


BUILTIN = {
    "zero0": lambda: {**_COMMON, "zero_optimization": {"stage": 0}},
    "zero1": lambda: {**_COMMON, "zero_optimization": {"stage": 1}},
    "zero2": lambda: _zero(2, False),
    "zero3": lambda: _zero(3, False),
    "zero2_offload": lambda: _zero(2, True),
    "zero3_offload": lambda: _zero(3, True),
}


def resolve_deepspeed(value: str | None):
    """deepspeed_config(value), after checking that deepspeed is installed when a config is asked for."""
    config = deepspeed_config(value)
    if config is not None and importlib.util.find_spec("deepspeed") is None:
        raise SwiftlikeError("--deepspeed needs the deepspeed package, which is not installed: pip install deepspeed "
                             "(or drop --deepspeed; multi-GPU DDP needs no extra package)")
    return config


def deepspeed_config(value: str | None):
    """None, a dict for a built-in name (`zero2`, `default-zero3`, ...), or the path of a JSON config file."""
    if not value:
        return None
    name = value.removeprefix("default-").replace("-", "_")
    if name in BUILTIN:
        config = BUILTIN[name]()
    else:
        path = Path(value)
        if not path.is_file():
            raise SwiftlikeError(f"--deepspeed {value}: no such file and not a built-in config "
                                 f"({', '.join(BUILTIN)})")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SwiftlikeError(f"--deepspeed {value}: line {err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(config, dict):
            raise SwiftlikeError(f"--deepspeed {value}: expected a JSON object with a zero_optimization section")
        config = str(path)
    return config
