"""GaLore through the HF Trainer: TrainingArguments(optim=galore_*, optim_target_modules=..., optim_args=...)."""
from __future__ import annotations

import importlib.util

from swiftlike.registry import SwiftlikeError

OPTIMIZERS = ("galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
              "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise")
PROJECTION = ("rank", "update_proj_gap", "scale", "proj_type")  # transformers' optim_args keys for GaLore
# all-linear: the attention and MLP projections of each block (transformers matches these against module names)
ALL_LINEAR = [r".*\.(self_attn|attn|attention|self_attention)\..*", r".*\.(mlp|feed_forward|ffn)\..*"]


def _options(args) -> dict:
    options = args.tuner_options()
    bad = sorted(set(options) - {"optim", *PROJECTION})
    if bad:
        raise SwiftlikeError(f"--tuner_args: {bad[0]!r} is not an option of galore; its options: optim, "
                             f"{', '.join(PROJECTION)}")
    optim = options.get("optim", "galore_adamw")
    if optim not in OPTIMIZERS:
        raise SwiftlikeError(f"--tuner_args optim {optim!r}: one of {', '.join(OPTIMIZERS)}")
    return options


def check(args) -> None:
    """Before anything loads: the options, and the galore-torch package transformers' GaLore optimizers need."""
    _options(args)
    if importlib.util.find_spec("galore_torch") is None:
        raise SwiftlikeError("--train_type galore needs the galore-torch package: pip install galore-torch "
                             "(or swiftlike plugin install galore, which pins it)")



def trainer_options(args) -> dict:
    from swiftlike.train.tuners import normalize_targets

    options = _options(args)
    targets = normalize_targets(args.target_modules, None)  # ALL / all-linear / names / one regex
    if targets == "all-linear":
        targets = ALL_LINEAR
    projection = {"rank": args.lora_rank * 16, **{k: options[k] for k in PROJECTION if k in options}}
    return {"optim": options.get("optim", "galore_adamw"),
            "optim_target_modules": targets if isinstance(targets, list) else [targets],
            "optim_args": ",".join(f"{k}={v}" for k, v in projection.items())}
