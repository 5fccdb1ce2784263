"""The PEFT configs behind each tuner, built from swiftlike's common flags (--lora_rank, --lora_alpha,
--lora_dropout, --target_modules) and the method's own options (--tuner_args JSON: any field of its PEFT config).
peft and transformers load only when a run starts."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from swiftlike.registry import SwiftlikeError


@dataclass(frozen=True)
class Method:
    config: str  # the peft config class
    summary: str
    mergeable: bool = True
    targets_modules: bool = True  # False: prompt methods train virtual tokens, not modules


METHODS = {
    "adalora": Method("AdaLoraConfig", "AdaLoRA: LoRA whose rank budget is reallocated by importance (PEFT)"),
    "ia3": Method("IA3Config", "IA3: learned rescaling vectors on attention and feed-forward activations (PEFT)"),
    "vera": Method("VeraConfig", "VeRA: shared frozen random projections, per-layer scaling vectors (PEFT)"),
    "loha": Method("LoHaConfig", "LoHa: low-rank Hadamard-product updates (PEFT)"),
    "lokr": Method("LoKrConfig", "LoKr: low-rank Kronecker-product updates (PEFT)"),
    "boft": Method("BOFTConfig", "BOFT: butterfly orthogonal fine-tuning (PEFT)"),
    "oft": Method("OFTConfig", "OFT: block-diagonal orthogonal fine-tuning (PEFT)"),
    "prompt_tuning": Method("PromptTuningConfig", "prompt tuning: trained virtual-token embeddings (PEFT; no merge)",
                            mergeable=False, targets_modules=False),
    "prefix_tuning": Method("PrefixTuningConfig", "prefix tuning: trained key/value prefixes in every layer "
                            "(PEFT; no merge)", mergeable=False, targets_modules=False),
    "p_tuning": Method("PromptEncoderConfig", "P-tuning: virtual tokens from a small prompt encoder (PEFT; no merge)",
                       mergeable=False, targets_modules=False),
}
ADALORA_UNKNOWN_STEPS = 1_000_000  # AdaLoRA's total_step before the trainer knows it (set at train begin)
_FEEDFORWARD_OUT = ("down_proj", "fc2", "w2", "dense_4h_to_h", "c_proj")  # IA3 scales these modules' inputs


def _config_class(name: str):
    import peft

    return getattr(peft, METHODS[name].config)


def _own_options(name: str, args) -> dict:
    """--tuner_args, checked against the PEFT config's fields."""
    options = args.tuner_options()
    fields = {f.name for f in dataclasses.fields(_config_class(name))} - {"peft_type", "task_type", "inference_mode",
                                                                        "base_model_name_or_path", "revision"}
    bad = sorted(set(options) - fields)
    if bad:
        raise SwiftlikeError(f"--tuner_args: {bad[0]!r} is not an option of {name} (peft.{METHODS[name].config}); "
                             f"its options: {', '.join(sorted(fields))}")
    return options


def check(args) -> None:
    """Before anything loads: the options are the method's, and prompt methods get padded batches (PEFT drops
    position_ids when it prepends virtual tokens, so sequences sharing a padding-free row would see each other)."""
    name = args.train_type
    _own_options(name, args)
    if METHODS[name].targets_modules:
        return
    targets = [t for t in args.target_modules or [] if str(t).lower() not in ("all-linear", "all")]
    if targets:
        raise SwiftlikeError(f"--train_type {name} trains virtual tokens, not modules: drop --target_modules "
                             f"{' '.join(map(str, targets))}")
    if args.packing:
        raise SwiftlikeError(f"--train_type {name} cannot train packed samples (PEFT drops position_ids when it adds "
                             f"virtual tokens): drop --packing")
    args.padding_free = False


def _common(args) -> dict:
    return {"target_modules": args.target_modules}


def _defaults(name: str, args) -> dict:
    """The method's config from the common flags; --tuner_args override any of it."""
    if name == "adalora":
        total = args.max_steps if args.max_steps and args.max_steps > 0 else ADALORA_UNKNOWN_STEPS
        return {**_common(args), "init_r": max(args.lora_rank * 3 // 2, args.lora_rank + 1), "target_r": args.lora_rank,
                "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout, "total_step": total}
    if name == "ia3":
        targets = args.target_modules
        if targets == "all-linear":  # PEFT's IA3 targets for the model type (attention k/v and the MLP output)
            return {"target_modules": None, "feedforward_modules": None}
        feedforward = [t for t in targets if t in _FEEDFORWARD_OUT] if isinstance(targets, list) else []
        return {"target_modules": targets, "feedforward_modules": feedforward}
    if name == "vera":
        return {**_common(args), "vera_dropout": args.lora_dropout}
    if name in ("loha", "lokr"):
        return {**_common(args), "r": args.lora_rank, "alpha": args.lora_alpha}
    if name == "boft":
        return {**_common(args), "boft_dropout": args.lora_dropout}
    if name == "oft":
        return {**_common(args)}
    return {"num_virtual_tokens": 20}  # prompt methods


def _ia3_fallback(model, options: dict) -> dict:
    """A model type PEFT has no IA3 mapping for: every linear layer, none as feed-forward."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as MAPPING

    if options.get("target_modules") is None and getattr(model.config, "model_type", None) not in MAPPING:
        return {**options, "target_modules": "all-linear", "feedforward_modules": []}
    return options


def prepare(name: str, model, args):
    """`model` with method `name`'s adapter on it (PEFT's get_peft_model)."""
    from peft import get_peft_model

    options = {**_defaults(name, args), **_own_options(name, args)}
    if name == "ia3":
        options = _ia3_fallback(model, options)
    try:
        config = _config_class(name)(task_type="CAUSAL_LM", **options)
    except (TypeError, ValueError) as err:
        raise SwiftlikeError(f"--train_type {name}: {err}") from None
    if args.gradient_checkpointing and METHODS[name].targets_modules:
        model.enable_input_require_grads()
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # e.g. a BOFT/OFT block size that does not divide a layer's width
        raise SwiftlikeError(f"--train_type {name}: {err}".splitlines()[0]) from None


for _name in METHODS:
    globals()[f"prepare_{_name}"] = functools.partial(prepare, _name)


def callbacks(model, args) -> list:
    """AdaLoRA reallocates its rank budget after every optimizer step, over the run's real number of steps."""
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_train_begin(self, targs, state, control, **kw):
            cfg = model.peft_config[model.active_adapter]
            if cfg.total_step == ADALORA_UNKNOWN_STEPS or cfg.total_step > state.max_steps:
                cfg.total_step = state.max_steps
            if cfg.tinit >= cfg.total_step - cfg.tfinal:
                raise SwiftlikeError(f"adalora: tinit {cfg.tinit} + tfinal {cfg.tfinal} leave no steps of "
                                     f"{cfg.total_step} to reallocate ranks in; lower them in --tuner_args")

        def on_optimizer_step(self, targs, state, control, **kw):
            model.base_model.update_and_allocate(state.global_step)

    return [AdaLoraBudget()]
