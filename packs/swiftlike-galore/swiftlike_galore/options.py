"""GaLore through the HF Trainer: the pack builds galore-torch's optimizer itself (an optimizer factory the Trainer
calls with the model) and records it in TrainingArguments (optim=galore_*, optim_target_modules, optim_args).

Not transformers' own galore_* handler: it passes the optimizer only the learning rate, so galore-torch's own
defaults apply — eps 1e-6 instead of the Trainer's adam_epsilon 1e-8, and no weight decay on any parameter. eps 1e-6
damps every per-element Adam step whose gradient is not well above 1e-6: on the benchmark job the first update moved
the projected matrices by 0.19 and the other weights by 0.03 (L2), against 0.27 and 0.11 with eps 1e-8, and the run
ended 4 % above LLaMA-Factory's held-out loss (BENCHMARKS.md, GaLore).
Here the Trainer's AdamW settings: betas (0.9, 0.999), eps 1e-8, weight decay on the projected matrices and on the
other weights, none on biases and norms (LLaMA-Factory builds its GaLore with the same betas and eps; it also decays
RMSNorm weights)."""
from __future__ import annotations

import importlib.util

from swiftlike.registry import SwiftlikeError

OPTIMIZERS = ("galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
              "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise")
PROJECTION = ("rank", "update_proj_gap", "scale", "proj_type")
# transformers' defaults for the projection (its galore_* handler), kept so that an option left out means the same
DEFAULTS = {"rank": 128, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}
# the HF Trainer's AdamW settings (TrainingArguments adam_beta1/adam_beta2/adam_epsilon defaults)
ADAM = {"betas": (0.9, 0.999), "eps": 1e-8}
# all-linear: the attention and MLP projections of each block (module names are full-matched against these)
ALL_LINEAR = [r".*\.(self_attn|attn|attention|self_attention)\..*", r".*\.(mlp|feed_forward|ffn)\..*"]
# the HF Trainer's rule for parameters without weight decay (Trainer.get_decay_parameter_names)
NO_DECAY = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


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
    """Before anything loads: the options, and the galore-torch package the optimizers come from."""
    options = _options(args)
    if options.get("optim", "galore_adamw").endswith("_layerwise") and args.gradient_accumulation_steps != 1:
        raise SwiftlikeError(f"--tuner_args optim {options['optim']!r} steps each parameter as its gradient "
                             "arrives: it needs --gradient_accumulation_steps 1")
    if importlib.util.find_spec("galore_torch") is None:
        raise SwiftlikeError("--train_type galore needs the galore-torch package: pip install galore-torch "
                             "(or swiftlike plugin install galore, which pins it)")


def _targets(args):
    from swiftlike.train.tuners import normalize_targets

    targets = normalize_targets(args.target_modules, None)  # ALL / all-linear / names / one regex
    return ALL_LINEAR if targets == "all-linear" else targets if isinstance(targets, list) else [targets]


def _projection(args) -> dict:
    options = _options(args)
    return {"rank": args.lora_rank * 16, **{k: options[k] for k in PROJECTION if k in options}}


def trainer_options(args) -> dict:
    """What TrainingArguments record of the optimizer (the factory below builds it)."""
    return {"optim": _options(args).get("optim", "galore_adamw"), "optim_target_modules": _targets(args),
            "optim_args": ",".join(f"{k}={v}" for k, v in _projection(args).items())}


def param_groups(model, targets, projection: dict, weight_decay: float) -> list:
    """The optimizer's groups: every trainable parameter once. The weights of the targeted nn.Linear modules are
    projected (transformers' matching of module names: exact, substring or full-match regex) and decayed; the
    others are decayed unless they are biases or norms."""
    import torch
    from transformers.trainer_pt_utils import get_parameter_names
    from transformers.trainer_utils import check_target_module_exists

    projected = {id(m.weight) for name, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and check_target_module_exists(targets, name)
                 and m.weight.requires_grad and m.weight.ndim == 2}
    if not projected:
        raise SwiftlikeError(f"--train_type galore: no nn.Linear module of the model matches the targets {targets}; "
                             "set --target_modules")
    decay = set(get_parameter_names(model, [torch.nn.LayerNorm], NO_DECAY))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if id(p) not in projected and n not in decay], "weight_decay": 0.0},
            {"params": [p for n, p in named if id(p) not in projected and n in decay], "weight_decay": weight_decay},
            {"params": [p for _, p in named if id(p) in projected], "weight_decay": weight_decay,
             **_typed({**DEFAULTS, **projection})}]


def _typed(projection: dict) -> dict:
    """The projection options as galore-torch reads them (as transformers casts its optim_args)."""
    return {"rank": int(projection["rank"]), "update_proj_gap": int(projection["update_proj_gap"]),
            "scale": float(projection["scale"]), "proj_type": str(projection["proj_type"])}


def _optimizer_class(optim: str):
    import galore_torch

    base = optim.removesuffix("_layerwise")
    if base == "galore_adafactor":  # a fixed learning rate, as the Trainer sets Adafactor up
        return galore_torch.GaLoreAdafactor, {"scale_parameter": False, "relative_step": False}
    if base == "galore_adamw_8bit":
        return galore_torch.GaLoreAdamW8bit, dict(ADAM)
    return galore_torch.GaLoreAdamW, {**ADAM, "no_deprecation_warning": True}


class GaLoreFactory:
    """transformers' optimizer-factory protocol: `GaLoreFactory()(model, **kwargs) -> optimizer`. The *_layerwise
    optimizers step each parameter in its gradient hook (one optimizer per parameter) behind transformers'
    LayerWiseDummyOptimizer, at the learning rate the Trainer's scheduler gives it."""

    def __call__(self, model, *, optim, lr, weight_decay, targets, projection):
        cls, kwargs = _optimizer_class(optim)
        groups = param_groups(model, targets, projection, weight_decay)
        if not optim.endswith("_layerwise"):
            return cls([g for g in groups if g["params"]], lr=lr, **kwargs)
        from transformers.trainer_pt_utils import LayerWiseDummyOptimizer

        per_param = {p: cls([{**g, "params": [p]}], lr=lr, **kwargs) for g in groups for p in g["params"]}
        dummy = LayerWiseDummyOptimizer(optimizer_dict=per_param, lr=lr)

        def step(param):
            if param.grad is not None:
                # transformers 5 builds the scheduler after accelerate has wrapped the optimizer, so it schedules
                # the dummy's learning rate instead of making one scheduler per parameter; follow it (a scheduler
                # that was built on the dummy has set its initial_lr)
                if "initial_lr" in dummy.param_groups[0]:
                    per_param[param].param_groups[0]["lr"] = dummy.param_groups[0]["lr"]
                per_param[param].step()
                per_param[param].zero_grad()

        for param in per_param:
            param.register_post_accumulate_grad_hook(step)
        return dummy


def optimizer(model, args):
    """(factory, kwargs) for the Trainer's optimizer_cls_and_kwargs."""
    return GaLoreFactory, {"optim": _options(args).get("optim", "galore_adamw"), "lr": args.learning_rate,
                           "weight_decay": args.weight_decay, "targets": _targets(args),
                           "projection": _projection(args)}
