"""A training run as named phases on the HF Trainer. A stage (sft, and next pt and rlhf) subclasses the recipe and
overrides only what differs — its data encoding, collator, trainer class or loss — and copies no phase.

    check → resolve → tokenizer/template → data → output dir → model + tuner → trainer → train → finish

Everything cheap and likely to fail (arguments, data) runs before the model loads, and the run directory is created
only once the data is good; a run that fails before its first checkpoint removes the directory it created.
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ..registry import SwiftlikeError, get_registry, resolve_callable
from .arguments import TrainArguments
from .memory import is_out_of_memory, oom_message
from .outputs import finite, plot_loss, resolve_resume, run_dir

log = logging.getLogger("swiftlike.train")

# --report_to NAME -> the package its transformers integration imports
REPORTERS = {"wandb": "wandb", "mlflow": "mlflow", "swanlab": "swanlab", "comet_ml": "comet_ml",
             "clearml": "clearml", "dvclive": "dvclive", "neptune": "neptune", "trackio": "trackio",
             "tensorboard": "tensorboard"}
STRATEGIES = ("steps", "epoch", "no")


@contextlib.contextmanager
def paused_gc():
    """Start-up (imports, loading) makes ~500k long-lived objects and almost no cyclic garbage, yet triggers ~10 full
    collections (~1 s): the collector is off until training starts (see `train`). The caller gets it back as it
    was, unfrozen, on success and on error."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


