"""`swiftlike sft` arguments: one dataclass, ms-swift v2/v3 names accepted as aliases.

The CLI builds its options from these fields (see cli/arguments.py), so the Python API and the CLI cannot drift.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Optional


def arg(default=MISSING, help="", aliases=(), **kw):
    meta = {"help": help, "aliases": tuple(aliases)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelArguments:
    model_type: Optional[str] = arg(None, "A registered model type (swiftlike models list).")
    model: Optional[str] = arg(None, "A local model dir or a hub id (ORG/NAME); the type is inferred.",
                               aliases=["model_id_or_path"])
    model_cache_dir: Optional[str] = arg(None, "The weights are already in this directory.")
    model_revision: Optional[str] = arg(None, "Hub revision (branch, tag or commit).")
    hub: Optional[str] = arg(None, "hf or ms (default: SWIFTLIKE_HUB / USE_HF, else hf).", aliases=["hub_name"])
    cache_dir: Optional[str] = arg(None, "Hub cache directory.")
    template: Optional[str] = arg(None, "Chat template (default: the model type's).", aliases=["template_type"])
    system: Optional[str] = arg(None, "System prompt (a dataset's own system wins).")
    torch_dtype: str = arg("auto", "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16.",
                           aliases=["dtype"])
    trust_remote_code: bool = arg(False, "Allow the model repo's own Python code.")
    attn_impl: str = arg("auto", "Attention: auto (sdpa; per-sequence sdpa for padding-free training batches), "
                         "sdpa, eager, flash_attention_2.", aliases=["attn_implementation"])
    max_length: int = arg(2048, "Longest encoded sample in tokens.")
    truncation_strategy: str = arg("delete", "delete (drop and count), left or right.")


@dataclass
class SftArguments(ModelArguments):
    # data
    dataset: list = arg([], "Datasets: NAME_OR_PATH[:subset][#N], several mix.",
                        aliases=["custom_train_dataset_path", "train_dataset"])
    val_dataset: list = arg([], "Validation datasets (same syntax).", aliases=["custom_val_dataset_path"])
    train_dataset_sample: int = arg(-1, "Sample this many training rows (-1 = all).")
    split_dataset_ratio: float = arg(0.0, "Hold out this fraction of the training data for eval.",
                                     aliases=["dataset_test_ratio"])
    columns: Optional[str] = arg(None, "Rename columns: JSON {\"source\": \"target\"}.")
    dataset_num_proc: int = arg(1, "Processes for encoding.")
    skip_bad_rows: bool = arg(False, "Skip malformed rows (reported) instead of failing.")
    model_name: list = arg([], "Self-cognition name: one value or 'zh en'.")
    model_author: list = arg([], "Self-cognition author: one value or 'zh en'.")
    loss_scale: str = arg("default", "Which tokens carry loss: default (every assistant turn), last_round, all.",
                          aliases=["loss_mode"])
    packing: bool = arg(False, "Pack samples into max_length bins.")
    padding_free: bool = arg(True, "Concatenate each batch without padding (per-sequence position_ids).")
    # tuner
    train_type: str = arg("lora", "lora, qlora, dora, full, freeze, or a plugin's tuner.",
                          aliases=["sft_type", "tuner_type"])
    lora_rank: int = arg(8, "LoRA rank.", aliases=["lora_r"])
    lora_alpha: int = arg(32, "LoRA alpha.")
    lora_dropout: float = arg(0.05, "LoRA dropout.", aliases=["lora_dropout_p"])
    target_modules: list = arg(["all-linear"], "all-linear (ALL), DEFAULT (the catalog's), names, or a regex.",
                               aliases=["lora_target_modules"])
    use_dora: bool = arg(False, "Weight-decomposed LoRA.")
    use_rslora: bool = arg(False, "Rank-stabilised LoRA scaling.")
    fused_lora: bool = arg(True, "Fused forward/backward for plain LoRA layers (same maths, fewer memory passes).")
    pack_cpu_weights: bool = arg(True, "On the CPU in fp32: oneDNN-packed copies of the frozen weights of fused LoRA "
                                 "layers and the output head (faster matmuls; about one more copy of them in memory).")
    quant_bits: int = arg(0, "QLoRA: 4 or 8 (implies --train_type qlora when set with lora).",
                          aliases=["quantization_bit"])
    bnb_4bit_quant_type: str = arg("nf4", "nf4 or fp4.", aliases=["bnb_4bit_quant"])
    bnb_4bit_use_double_quant: bool = arg(True, "Double quantization.")
    trainable_layers: Optional[int] = arg(None, "freeze: train only the last N layers.")
    freeze_ratio: Optional[float] = arg(None, "freeze: freeze this fraction of the layers from the bottom.",
                                        aliases=["freeze_parameters_ratio"])
    # trainer
    output_dir: str = arg("output", "Where runs go: OUTPUT/<model_type>/v<N>-<time>/.")
    logging_dir: Optional[str] = arg(None, "TensorBoard dir (default: the run's runs/).")
    add_output_dir_suffix: bool = arg(True, "Append <model_type>/v<N>-<time> to --output_dir.")
    num_train_epochs: float = arg(1.0, "Epochs.")
    max_steps: int = arg(-1, "Stop after this many optimizer steps (overrides epochs).")
    per_device_train_batch_size: int = arg(4, "Samples per step per device.", aliases=["batch_size"])
    per_device_eval_batch_size: int = arg(4, "Eval samples per step.", aliases=["eval_batch_size"])
    gradient_accumulation_steps: int = arg(1, "Steps to accumulate.")
    learning_rate: float = arg(1e-4, "Peak learning rate.", aliases=["lr"])
    lr_scheduler_type: str = arg("cosine", "Scheduler (linear, cosine, constant, ...).")
    warmup_ratio: float = arg(0.05, "Warm-up fraction of steps.")
    warmup_steps: int = arg(0, "Warm-up steps (overrides the ratio).")
    weight_decay: float = arg(0.1, "AdamW weight decay.")
    max_grad_norm: float = arg(1.0, "Gradient clipping.")
    optim: str = arg("adamw_torch_fused", "Optimizer (the HF Trainer's names: adamw_torch_fused, adamw_torch, ...).")
    gradient_checkpointing: bool = arg(False, "Trade compute for memory.")
    seed: int = arg(42, "Random seed.")
    save_steps: Optional[int] = arg(None, "Checkpoint every N steps (default: each epoch end).")
    save_total_limit: Optional[int] = arg(2, "Keep at most this many checkpoints.")
    eval_steps: Optional[int] = arg(None, "Evaluate every N steps (default: like save_steps).")
    logging_steps: int = arg(5, "Log every N steps.")
    resume_from_checkpoint: Optional[str] = arg(None, "A checkpoint dir, or 'last' for the newest in --output_dir.")
    deepspeed: Optional[str] = arg(None, "DeepSpeed config JSON, or zero2, zero3, zero2_offload, zero3_offload "
                                   "(ms-swift's default-zero2 etc. too); passed to the HF Trainer.")
    neftune_noise_alpha: Optional[float] = arg(None, "NEFTune embedding noise.")
    report_to: list = arg(["tensorboard"], "Trainer loggers (tensorboard, none, wandb...).")
    dataloader_num_workers: int = arg(0, "DataLoader workers.")
    device: Optional[str] = arg(None, "cpu, cuda or cuda:N (default: cuda when available).")

    def to_dict(self) -> dict:
        return asdict(self)


# ms-swift flags that only tune things swiftlike decides itself: accepted, so old command lines run.
IGNORED_FLAGS = {"use_flash_attn", "check_dataset_strategy", "preprocess_num_proc", "self_cognition_sample",
                 "save_only_model", "disable_tqdm", "lazy_tokenize", "ddp_backend", "use_loss_scale",
                 "sequence_parallel_size", "check_model_is_latest", "save_on_each_node", "acc_strategy"}


def field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}
