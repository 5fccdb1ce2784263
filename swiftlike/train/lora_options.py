"""LoRA's own options beyond rank and targets: PEFT's initialisations, LoRA+, trainable biases, modules trained in
full, layer selection. Checked on the arguments first, then against the model's config (no weights loaded), and
turned into LoraConfig keywords."""
from __future__ import annotations

import re

from ..registry import SwiftlikeError

LORA_TUNERS = ("lora", "qlora", "dora")
INITS = ("true", "false", "gaussian", "pissa", "olora", "loftq", "eva", "corda")
# initialisations that rewrite the base weights (PiSSA, OLoRA, CorDA: W_res = W - B0 A0; LoftQ: Q(W), with B0 A0 ~
# W - Q(W)): the saved adapter is converted to a plain LoRA for the original base, B A - B0 A0
MUTATING = ("pissa", "olora", "corda", "loftq")
DATA_DRIVEN = ("eva", "corda")
BIASES = ("none", "all", "lora_only")


def init_kind(value: str) -> str:
    """pissa_niter_16 -> pissa; the others are their own kind."""
    return "pissa" if re.fullmatch(r"pissa_niter_\d+", value) else value


def mutates_base(args) -> bool:
    return init_kind(args.init_lora_weights) in MUTATING


def check_lora_options(args, *, on_cpu: bool | None = None) -> None:
    """The arguments alone (nothing loaded): one SwiftlikeError naming the option and what to do."""
    a = args
    a.init_lora_weights = str(a.init_lora_weights).strip().lower()
    kind = init_kind(a.init_lora_weights)
    if kind not in INITS:
        raise SwiftlikeError(f"--init_lora_weights {a.init_lora_weights!r}: use one of {', '.join(INITS[:5])}, "
                             f"pissa_niter_N, {', '.join(INITS[5:])}")
    if a.lora_bias not in BIASES:
        raise SwiftlikeError(f"--lora_bias {a.lora_bias!r}: use none, all or lora_only")
    a.layers_to_transform = _ints(a.layers_to_transform)
    a.modules_to_save = [m.strip() for v in a.modules_to_save for m in str(v).split(",") if m.strip()]
    lora = a.train_type in LORA_TUNERS
    given = [name for name, on in (("--init_lora_weights", a.init_lora_weights != "true"),
                                   ("--loraplus_lr_ratio", a.loraplus_lr_ratio is not None),
                                   ("--lora_bias", a.lora_bias != "none"), ("--modules_to_save", a.modules_to_save),
                                   ("--layers_to_transform", a.layers_to_transform),
                                   ("--loftq_bits", a.loftq_bits is not None)) if on]
    if given and not lora:
        raise SwiftlikeError(f"{', '.join(given)}: LoRA options; --train_type {a.train_type} trains no LoRA "
                             f"(use lora, qlora or dora)")
    if a.loraplus_lr_ratio is not None and not a.loraplus_lr_ratio > 0:
        raise SwiftlikeError(f"--loraplus_lr_ratio {a.loraplus_lr_ratio}: lora_B's learning rate is this multiple "
                             f"of --learning_rate; give a positive number (LoRA+ suggests 4 to 16)")
    if any(i < 0 for i in a.layers_to_transform):
        raise SwiftlikeError(f"--layers_to_transform {a.layers_to_transform}: layer indices start at 0")
    if a.loftq_bits is not None and kind != "loftq":
        raise SwiftlikeError(f"--loftq_bits {a.loftq_bits}: applies to --init_lora_weights loftq only")
    if kind == "loftq":
        if a.loftq_bits is None:
            raise SwiftlikeError("--init_lora_weights loftq needs --loftq_bits 4 or 8 (the quantisation the "
                                 "adapter compensates for)")
        if a.loftq_bits not in (4, 8):
            raise SwiftlikeError(f"--loftq_bits {a.loftq_bits}: PEFT's LoftQ quantises to 4 (nf4) or 8 bits")
        if a.loftq_iter < 1:
            raise SwiftlikeError(f"--loftq_iter {a.loftq_iter}: at least 1")
    if a.adapters and a.init_lora_weights != "true":
        raise SwiftlikeError(f"--init_lora_weights {a.init_lora_weights} initialises a new adapter; --adapters "
                             f"continues one that is already trained (drop one of them)")
    if kind in ("pissa", "olora", "corda", "eva", "loftq"):
        if a.train_type != "lora" or a.use_dora or a.quant_bits:
            raise SwiftlikeError(f"--init_lora_weights {a.init_lora_weights}: supported with plain LoRA on a "
                                 f"full-precision base (--train_type lora, no --use_dora, no --quant_bits); "
                                 f"got --train_type {a.train_type}"
                                 + (" --use_dora" if a.use_dora else "")
                                 + (f" --quant_bits {a.quant_bits}" if a.quant_bits else ""))
    if kind in MUTATING and a.resume_from_checkpoint:
        raise SwiftlikeError(f"--resume_from_checkpoint with --init_lora_weights {a.init_lora_weights}: its "
                             f"checkpoints hold the adapter converted for the original base, not the training "
                             f"state; continue training from one with --adapters CHECKPOINT instead")
    if kind == "loftq" and on_cpu:
        raise SwiftlikeError("--init_lora_weights loftq: PEFT's LoftQ quantises on a CUDA (or XPU) device and none "
                             "is in use here; train on a GPU, or use another initialisation")


