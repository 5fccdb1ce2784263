"""Built-in tuners: each `prepare(model, args) -> model` makes the right parameters trainable."""
from __future__ import annotations

import re

from ..registry import SwiftlikeError


def normalize_targets(targets, catalog_targets):
    """ms-swift spellings: ALL = all-linear, DEFAULT = the catalog's list; one string with regex characters is a
    regex (PEFT full-matches it against module names)."""
    targets = list(targets or ["all-linear"])
    if len(targets) == 1:
        t = targets[0]
        if t.upper() in ("ALL", "ALL-LINEAR", "ALL_LINEAR"):
            return "all-linear"
        if t.upper() == "DEFAULT":
            return catalog_targets if catalog_targets else "all-linear"
        if re.search(r"[\\.*+?()|\[\]^$]", t):
            return t
    out = []
    for t in targets:
        if t.upper() == "DEFAULT":
            out.extend(catalog_targets if isinstance(catalog_targets, list) else [])
        else:
            out.append(t)
    return out


def lora_config(args, model=None, task_type="CAUSAL_LM", **extra):
    """The LoraConfig of these arguments (rank, targets, variants and the options of lora_options); `extra`: more
    LoraConfig fields, which win."""
    from peft import LoraConfig

    from .lora_options import lora_config_kwargs

    kwargs = dict(task_type=task_type, r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                  target_modules=args.target_modules, use_dora=bool(args.use_dora), use_rslora=bool(args.use_rslora))
    kwargs.update(lora_config_kwargs(args, model))
    kwargs.update(extra)
    return LoraConfig(**kwargs)


def prepare_lora(model, args, task_type="CAUSAL_LM", calibration=None):
    """LoRA on `model`; task_type SEQ_CLS (reward models) also trains and saves the score head. `calibration`:
    training batches, which --init_lora_weights eva and corda compute on."""
    from peft import get_peft_model

    from .lora_options import DATA_DRIVEN

    if args.gradient_checkpointing:
        model.enable_input_require_grads()
    try:
        config = lora_config(args, model, task_type=task_type)
        if config.init_lora_weights in DATA_DRIVEN:
            from .lora_init import data_driven_lora

            if not calibration:
                raise SwiftlikeError(f"--init_lora_weights {config.init_lora_weights} computes on training batches; "
                                     f"this stage passed none")
            return data_driven_lora(model, config, calibration)
        return get_peft_model(model, config)
    except ValueError as err:
        if "Target modules" in str(err):
            raise SwiftlikeError(f"--target_modules {args.target_modules}: {err}") from None
        raise


def prepare_dora(model, args):
    args.use_dora = True
    return prepare_lora(model, args)


def prepare_qlora(model, args):
    from peft import prepare_model_for_kbit_training

    if not getattr(model, "is_loaded_in_4bit", False) and not getattr(model, "is_loaded_in_8bit", False):
        raise SwiftlikeError("qlora needs a 4/8-bit base: pass --quant_bits 4 (or 8)")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.gradient_checkpointing))
    return prepare_lora(model, args)


def prepare_full(model, args):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _layers(model):
    for name, module in model.named_modules():
        if name.endswith("layers") and hasattr(module, "__len__") and len(module) > 0:
            return name, module
    raise SwiftlikeError("freeze: cannot find the model's decoder layers (no `*.layers` ModuleList)")


def prepare_freeze(model, args):
    """Train the last N decoder layers (plus final norm and lm_head); freeze the rest."""
    name, layers = _layers(model)
    n = len(layers)
    if args.trainable_layers is not None:
        train_n = int(args.trainable_layers)
    elif args.freeze_ratio is not None:
        train_n = n - int(round(n * float(args.freeze_ratio)))
    else:
        train_n = max(1, n // 4)
    if not 0 < train_n <= n:
        raise SwiftlikeError(f"freeze: {train_n} trainable layers of {n}; use --trainable_layers 1..{n}")
    first = n - train_n
    trainable_prefixes = [f"{name}.{i}." for i in range(first, n)]
    for pname, p in model.named_parameters():
        if pname.startswith(name + "."):
            p.requires_grad_(any(pname.startswith(pre) for pre in trainable_prefixes))
        else:  # final norm and an untied lm_head train; embeddings (often tied to lm_head) stay frozen
            p.requires_grad_("embed" not in pname)
    return model


def continue_lora(model, path, args, *, task_type=None):
    """The LoRA adapter at `path` loaded onto `model` for further training (sft -> dpo on the same adapter); its own
    config (rank, targets) wins over --lora_rank etc. `task_type` re-targets it onto another head (sft -> rm: a
    causal-LM adapter continued under a score head, which PEFT then trains and saves with it)."""
    from peft import PeftConfig, PeftModel, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(args.gradient_checkpointing))
    elif args.gradient_checkpointing:
        model.enable_input_require_grads()
    config = PeftConfig.from_pretrained(str(path))
    if task_type is None or config.task_type == task_type:
        return PeftModel.from_pretrained(model, str(path), is_trainable=True)
    from peft import get_peft_model, set_peft_model_state_dict
    from peft.utils import ModulesToSaveWrapper, load_peft_weights

    config.task_type, config.inference_mode = task_type, False
    model = get_peft_model(model, config)
    weights = load_peft_weights(str(path), device="cpu")
    # the new head's modules (score) are not in the old adapter: they keep their fresh initialisation
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            for key, value in module.original_module.state_dict().items():
                weights.setdefault(f"{name}.{key}", value)
    set_peft_model_state_dict(model, weights)
    return model
