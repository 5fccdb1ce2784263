"""Training arguments: the model options (swiftlike.models.options) plus data, tuner and trainer options, with
ms-swift's v2/v3/v4 and the HF Trainer's spellings accepted as aliases.

The CLI builds its options from these fields (see cli/options.py), so the Python API and the CLI cannot drift.
A stage (sft today; pt and rlhf next) subclasses TrainArguments with the options that are its own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from ..models.options import ModelArguments, arg, field_names  # noqa: F401  (field_names: for callers)
from ..registry import SwiftlikeError


@dataclass
class TrainArguments(ModelArguments):
    max_length: int = arg(2048, "Longest encoded sample in tokens.", aliases=["cutoff_len"])
    truncation_strategy: str = arg("delete", "delete (drop and count), left or right.")
    # data
    dataset: list = arg([], "Datasets: NAME_OR_PATH[:subset][#N], several mix.",
                        aliases=["custom_train_dataset_path", "train_dataset"])
    val_dataset: list = arg([], "Validation datasets (same syntax).", aliases=["custom_val_dataset_path"])
    train_dataset_sample: int = arg(-1, "Sample this many training rows (-1 = all).")
    max_samples: int = arg(-1, "At most this many rows of each dataset, its first ones (LLaMA-Factory's "
                               "max_samples; -1 = all).")
    split_dataset_ratio: float = arg(0.0, "Hold out this fraction of the training data for eval.",
                                     aliases=["dataset_test_ratio"])
    columns: Optional[str] = arg(None, "Rename columns: JSON {\"source\": \"target\"}.")
    custom_dataset_info: Optional[str] = arg(None, "A dataset_info.json (LLaMA-Factory's, or ms-swift's) whose "
                                             "dataset names --dataset may use.")
    external_plugins: list = arg([], "Python files loaded into the registry first: swiftlike hooks (register_rewards, "
                                 "register_datasets…), or ms-swift reward functions (orms['name'] = ORM class).",
                                 aliases=["custom_register_path"])
    dataset_num_proc: int = arg(1, "Processes for encoding.")
    skip_bad_rows: bool = arg(False, "Skip malformed rows (reported) instead of failing.")
    model_name: list = arg([], "Self-cognition name: one value or 'zh en'.")
    model_author: list = arg([], "Self-cognition author: one value or 'zh en'.")
    packing: bool = arg(False, "Pack samples into max_length bins.")
    padding_free: bool = arg(True, "Concatenate each batch without padding (per-sequence position_ids).")
    # tuner
    train_type: str = arg("lora", "lora, qlora, dora, full, freeze, or a plugin's tuner.",
                          aliases=["sft_type", "tuner_type"])
    adapters: list = arg([], "Continue training these LoRA adapters (a checkpoint, an installed adapter's name or a "
                         "hub ref) instead of new ones: e.g. sft, then dpo on the same adapter.",
                         aliases=["resume_from_adapter"])
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
    init_lora_weights: str = arg("true", "LoRA initialisation (PEFT's): true, gaussian, pissa, pissa_niter_N, olora, "
                                 "loftq (with --loftq_bits), eva or corda (both from the training data).",
                                 aliases=["init_weights"])
    loftq_bits: Optional[int] = arg(None, "LoftQ: quantisation bits (4 or 8) the adapter compensates for.")
    loftq_iter: int = arg(1, "LoftQ: alternating quantise/SVD iterations.")
    loraplus_lr_ratio: Optional[float] = arg(None, "LoRA+: the lora_B matrices learn at this multiple of "
                                             "--learning_rate (PEFT's create_loraplus_optimizer).",
                                             aliases=["lorap_lr_ratio", "lora_lr_ratio"])
    loraplus_lr_embedding: float = arg(1e-6, "LoRA+: learning rate of LoRA layers on embeddings.")
    lora_bias: str = arg("none", "Which biases train with LoRA: none, all, lora_only (PEFT's `bias`).",
                         aliases=["lora_bias_trainable"])
    modules_to_save: list = arg([], "Modules trained in full and saved with the adapter (e.g. embed_tokens norm).",
                                aliases=["lora_modules_to_save", "additional_target"])
    layers_to_transform: list = arg([], "LoRA only on these decoder layers (indices, e.g. 0 1 5).",
                                    aliases=["lora_layers_to_transform"])
    quant_bits: int = arg(0, "QLoRA: 4 or 8 (implies --train_type qlora when set with lora).",
                          aliases=["quantization_bit"])
    bnb_4bit_quant_type: str = arg("nf4", "nf4 or fp4.", aliases=["bnb_4bit_quant"])
    bnb_4bit_use_double_quant: bool = arg(True, "Double quantization.")
    tuner_args: Optional[str] = arg(None, "A plugin tuner's own options as JSON, e.g. '{\"target_r\": 4}' for "
                                    "adalora (`swiftlike tuners show NAME` names them).")
    trainable_layers: Optional[int] = arg(None, "freeze: train only the last N layers.")
    freeze_ratio: Optional[float] = arg(None, "freeze: freeze this fraction of the layers from the bottom.",
                                        aliases=["freeze_parameters_ratio"])
    # trainer
    output_dir: str = arg("output", "Where runs go: OUTPUT/<model_type>/v<N>-<time>/.")
    logging_dir: Optional[str] = arg(None, "TensorBoard dir (default: the run's runs/).")
    add_output_dir_suffix: bool = arg(True, "Append <model_type>/v<N>-<time> to --output_dir.",
                                      aliases=["add_version"])
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
    save_strategy: Optional[str] = arg(None, "steps, epoch or no (default: steps when --save_steps is set, else "
                                       "epoch; the last step is always saved).")
    save_steps: Optional[int] = arg(None, "Checkpoint every N steps (default: each epoch end).")
    save_total_limit: Optional[int] = arg(2, "Keep at most this many checkpoints.")
    eval_strategy: Optional[str] = arg(None, "steps, epoch or no (default: like the saves, when there is val data).",
                                       aliases=["evaluation_strategy"])
    eval_steps: Optional[int] = arg(None, "Evaluate every N steps (default: like save_steps).")
    logging_steps: int = arg(5, "Log every N steps.")
    resume_from_checkpoint: Optional[str] = arg(None, "A checkpoint dir, or 'last' for the newest in --output_dir.")
    deepspeed: Optional[str] = arg(None, "DeepSpeed config JSON, or zero2, zero3, zero2_offload, zero3_offload "
                                   "(ms-swift's default-zero2 etc. too); passed to the HF Trainer.")
    fsdp: Optional[str] = arg(None, "PyTorch FSDP (the HF Trainer's words): e.g. \"full_shard auto_wrap\", "
                              "\"shard_grad_op auto_wrap offload\"; or ms-swift's fsdp2 preset or its JSON file "
                              "({\"fsdp\": ..., \"fsdp_config\": ...}). Not with --deepspeed.")
    fsdp_config: Optional[str] = arg(None, "The HF Trainer's fsdp_config: a JSON file or inline JSON, e.g. "
                                     "'{\"transformer_layer_cls_to_wrap\": [\"LlamaDecoderLayer\"]}'.")
    neftune_noise_alpha: Optional[float] = arg(None, "NEFTune embedding noise.")
    report_to: list = arg(["tensorboard"], "Trainer loggers (tensorboard, none, wandb...).")
    dataloader_num_workers: int = arg(0, "DataLoader workers.")
    device: Optional[str] = arg(None, "cpu, cuda or cuda:N (default: cuda when available).")
    bf16: Optional[bool] = arg(None, "The HF Trainer's / LLaMA-Factory's spelling of --torch_dtype bfloat16.")
    fp16: Optional[bool] = arg(None, "The HF Trainer's / LLaMA-Factory's spelling of --torch_dtype float16.")
    quant_method: Optional[str] = arg(None, "ms-swift: the quantization backend of --quant_bits (bnb).")
    task_type: Optional[str] = arg(None, "ms-swift: causal_lm (the only task swiftlike trains).")

    def __post_init__(self):
        super().__post_init__()
        if self.bf16 and self.fp16:
            raise SwiftlikeError("--bf16 and --fp16 both set; choose one (or --torch_dtype)")
        if (self.bf16 or self.fp16) and self.torch_dtype == "auto":
            self.torch_dtype = "bfloat16" if self.bf16 else "float16"

    def to_dict(self) -> dict:
        return asdict(self)

    def tuner_options(self) -> dict:
        """--tuner_args as a dict (a JSON object; a dict given through the Python API is taken as it is)."""
        import json

        value = self.tuner_args
        if value is None or isinstance(value, dict):
            return dict(value or {})
        try:
            data = json.loads(value)
        except json.JSONDecodeError as err:
            raise SwiftlikeError(f"--tuner_args {value!r}: not JSON ({err.msg}); write e.g. "
                                 f"'{{\"target_r\": 4}}'") from None
        if not isinstance(data, dict):
            raise SwiftlikeError(f"--tuner_args {value!r}: expected a JSON object of option: value")
        return data


@dataclass
class SftArguments(TrainArguments):
    loss_scale: str = arg("default", "Which tokens carry loss: default (every assistant turn), last_round, all.",
                          aliases=["loss_mode"])


@dataclass
class PtArguments(TrainArguments):
    """Continued pretraining: raw text, loss on every token; documents packed into --max_length blocks."""
    packing: bool = arg(True, "Pack documents into --max_length blocks (each keeps its own positions and attends "
                        "only to itself); false: one document per sample, cut by --truncation_strategy.")
    truncation_strategy: str = arg("right", "Documents longer than --max_length: right (cut the end, default), "
                                   "left (cut the start), delete (drop and count), split (into several blocks).")


# ms-swift / HF Trainer flags that only tune things swiftlike decides itself (logging, progress bars, data-loading
# mechanics, checkpoint housekeeping): accepted so their command lines run, and named in a warning. Nothing here
# changes what is trained.
IGNORED_FLAGS = {
    # ms-swift v2
    "use_flash_attn", "check_dataset_strategy", "preprocess_num_proc", "self_cognition_sample", "use_loss_scale",
    "check_model_is_latest",
    # ms-swift 3/4 and the HF Trainer
    "save_only_model", "disable_tqdm", "lazy_tokenize", "ddp_backend", "sequence_parallel_size", "save_on_each_node",
    "acc_strategy", "logging_first_step", "log_on_each_node", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "include_num_input_tokens_seen", "run_name", "prediction_loss_only", "dataloader_pin_memory",
    "dataloader_persistent_workers", "dataloader_prefetch_factor", "ddp_find_unused_parameters", "ddp_timeout",
    "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "skip_memory_metrics", "do_train", "do_eval", "tuner_backend",
    "check_model", "safe_serialization", "max_shard_size", "use_logits_to_keep", "load_from_cache_file",
    "download_mode", "create_checkpoint_symlink", "ignore_args_error", "template_backend", "eval_on_start",
    "eval_accumulation_steps", "packing_num_proc", "overwrite_output_dir",
}