def _ints(values) -> list[int]:
    out = []
    for v in values or []:
        for part in str(v).replace(",", " ").split():
            try:
                out.append(int(part))
            except ValueError:
                raise SwiftlikeError(f"--layers_to_transform {part!r}: give layer indices (integers), e.g. "
                                     f"--layers_to_transform 0 1 2") from None
    return out


def check_against_model(args, model_dir, *, targets, trust_remote_code=False) -> None:
    """--layers_to_transform, --modules_to_save and --lora_bias against the model's config and module names, from
    an empty (meta-device) model built from config.json: no weights load. `targets`: the normalised targets."""
    a = args
    if a.train_type not in LORA_TUNERS or not (a.layers_to_transform or a.modules_to_save or a.lora_bias != "none"):
        return
    if a.layers_to_transform and isinstance(targets, str) and targets != "all-linear":
        raise SwiftlikeError(f"--layers_to_transform with the regex --target_modules {targets!r}: PEFT picks layers "
                             f"by index only with module names; put the layers in the regex or name the modules")
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text_config, "num_hidden_layers", None)
    bad = [i for i in a.layers_to_transform if n is not None and i >= n]
    if bad:
        raise SwiftlikeError(f"--layers_to_transform {' '.join(map(str, bad))}: the model has {n} layers "
                             f"(0..{n - 1})")
    if not (a.modules_to_save or a.lora_bias != "none"):
        return
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    names = [name for name, _ in model.named_modules() if name]
    missing = [m for m in a.modules_to_save if not any(n == m or n.endswith("." + m) for n in names)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in names if not n.rsplit(".", 1)[-1].isdigit()})
        raise SwiftlikeError(f"--modules_to_save {' '.join(missing)}: no such module in {model_dir}; its modules "
                             f"are named {', '.join(leaves)}")
    if a.lora_bias != "none" and not any(p.endswith("bias") for p, _ in model.named_parameters()):
        raise SwiftlikeError(f"--lora_bias {a.lora_bias}: {model_dir} has no bias parameters; drop --lora_bias")


def lora_config_kwargs(args, model) -> dict:
    """The LoraConfig keywords of these options (the defaults add nothing)."""
    a = args
    out = {}
    init = a.init_lora_weights
    if init != "true":
        out["init_lora_weights"] = False if init == "false" else init
    if init_kind(init) == "loftq":
        from peft import LoftQConfig

        out["loftq_config"] = LoftQConfig(loftq_bits=a.loftq_bits, loftq_iter=a.loftq_iter)
    if init == "eva":
        from peft import EvaConfig

        out["eva_config"] = EvaConfig()
    if init == "corda":
        from peft.tuners.lora.config import CordaConfig

        out["corda_config"] = CordaConfig()
    if a.lora_bias != "none":
        out["bias"] = a.lora_bias
    if a.modules_to_save:
        out["modules_to_save"] = list(a.modules_to_save)
    if a.layers_to_transform:
        out["layers_to_transform"] = list(a.layers_to_transform)
    if model is not None and (a.layers_to_transform or init == "corda") and a.target_modules == "all-linear":
        # PEFT takes layers_to_transform, and CorDA finds its layers, only by module names: all-linear spelled out
        # as PEFT expands it
        out["target_modules"] = linear_module_names(model)
    return out


def linear_module_names(model) -> list[str]:
    """The leaf names of the Linear layers PEFT's all-linear targets (every Linear but the output head)."""
    import torch

    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and m is not head})


def loraplus_optimizer(trainer, args):
    """LoRA+: the trainer's optimizer (the HF Trainer's --optim and its settings) with PEFT's parameter groups,
    lora_B at --loraplus_lr_ratio times the learning rate."""
    from peft.optimizers import create_loraplus_optimizer

    cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    kwargs = dict(kwargs)
    lr = kwargs.pop("lr", trainer.args.learning_rate)
    return create_loraplus_optimizer(trainer.model, cls, lr=lr, loraplus_lr_ratio=args.loraplus_lr_ratio,
                                     loraplus_lr_embedding=args.loraplus_lr_embedding,
                                     loraplus_weight_decay=trainer.args.weight_decay, **kwargs)