class TrainingRecipe:
    """One training run. `run()` calls the phases in order; each leaves its results on `self`."""

    stage = "sft"
    loss_key = "loss"  # the logged training loss loss.png plots
    final_evaluation = True  # the Trainer's evaluate() on the validation rows once training ends
    trainer_class = None  # set by the stage (a transformers.Trainer subclass)

    def __init__(self, args: TrainArguments, resolve_adapter=None):
        """`resolve_adapter(name_or_ref_or_dir, base=...) -> Path` turns --adapters into directories (the adapter
        marketplace's resolver, passed in by swiftlike.stages and the CLI; without it --adapters takes dirs)."""
        self.args = args
        self.resolve_adapter = resolve_adapter
        self.t_start = time.perf_counter()

    # ---------------------------------------------------------------------------------------------- the run
    def run(self) -> dict:
        """Train; returns {"run_dir", "last_checkpoint", "metrics"}."""
        from .multinode import agree, join_process_group, leave_process_group

        with paused_gc():
            # Under torchrun every process joins first and the phases that may refuse the input are agreed on, so a
            # refusal on one node stops all of them (none is left waiting for it). The phases hold no collective of
            # their own: rank 0 encodes first (filling the encode cache the others read), the agreement its barrier.
            group = join_process_group(self.args.device)
            first = group is None or group.is_main_process
            for phase in (self.check, self.resolve, self.setup_tokenizer, self.load_rows,
                          self.encode_rows if first else _nothing, _nothing if first else self.encode_rows):
                agree(phase, group)
            self.setup_output()
            try:
                self.setup_model()
                self.setup_trainer()
                self.train()
                done = self.finish()
            except BaseException:
                self.discard_output()
                raise
            leave_process_group(group)
            return done

    # ---------------------------------------------------------------------------------------------- phases
    def check(self) -> None:
        """Arguments only: everything that can be refused before a library or a model loads."""
        a = self.args
        if a.external_plugins:  # first: what they register (rewards, datasets, templates) is looked up below
            from ..plugins.external import load_external_plugins

            load_external_plugins(a.external_plugins)
        a.check_model_options()
        if not a.dataset:
            raise SwiftlikeError("no training data: pass --dataset NAME_OR_PATH (e.g. self-cognition#200, data.jsonl)")
        if a.max_steps <= 0 and a.num_train_epochs <= 0:
            raise SwiftlikeError(f"nothing to train: --num_train_epochs {a.num_train_epochs:g} and no --max_steps")
        for flag in ("save_strategy", "eval_strategy"):
            value = getattr(a, flag)
            if value is not None and value not in STRATEGIES:
                raise SwiftlikeError(f"--{flag} {value!r}: use {', '.join(STRATEGIES)}")
        if a.quant_method not in (None, "bnb", "bitsandbytes"):
            raise SwiftlikeError(f"--quant_method {a.quant_method}: swiftlike quantizes with bitsandbytes (bnb) only")
        if a.task_type not in (None, "causal_lm"):
            raise SwiftlikeError(f"--task_type {a.task_type}: swiftlike trains causal_lm models only")
        for name in a.report_to:
            package = REPORTERS.get(name)
            if package and importlib.util.find_spec(package) is None:
                raise SwiftlikeError(f"--report_to {name}: the {package} package is not installed; "
                                     f"pip install {package} (or drop --report_to {name})")
        if a.custom_dataset_info and not Path(a.custom_dataset_info).exists():
            raise SwiftlikeError(f"--custom_dataset_info {a.custom_dataset_info}: no such file (LLaMA-Factory configs "
                                 f"find it in dataset_dir, default ./data)")
        if a.quant_bits and a.train_type == "lora":
            a.train_type = "qlora"
        self.tuner = get_registry().tuners.get(a.train_type)
        if a.tuner_options() and self.tuner.plugin == "swiftlike.tuners":  # bad JSON fails here too
            raise SwiftlikeError(f"--tuner_args is for plugin tuners' own options; --train_type {a.train_type} "
                                 f"takes its options as flags (--lora_rank, --target_modules, ...)")
        if self.tuner.check is not None:
            resolve_callable(self.tuner.check)(a)
        from .lora_options import DATA_DRIVEN, check_lora_options, init_kind

        check_lora_options(a)
        if init_kind(a.init_lora_weights) in DATA_DRIVEN and self.stage not in ("sft", "pt"):
            raise SwiftlikeError(f"--init_lora_weights {a.init_lora_weights} computes on sft/pt batches; the "
                                 f"{self.stage} stage cannot feed it (train the adapter with sft first, then "
                                 f"--adapters)")
        if a.adapters and a.train_type not in ("lora", "qlora", "dora"):
            raise SwiftlikeError(f"--adapters continues LoRA adapters; --train_type {a.train_type} trains no adapter")
        if len(a.adapters) > 1:
            raise SwiftlikeError("--adapters: training continues one adapter; merge the others first "
                                 "(swiftlike merge-lora)")
        from .deepspeed import resolve_deepspeed

        from .fsdp import resolve_fsdp

        # a bad file fails now, not after the model has loaded
        self.fsdp, self.fsdp_config = resolve_fsdp(a.fsdp, a.fsdp_config, deepspeed=a.deepspeed)
        if self.fsdp and "LOCAL_RANK" not in os.environ:
            raise SwiftlikeError(f"--fsdp {a.fsdp}: FSDP shards the model over processes; launch them with "
                                 f"NPROC_PER_NODE=N swiftlike sft ... or torchrun --nproc_per_node N -m swiftlike sft "
                                 f"... (one GPU: torchrun --nproc_per_node 1)")
        from .lora_options import mutates_base

        if self.fsdp and mutates_base(a):
            raise SwiftlikeError(f"--init_lora_weights {a.init_lora_weights} with --fsdp: its checkpoints convert the "
                                 f"adapter on one process, which holds only a shard under FSDP; train it without "
                                 f"--fsdp (DDP) or with --init_lora_weights true")
        self.ds_config = resolve_deepspeed(a.deepspeed)

    def resolve(self) -> None:
        """Where the base weights are (downloaded if needed), the model type, resume point, devices."""
        import torch
        from transformers import set_seed

        a = self.args
        if a.device and a.device.startswith("cuda") and not torch.cuda.is_available():
            raise SwiftlikeError(f"--device {a.device} asked for CUDA but no GPU is visible; drop --device to "
                                 f"train on the CPU")
        set_seed(a.seed)
        from accelerate import PartialState

        self.on_cpu = not torch.cuda.is_available() or a.device == "cpu"
        # cpu=True as the Trainer's own state will say: without it accelerate sees no backend on a CPU-only host and
        # every torchrun worker (gloo) would think it is the only process: each would make its own run directory
        self.state = PartialState(cpu=self.on_cpu)
        self.resolved = a.resolve_model()
        self.spec = self.resolved.spec
        self.model_type = a.model_type if a.model_type and a.model_type in get_registry().models else self.spec.name
        self.start_adapter = self._start_adapter()
        self.resume = resolve_resume(a.resume_from_checkpoint, a.output_dir, self.model_type)
        if self.resume is not None:
            self._check_resume_stage()
        self.check_tuner_options()

    def _check_resume_stage(self) -> None:
        """Resuming continues the same training: a DPO run resumed as KTO (or an sft run as pt) would mix two
        objectives in one run and overwrite its args.json."""
        from ..checkpoint import read_manifest

        have, want = read_manifest(self.resume).get("stage"), self.stage
        if have and have != want:
            def command(stage):
                return stage if stage in ("sft", "pt") else f"rlhf --rlhf_type {stage}"
            raise SwiftlikeError(f"--resume_from_checkpoint: {self.resume} is a `swiftlike {command(have)}` "
                                 f"checkpoint; resume it with that command, or start `swiftlike {command(want)}` "
                                 f"from its adapter with --adapters {self.resume}")

    def check_tuner_options(self) -> None:
        """The LoRA options against the device and the model's config and module names, before any weight loads."""
        from .lora_options import LORA_TUNERS, check_against_model, check_lora_options
        from .tuners import normalize_targets

        a = self.args
        if a.train_type not in LORA_TUNERS:
            return
        check_lora_options(a, on_cpu=self.on_cpu and not _xpu_available())
        check_against_model(a, self.resolved.path, targets=normalize_targets(a.target_modules,
                                                                              self.spec.lora_target_modules),
                            trust_remote_code=a.trust_remote_code)

    def _start_adapter(self) -> Path | None:
        """--adapters as a checked adapter directory (resolved through the marketplace when it is a name or ref),
        refused here — before the model loads — when it was trained on another base."""
        if not self.args.adapters:
            return None
        from ..checkpoint import adapter_config, base_fingerprint, check_base, read_manifest

        source = self.args.adapters[0]
        if self.resolve_adapter is not None:
            path = Path(self.resolve_adapter(source, base=str(self.resolved.path)))
        else:
            path = Path(source).expanduser()
            if not path.is_dir():
                raise SwiftlikeError(f"--adapters {source}: no such directory (installed adapter names and hub refs "
                                     f"are resolved by `swiftlike.sft`/`rlhf` and the CLI)")
        adapter_config(path)
        check_base(read_manifest(path), base_model_type=self.model_type,
                   fingerprint=base_fingerprint(self.resolved.path), where=f"--adapters {source}",
                   force_hint="")
        return path

    def setup_tokenizer(self) -> None:
        from ..models.load import load_tokenizer
        from ..templates import get_template

        a = self.args
        self.tokenizer = load_tokenizer(self.resolved.path, a.trust_remote_code)
        name = a.template or self.spec.template
        if name == "auto":
            raise SwiftlikeError(f"cannot tell which chat template {self.resolved.path} uses; pass --template NAME "
                                 f"(see `swiftlike templates list`)")
        self.template = get_template(name, self.tokenizer, **self.template_options())

    def template_options(self) -> dict:
        a = self.args
        return dict(system=a.system, max_length=a.max_length, truncation=a.truncation_strategy)

    def setup_data(self) -> None:
        """Rows (checked before anything heavy loads), then the stage's encoding (rank 0 first: it fills the encode
        cache the other ranks then read)."""
        self.load_rows()
        with self.state.main_process_first():
            self.encode_rows()

    def load_rows(self) -> None:
        from ..data import load_dataset

        a = self.args
        columns = json.loads(a.columns) if a.columns else None
        dataset = list(a.dataset)
        if a.train_dataset_sample > 0:  # ms-swift v2: sample the (first) training dataset
            dataset = [d if "#" in d else f"{d}#{a.train_dataset_sample}" for d in dataset]
        self.splits = load_dataset(dataset, a.val_dataset or None, split_dataset_ratio=a.split_dataset_ratio,
                                   seed=a.seed, columns=columns, skip_bad_rows=a.skip_bad_rows,
                                   model_name=a.model_name or None, model_author=a.model_author or None,
                                   hub=a.hub, max_samples=a.max_samples if a.max_samples > 0 else None,
                                   **self.dataset_options())

    def encode_rows(self) -> None:
        self.train_data = self.encode(self.splits.train, train=True)
        self.val_data = self.encode(self.splits.val, train=False) if self.splits.val else []

    def dataset_options(self) -> dict:
        """Extra keyword arguments for load_dataset."""
        if not self.args.custom_dataset_info:
            return {}
        from ..data import read_dataset_info

        return {"dataset_info": read_dataset_info(self.args.custom_dataset_info)}

    def encode(self, rows: list, *, train: bool) -> list:
        """Rows -> the samples the collator batches. The stage's own."""
        raise NotImplementedError

    def setup_output(self) -> None:
        """The run directory: rank 0 creates OUTPUT/<model_type>/v<N>-<time>/ (or reuses the resumed run's)."""
        a = self.args
        out = self.resume.parent if self.resume else None
        self.created_output = False
        if out is None and self.state.is_main_process:
            out = run_dir(a.output_dir, self.model_type, a.add_output_dir_suffix)
            self.created_output = a.add_output_dir_suffix
        self.out = Path(_broadcast(str(out) if out else None, self.state))
        self.log_file = self.out / "logging.jsonl"
        if self.state.num_processes > 1:
            from .multinode import check_shared_output

            try:  # every node writes into and resumes from this one directory: a node that cannot see it stops all
                check_shared_output(self.out, self.resume, self.state)
            except SwiftlikeError:
                self.discard_output()
                raise
        if self.resume is not None and self.state.is_main_process:
            from .multinode import resume_batch_note

            note = resume_batch_note(self.resume, self.args, self.state.num_processes)
            if note:
                print(note, file=sys.stderr, flush=True)

    def setup_model(self) -> None:
        """The base model, the attention path, the tuner and the CPU/LoRA fast paths."""
        from ..models.load import load_model_tokenizer, pick_dtype
        from .cpu_packing import pack_output_head
        from .fused_lora import fuse_lora_layers
        from .tuners import normalize_targets
        from .varlen_attention import enable_varlen_attention

        a = self.args
        if self.tuner.requires_peft:  # every PEFT method targets modules the same way (the catalog's DEFAULT too)
            a.target_modules = normalize_targets(a.target_modules, self.spec.lora_target_modules)
        self.dtype = pick_dtype(a.torch_dtype)
        if self.on_cpu:
            # every padding-free step has a new token count, so oneDNN builds new kernels each step; its default
            # cache keeps 1024 of them with their buffers and grows RSS by hundreds of MB over a run
            os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
        from transformers import set_seed

        # what is initialised here (new LoRA factors, a reward model's score head) depends on the seed alone, not on
        # what ran since resolve() seeded: a first run that built the embedded model from its GGUF (through a
        # randomly initialised model) drew random numbers there, and trained differently from every later run
        set_seed(a.seed)
        model, _ = load_model_tokenizer(resolved=self.resolved, torch_dtype=self.dtype, quant_bits=a.quant_bits,
                                        quant_type=a.bnb_4bit_quant_type, double_quant=a.bnb_4bit_use_double_quant,
                                        trust_remote_code=a.trust_remote_code,
                                        attn_implementation="sdpa" if a.attn_impl == "auto" else a.attn_impl,
                                        tokenizer=self.tokenizer, **self.model_kwargs())
        model.config.use_cache = False  # required for padding-free batches; useless in training anyway
        if a.attn_impl == "auto" and self.padding_free:
            enable_varlen_attention(model)
        if a.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.25's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = self.apply_tuner(model)
        from .lora_options import mutates_base

        self.initial_adapter = None
        if self.start_adapter is None and mutates_base(a) and getattr(model, "peft_config", None):
            from .lora_init import save_initial_adapter

            # read back at each save: the checkpoint's adapter is converted to apply to the original base
            self.initial_adapter = save_initial_adapter(model, self.out) if self.state.is_main_process else None
        # The fused LoRA op and the oneDNN-packed weights are CPU paths: on a GPU, PEFT's layers and cuBLAS (under
        # autocast, with flash/sdpa attention) are what is fast, so neither is installed there.
        # Neither under FSDP nor DeepSpeed: the engines own the parameters. FSDP2 swaps each layer's weights between
        # sharded DTensors and gathered buffers it frees and refills around every forward/backward; ZeRO-3 leaves an
        # empty placeholder that a hook on the owning module fills just before that module runs. The oneDNN-packed
        # copies are cached per weight storage, so they would pack a shard or a placeholder, or go stale when a
        # buffer is refilled; the fused LoRA Function reads `base_layer.weight` without calling `base_layer`, so
        # ZeRO-3's hook never gathers it. PEFT's own forward calls every module the engines hook.
        plain_cpu = self.on_cpu and not (self.fsdp or self.ds_config)
        self.cpu_fast_paths = []
        if plain_cpu and a.fused_lora and getattr(model, "peft_config", None) \
                and fuse_lora_layers(model, pack_weights=a.pack_cpu_weights):
            self.cpu_fast_paths.append("fused_lora")
        if plain_cpu and a.pack_cpu_weights and pack_output_head(model):
            self.cpu_fast_paths.append("packed_output_head")  # used only while the head is frozen and fp32
        self.model = model
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.total = sum(p.numel() for p in model.parameters())

    def model_kwargs(self) -> dict:
        """Extra load_model_tokenizer keywords (a stage that needs another head passes `task`)."""
        return {}

    def apply_tuner(self, model):
        """The tuner's trainable parameters on `model`, or the --adapters adapter to continue."""
        if self.start_adapter is not None:
            from .tuners import continue_lora

            return continue_lora(model, self.start_adapter, self.args)
        from .lora_options import DATA_DRIVEN, init_kind

        prepare = resolve_callable(self.tuner.prepare)
        if init_kind(self.args.init_lora_weights) in DATA_DRIVEN:
            from .lora_init import calibration_batches

            batches = calibration_batches(self.train_data, self.collator(), self.args.per_device_train_batch_size)
            return prepare(model, self.args, calibration=batches)
        return prepare(model, self.args)

    @property
    def padding_free(self) -> bool:
        return bool(self.args.padding_free or self.args.packing)

    def setup_trainer(self) -> None:
        from .trainer import JsonlLogger, SaveAtEnd

        a = self.args
        callbacks = [JsonlLogger(self.log_file), SaveAtEnd()]
        if self.tuner.callbacks is not None:
            callbacks += resolve_callable(self.tuner.callbacks)(self.model, a)
        if "tensorboard" in a.report_to and self.state.is_main_process:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            # transformers 5 dropped TrainingArguments.logging_dir; give the callback its writer directly
            callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=a.logging_dir or str(self.out / "runs"))))
        self.trainer = self.make_trainer(callbacks)
        if a.loraplus_lr_ratio is not None:
            from .lora_options import loraplus_optimizer

            # set before train(): the Trainer then builds only the scheduler around it
            self.trainer.optimizer = loraplus_optimizer(self.trainer, a)
        if self.state.is_main_process:
            (self.out / "args.json").write_text(json.dumps(self.args_json(), indent=2, ensure_ascii=False))
            print(self.banner())

    def make_trainer(self, callbacks: list):
        """The stage's trainer over the model and data of the earlier phases."""
        extra = self.trainer_kwargs()
        if self.tuner.optimizer is not None:  # a tuner whose method is its optimizer (BAdam)
            extra["optimizer_cls_and_kwargs"] = resolve_callable(self.tuner.optimizer)(self.model, self.args)
        return self.trainer_class(
            model=self.model, args=self.training_arguments(), train_dataset=self.train_data,
            eval_dataset=self.val_data or None, data_collator=self.collator(),
            processing_class=self.processing_class(),
            callbacks=callbacks, after_checkpoint_save=self.after_checkpoint_save, **extra)

    def collator(self):
        raise NotImplementedError

    def processing_class(self):
        """What the trainer saves beside a full model (the tokenizer); an adapter checkpoint needs none."""
        return self.tokenizer if self.tuner.requires_peft is False else None

    def trainer_kwargs(self) -> dict:
        return {}

    def training_arguments(self):
        """The HF TrainingArguments of this run (a stage with its own config class overrides this)."""
        import torch
        from transformers import TrainingArguments

        return TrainingArguments(**self.training_options(), bf16=self.dtype == torch.bfloat16 and not self.on_cpu,
                                 fp16=self.dtype == torch.float16 and not self.on_cpu)

    def training_options(self) -> dict:
        """TrainingArguments keywords common to every stage."""
        a = self.args
        has_eval = bool(self.val_data)
        save_strategy = a.save_strategy or ("steps" if a.save_steps else "epoch")
        eval_steps = a.eval_steps or a.save_steps
        eval_strategy = (a.eval_strategy or ("steps" if eval_steps else "epoch")) if has_eval else "no"
        options = dict(
            output_dir=str(self.out),
            num_train_epochs=a.num_train_epochs, max_steps=a.max_steps,
            per_device_train_batch_size=a.per_device_train_batch_size,
            per_device_eval_batch_size=a.per_device_eval_batch_size,
            gradient_accumulation_steps=a.gradient_accumulation_steps, learning_rate=a.learning_rate,
            lr_scheduler_type=a.lr_scheduler_type, warmup_steps=a.warmup_steps or a.warmup_ratio,
            weight_decay=a.weight_decay, max_grad_norm=a.max_grad_norm, optim=a.optim,
            seed=a.seed, data_seed=a.seed,
            save_strategy=save_strategy, save_steps=a.save_steps or 500, save_total_limit=a.save_total_limit,
            eval_strategy=eval_strategy, eval_steps=eval_steps,
            logging_steps=a.logging_steps, logging_first_step=True,
            report_to=[r for r in a.report_to if r not in ("tensorboard", "none")] or "none",
            use_cpu=self.on_cpu, remove_unused_columns=False, prediction_loss_only=True,
            include_num_input_tokens_seen=True, dataloader_num_workers=a.dataloader_num_workers,
            deepspeed=self.ds_config, fsdp=self.fsdp, fsdp_config=self.fsdp_config,
            neftune_noise_alpha=a.neftune_noise_alpha, ddp_find_unused_parameters=False,
            save_only_model=False, disable_tqdm=not self.state.is_main_process,
        )
        # stated, never left to the config class: TRL's configs default to True, which silently recomputed every
        # forward of the preference stages (~2x slower) although --gradient_checkpointing is off. transformers 5.25
        # renamed the options (the old names print a FutureWarning on every run); older releases know only the old.
        name = "activation_checkpointing" if _has_field("activation_checkpointing") else "gradient_checkpointing"
        options[name] = a.gradient_checkpointing
        options[f"{name}_kwargs"] = {"use_reentrant": False} if a.gradient_checkpointing else None
        if self.tuner.trainer_options is not None:  # e.g. GaLore's optimizer and the modules it projects
            options.update(resolve_callable(self.tuner.trainer_options)(a))
        return options

    def train(self) -> None:
        # The model, tokenizer and libraries (~500k Python objects) live through training; frozen, they are skipped
        # by the collector's full passes, which the Trainer and the steady allocation of autograd objects trigger
        # (each pass ~0.15 s). Unfrozen when the run returns, so an in-process caller's garbage is collected.
        gc.freeze()
        gc.enable()
        try:
            self.result = self.trainer.train(resume_from_checkpoint=str(self.resume) if self.resume else None)
        except (RuntimeError, MemoryError) as err:
            if is_out_of_memory(err):
                raise SwiftlikeError(oom_message(self.args)) from None
            raise

    def finish(self) -> dict:
        metrics = dict(self.result.metrics)
        if self.val_data and self.final_evaluation:
            metrics.update(self.trainer.evaluate())
        last = self.out / f"checkpoint-{self.trainer.state.global_step}"
        self.plotted = False
        if self.state.is_main_process:
            if self.log_file.exists():
                self.plotted = plot_loss(self.log_file, self.out / "loss.png", self.loss_key)
            metrics = finite(metrics)
            metrics["wall_s"] = round(time.perf_counter() - self.t_start, 1)
            metrics["device"] = "cpu" if self.on_cpu else "cuda"
            metrics["cpu_fast_paths"] = getattr(self, "cpu_fast_paths", [])
            if not self.on_cpu:
                import torch

                metrics["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            print(self.summary(last, metrics))
        return {"run_dir": self.out, "last_checkpoint": last, "metrics": metrics}

    def discard_output(self) -> None:
        """After a failure: the run directory this run created goes, unless a checkpoint made it worth keeping."""
        out = getattr(self, "out", None)
        if not getattr(self, "created_output", False) or out is None or not self.state.is_main_process:
            return
        if not any(out.glob("checkpoint-*")):
            shutil.rmtree(out, ignore_errors=True)

    # ---------------------------------------------------------------------------------------------- checkpoints
    def after_checkpoint_save(self, ckpt: Path, trainer) -> None:
        """Called with each staged checkpoint before it is renamed into place: template, args, card, manifest."""
        from .. import checkpoint
        from ..templates import save_template

        if getattr(self, "_base_info", None) is None:
            self._base_info = self.manifest_info()
        save_template(ckpt, self.template)
        if getattr(self, "initial_adapter", None) is not None:
            from .lora_init import save_converted_adapter

            save_converted_adapter(trainer.model, ckpt, self.initial_adapter)
        metrics = {k: v for h in trainer.state.log_history for k, v in h.items()
                   if k in ("loss", "eval_loss", "train_loss", self.loss_key)}
        checkpoint.finalize(ckpt, {**self._base_info, "step": trainer.state.global_step, "metrics": finite(metrics)},
                            args=self.args_json())

    def manifest_info(self) -> dict:
        from ..checkpoint import base_fingerprint

        a, spec = self.args, self.spec
        return {
            "name": self.out.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stage": self.stage,
            "base_model_type": self.model_type, "base_model": spec.hf or spec.ms or str(self.resolved.path),
            "base_revision": a.model_revision or spec.revision,
            "base_fingerprint": base_fingerprint(self.resolved.path),
            "template": self.template.name, "template_text": self.template.chat_template_for_export(),
            "system": a.system, "tuner": a.train_type, "tuner_config": self.tuner_config(),
            "datasets": list(a.dataset),
            **({"license": spec.license} if spec.license else {}),  # the base weights' terms travel with them
            **({"started_from": str(self.start_adapter)} if self.start_adapter is not None else {}),
        }

    def tuner_config(self) -> dict:
        peft_config = getattr(self.model, "peft_config", None)
        if peft_config:
            cfg = peft_config.get("default")
            out = json.loads(json.dumps(cfg.to_dict(), default=_jsonable))
            if getattr(self, "initial_adapter", None) is not None:
                # what the checkpoint holds: B A - B0 A0 as a plain LoRA of twice the rank, for the original base
                out["saved_as"] = {"init_lora_weights": True, "r": 2 * cfg.r, "for": "the original base"}
            if self.args.loraplus_lr_ratio is not None:
                out["loraplus_lr_ratio"] = self.args.loraplus_lr_ratio
            return out
        return {"train_type": self.args.train_type, "trainable_layers": self.args.trainable_layers,
                "freeze_ratio": self.args.freeze_ratio}

    def args_json(self) -> dict:
        """args.json: every argument (a valid --config: re-running it reproduces the run) plus what was resolved."""
        data = {"stage": self.stage, **asdict(self.args)}
        # a type inferred from a local dir is not an option value: re-running the file infers it again
        data["model_type"] = self.model_type if self.model_type in get_registry().models else self.args.model_type
        data["model_dir"] = str(self.resolved.path)
        data["template"] = self.template.name
        return data

    # ---------------------------------------------------------------------------------------------- messages
    def banner(self) -> str:
        s = self.splits
        return (f"swiftlike {self.stage}: {self.model_type} ({self.resolved.origin}: {self.resolved.path}), template "
                f"{self.template.name}, tuner {self.args.train_type}: {self.trainable:,} of {self.total:,} "
                f"parameters trainable ({100 * self.trainable / max(self.total, 1):.3f}%); {len(s.train)} train / "
                f"{len(s.val)} val rows; output {self.out}")

    def summary(self, last: Path, metrics: dict) -> str:
        adapter = self.tuner.requires_peft
        loss, eval_loss = metrics.get("train_loss"), metrics.get("eval_loss")
        head = (f"swiftlike {self.stage} done in {metrics.get('wall_s', 0):.0f}s: train loss {loss:.4f}"
                if loss is not None else f"swiftlike {self.stage} done")
        if eval_loss is not None:
            head += f", eval loss {eval_loss:.4f}"
        lines = ["", "=" * 78, head,
                 f"  adapter:   {last}" if adapter else f"  model:     {last}",
                 f"  logs:      {self.out / 'logging.jsonl'}"
                 + (f"  (loss curve: {self.out / 'loss.png'})" if getattr(self, "plotted", False) else ""),
                 *self.next_steps(last), "=" * 78]
        return "\n".join(lines)

    def next_steps(self, last: Path) -> list[str]:
        """What to run next on the checkpoint, for the summary."""
        lines = [f"  chat:      swiftlike infer --ckpt_dir {last}"]
        if self.tuner.requires_peft:
            lines.append(f"  merge:     swiftlike merge-lora --ckpt_dir {last}")
        return lines


def _jsonable(o):
    import dataclasses

    if isinstance(o, set):
        return sorted(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def _nothing() -> None:
    pass


def _xpu_available() -> bool:
    import torch

    return bool(getattr(torch, "xpu", None) and torch.xpu.is_available())


def _broadcast(value, state):
    """Rank 0 decides (e.g. the run directory); every rank gets the same value."""
    if state.num_processes <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _has_field(name: str) -> bool:
    import dataclasses

    from transformers import TrainingArguments

    return any(f.name == name for f in dataclasses.fields(TrainingArguments))
