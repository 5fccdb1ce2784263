"""A LLaMA-Factory training YAML (`llamafactory-cli train cfg.yaml`) in swiftlike's option names.

Every key is translated, named in a warning as one swiftlike decides itself, or refused: keys this module does not
know are one error listing them all, never silently dropped.
"""
from __future__ import annotations

from pathlib import Path

from ..registry import SwiftlikeError

# LLaMA-Factory key -> swiftlike option, where only the name differs
RENAMED = {
    "model_name_or_path": "model", "cutoff_len": "max_length", "val_size": "split_dataset_ratio",
    "eval_dataset": "val_dataset", "default_system": "system", "quantization_bit": "quant_bits",
    "quantization_type": "bnb_4bit_quant_type", "double_quantization": "bnb_4bit_use_double_quant",
    "preprocessing_num_workers": "dataset_num_proc", "neat_packing": "packing",
    # preference stages
    "pref_beta": "beta", "pref_ftx": "rpo_alpha", "dpo_label_smoothing": "label_smoothing",
    "kto_chosen_weight": "desirable_weight", "kto_rejected_weight": "undesirable_weight",
    "additional_target": "modules_to_save", "max_new_tokens": "max_completion_length",
}
SAME = {
    "template", "simpo_gamma", "reward_model", "ref_model", "lora_rank", "lora_alpha", "lora_dropout", "use_dora", "use_rslora", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate", "num_train_epochs", "max_steps",
    "lr_scheduler_type", "warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm", "optim", "output_dir",
    "logging_steps", "save_steps", "save_total_limit", "save_strategy", "eval_strategy", "eval_steps", "seed",
    "report_to", "resume_from_checkpoint", "deepspeed", "fsdp", "fsdp_config", "neftune_noise_alpha", "loraplus_lr_ratio",
    "loraplus_lr_embedding", "packing", "trust_remote_code",
    "cache_dir", "model_revision", "bf16", "fp16", "dataloader_num_workers", "logging_dir", "max_samples",
}
# decided by swiftlike itself (progress, caching, logging, housekeeping); nothing here changes what is trained
IGNORED = {
    "do_train", "overwrite_cache", "overwrite_output_dir", "plot_loss", "ddp_timeout", "run_name",
    "logging_first_step", "save_only_model", "ddp_find_unused_parameters", "dataloader_pin_memory",
    "print_param_status", "include_num_input_tokens_seen",
    # swiftlike always saves a PiSSA adapter converted for the original base (what LLaMA-Factory's true does)
    "pissa_convert", "disable_tqdm", "use_fast_tokenizer",
    "low_cpu_mem_usage", "trust_remote_code_for_tokenizer", "log_level", "dataloader_persistent_workers",
}
FINETUNING_TYPES = {"lora": "lora", "full": "full", "freeze": "freeze"}
ATTENTION = {"auto": "auto", "sdpa": "sdpa", "fa2": "flash_attention_2", "disabled": "eager", "eager": "eager"}
# LLaMA-Factory template names whose text is one of swiftlike's under another name
TEMPLATES = {"qwen": "qwen2_5", "llama2": "llama", "intern2": "internlm2", "phi": "phi3"}
MARKERS = {"finetuning_type", "model_name_or_path", "cutoff_len", "lora_target", "dataset_dir", "do_train"}


def is_llamafactory(data: dict) -> bool:
    """LLaMA-Factory's keys (swiftlike's own files, such as a run's args.json, never carry these)."""
    return bool(MARKERS & set(data)) and "train_type" not in data


# LLaMA-Factory stage -> the swiftlike command that trains it
COMMAND_FOR_STAGE = {"sft": "sft", "pt": "pt", "dpo": "rlhf", "kto": "rlhf", "rm": "rlhf", "ppo": "rlhf"}


