"""BAdam through the HF Trainer: the Trainer builds, through an optimizer factory, an AdamW that BAdam's
BlockOptimizer restricts to the active block (it switches requires_grad as it goes)."""
from __future__ import annotations

import importlib.util

from swiftlike.registry import SwiftlikeError

DEFAULTS = {"switch_block_every": 50, "switch_mode": "ascending", "start_block": None, "include_embedding": False,
            "include_lm_head": False}
MODES = ("ascending", "descending", "random", "fixed")


def _options(args) -> dict:
    options = args.tuner_options()
    bad = sorted(set(options) - set(DEFAULTS))
    if bad:
        raise SwiftlikeError(f"--tuner_args: {bad[0]!r} is not an option of badam; its options: "
                             f"{', '.join(DEFAULTS)}")
    options = {**DEFAULTS, **options}
    if options["switch_mode"] not in MODES:
        raise SwiftlikeError(f"--tuner_args switch_mode {options['switch_mode']!r}: one of {', '.join(MODES)}")
    every = options["switch_block_every"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise SwiftlikeError(f"--tuner_args switch_block_every {every!r}: a positive integer")
    return options


def check(args) -> None:
    """Before anything loads: the options, and the badam package."""
    _options(args)
    if importlib.util.find_spec("badam") is None:
        raise SwiftlikeError("--train_type badam needs the badam package: pip install badam "
                             "(or swiftlike plugin install badam, which pins it)")



class BlockAdamWFactory:
    """transformers' optimizer-factory protocol: `BlockAdamWFactory()(model, **kwargs) -> optimizer`. Weight decay
    as the Trainer groups it: on matrices, not on biases and norms (1-D)."""

    def __call__(self, model, *, lr, weight_decay, options):
        import torch
        from badam import BlockOptimizer

        named = list(model.named_parameters())
        groups = [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}]
        return BlockOptimizer(base_optimizer=torch.optim.AdamW(groups, lr=lr), named_parameters_list=named,
                              verbose=0, **options)


def optimizer(model, args):
    """(factory, kwargs) for the Trainer's optimizer_cls_and_kwargs."""
    return BlockAdamWFactory, {"lr": args.learning_rate, "weight_decay": args.weight_decay,
                               "options": _options(args)}