def translate(data: dict, *, source: str, stages=("sft",)) -> tuple[dict, list[str]]:
    """(swiftlike option mapping, ignored keys); `stages`: what the calling command trains."""
    data = dict(data)
    got = data.pop("stage", "sft")
    out, ignored, unknown = {}, [], []
    if got in ("dpo", "kto", "rm", "ppo") and "dpo" in stages:
        loss = data.pop("pref_loss", "sigmoid")
        out["rlhf_type"] = {"orpo": "orpo", "simpo": "simpo"}.get(loss, got) if got == "dpo" else got
        if got == "dpo" and loss not in ("orpo", "simpo", "sigmoid"):
            out["loss_type"] = [loss]
    elif got not in stages:
        command = COMMAND_FOR_STAGE.get(got)
        raise SwiftlikeError(f"{source}: stage {got!r}; "
                             + (f"train it with `swiftlike {command}`" if command else "swiftlike has no such stage"))
    pissa_iter = data.pop("pissa_iter", 16)
    if data.pop("pissa_init", False):
        # LLaMA-Factory: pissa_iter FSVD iterations, -1 for the exact SVD
        out["init_lora_weights"] = "pissa" if int(pissa_iter) == -1 else f"pissa_niter_{int(pissa_iter)}"
    dataset_dir = data.pop("dataset_dir", None)
    # LLaMA-Factory's PPO samples with top_k/top_p too; TRL's PPO trainer samples with the temperature alone
    ignored_sampling = [k for k in ("top_k", "top_p") if got == "ppo" and data.pop(k, None) is not None]
    for key, value in data.items():
        if key in RENAMED:
            out[RENAMED[key]] = value
        elif key in SAME:
            out[key] = value
        elif key in IGNORED:
            ignored.append(key)
        elif key in SPECIAL:
            SPECIAL[key](out, value, source)
        else:
            unknown.append(key)
    if unknown:
        raise SwiftlikeError(f"{source}: LLaMA-Factory option(s) swiftlike does not know: {', '.join(sorted(unknown))}"
                             f"; remove them or use swiftlike's spelling (`swiftlike {COMMAND_FOR_STAGE.get(got, 'sft')} "
                             f"--help`)")
    ignored += ignored_sampling
    out.setdefault("add_output_dir_suffix", False)  # LLaMA-Factory writes into output_dir itself
    # LLaMA-Factory's defaults where swiftlike's (ms-swift's) differ: the same YAML trains the same thing
    out.setdefault("lora_alpha", 2 * int(out.get("lora_rank", 8)))
    out.setdefault("lora_dropout", 0.0)
    out.setdefault("weight_decay", 0.0)
    if out.get("rlhf_type") == "simpo":
        out.setdefault("simpo_gamma", 0.5)
        if "rpo_alpha" in out:  # pref_ftx: LLaMA-Factory's NLL term on chosen answers, CPO's cpo_alpha for SimPO
            out["cpo_alpha"] = out.pop("rpo_alpha")
    if "template" in out and isinstance(out["template"], str):
        out["template"] = TEMPLATES.get(out["template"], out["template"])
    for key in ("dataset", "val_dataset"):
        if key in out:
            out[key] = _names(out[key])
    if "dataset" in out or "val_dataset" in out:
        # LLaMA-Factory resolves dataset names in DATASET_DIR/dataset_info.json (dataset_dir defaults to ./data)
        info = Path(dataset_dir or "data")
        if info.is_dir() or not info.suffix:
            info = info / "dataset_info.json"
        out["custom_dataset_info"] = str(info)
    return out, ignored


def _names(value) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def _finetuning_type(out, value, source):
    if value not in FINETUNING_TYPES:
        raise SwiftlikeError(f"{source}: finetuning_type {value!r}; swiftlike takes {', '.join(FINETUNING_TYPES)}")
    out["train_type"] = FINETUNING_TYPES[value]


def _lora_target(out, value, source):
    names = _names(value)
    out["target_modules"] = ["all-linear"] if names in (["all"], []) else names


def _dataset(out, value, source):
    out["dataset"] = value


def _flash_attn(out, value, source):
    if value not in ATTENTION:
        raise SwiftlikeError(f"{source}: flash_attn {value!r}; one of {', '.join(ATTENTION)}")
    out["attn_impl"] = ATTENTION[value]


def _disable_gradient_checkpointing(out, value, source):
    out["gradient_checkpointing"] = not value


def _train_on_prompt(out, value, source):
    if value:
        out["loss_scale"] = "all"


def _mask_history(out, value, source):
    if value:
        out["loss_scale"] = "last_round"


def _pure_bf16(out, value, source):
    if value:
        out["torch_dtype"] = "bfloat16"


def _freeze_trainable_layers(out, value, source):
    if int(value) <= 0:
        raise SwiftlikeError(f"{source}: freeze_trainable_layers {value}: swiftlike trains the last N layers "
                             f"(a positive N)")
    out["trainable_layers"] = int(value)


def _freeze_trainable_modules(out, value, source):
    if _names(value) not in (["all"], []):  # LLaMA-Factory's default: every module of the trainable layers
        raise SwiftlikeError(f"{source}: freeze_trainable_modules {value!r}: swiftlike's freeze trains whole layers "
                             f"(all their modules); remove the key, or train those modules with LoRA")


def _use_llama_pro(out, value, source):
    if value:
        raise SwiftlikeError(f"{source}: use_llama_pro: LLaMA-Factory trains a model its scripts/llama_pro.py "
                             f"expanded; swiftlike expands the original model while training: `swiftlike plugin "
                             f"install llama-pro`, then `swiftlike sft --train_type llama_pro --tuner_args "
                             f"'{{\"num_expand\": N}}'`")


def _quantization_method(out, value, source):
    if value not in ("bnb", "bitsandbytes"):
        raise SwiftlikeError(f"{source}: quantization_method {value!r}; swiftlike quantizes with bitsandbytes (bnb)")


SPECIAL = {
    "finetuning_type": _finetuning_type, "lora_target": _lora_target, "dataset": _dataset,
    "flash_attn": _flash_attn, "disable_gradient_checkpointing": _disable_gradient_checkpointing,
    "train_on_prompt": _train_on_prompt, "mask_history": _mask_history, "pure_bf16": _pure_bf16,
    "freeze_trainable_layers": _freeze_trainable_layers, "quantization_method": _quantization_method,
    "freeze_trainable_modules": _freeze_trainable_modules, "use_llama_pro": _use_llama_pro,
}
