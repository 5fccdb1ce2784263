"""`swiftlike sft`: model → template → data → tuner → HF Trainer → versioned outputs."""
from __future__ import annotations

import gc
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from ..registry import SwiftlikeError, get_registry, resolve_callable
from .args import SftArguments
from .outputs import plot_loss, run_dir, write_manifest

log = logging.getLogger("swiftlike.sft")


def _distributed_state():
    from accelerate import PartialState

    return PartialState()


def _broadcast(value, state):
    """Rank 0 decides (e.g. the run directory); every rank gets the same value."""
    if state.num_processes <= 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _find_last_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (it has a manifest) under root or its newest v<N>-* run."""
    candidates = list(root.glob("checkpoint-*/swiftlike.json")) + list(root.glob("v*-*/checkpoint-*/swiftlike.json"))
    if not candidates:
        return None
    return max((p.parent for p in candidates), key=lambda p: (p.parent.name, int(p.name.split("-")[-1])))


def resolve_resume(args: SftArguments, model_type: str) -> Path | None:
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "last":
        root = Path(args.output_dir)
        found = _find_last_checkpoint(root / model_type) or _find_last_checkpoint(root)
        if found is None:
            raise SwiftlikeError(f"--resume_from_checkpoint last: no complete checkpoint under {root}")
        return found
    path = Path(args.resume_from_checkpoint)
    if not (path / "trainer_state.json").exists():
        raise SwiftlikeError(f"--resume_from_checkpoint {path}: not a checkpoint dir (no trainer_state.json)")
    return path


def base_fingerprint(model_dir: Path) -> str:
    """A cheap identity of base weights: safetensors headers plus the first/last 64 KiB of each weight file."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        size = path.stat().st_size
        with open(path, "rb") as f:
            digest.update(path.name.encode() + str(size).encode())
            head = f.read(8)
            digest.update(head)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else 0
            digest.update(f.read(min(header_len, 1 << 24)))
            digest.update(f.read(1 << 16))
            f.seek(max(0, size - (1 << 16)))
            digest.update(f.read())
    return digest.hexdigest()


def sft(args: SftArguments) -> dict:
    """Train; returns {"run_dir", "last_checkpoint", "metrics"}."""
    # Start-up (imports, loading) makes ~500k long-lived objects and almost no cyclic garbage, yet triggers
    # ~10 full collections (~1 s). The collector is off until training starts; see the freeze below.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _sft(args)
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()


def _sft(args: SftArguments) -> dict:
    t_start = time.perf_counter()
    import torch
    from transformers import TrainingArguments, set_seed

    from ..data import encode_dataset, load_dataset
    from ..data.collate import PaddingCollator, PaddingFreeCollator
    from ..data.packing import pack
    from ..models.load import load_model_tokenizer, pick_dtype
    from ..models.resolve import resolve_model
    from ..templates import get_template, save_template
    from .cpu_packing import pack_output_head
    from .deepspeed import resolve_deepspeed
    from .fused_lora import fuse_lora_layers
    from .trainer import JsonlLogger, SaveAtEnd, SwiftlikeTrainer
    from .varlen_attention import enable_varlen_attention
    from .tuners import normalize_targets

    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SwiftlikeError(f"--device {args.device} asked for CUDA but no GPU is visible; drop --device to "
                             f"train on the CPU")
    if not args.dataset:
        raise SwiftlikeError("no training data: pass --dataset NAME_OR_PATH (e.g. self-cognition#200, data.jsonl)")
    ds_config = resolve_deepspeed(args.deepspeed)  # fails now, not after the model has loaded
    if args.quant_bits and args.train_type == "lora":
        args.train_type = "qlora"
    tuner = get_registry().tuners.get(args.train_type)
    set_seed(args.seed)
    state = _distributed_state()

    resolved = resolve_model(args.model_type, args.model, hub=args.hub, revision=args.model_revision,
                             cache_dir=args.cache_dir, model_cache_dir=args.model_cache_dir)
    spec = resolved.spec
    model_type = args.model_type or spec.name
    resume = resolve_resume(args, model_type)
    out = resume.parent if resume else None
    if out is None and state.is_main_process:
        out = run_dir(args.output_dir, model_type, args.add_output_dir_suffix)
    out = Path(_broadcast(str(out) if out else None, state))
    log_file = out / "logging.jsonl"

    # ---- tokenizer, template, data (before the model: bad data fails in seconds, not after a load)
    _, tokenizer = load_model_tokenizer(resolved=resolved, load_model=False,
                                        trust_remote_code=args.trust_remote_code)
    template_name = args.template or spec.template
    if template_name == "auto":
        raise SwiftlikeError(f"cannot tell which chat template {resolved.path} uses; pass --template NAME "
                             f"(see `swiftlike templates list`)")
    template = get_template(template_name, tokenizer, system=args.system, loss_mode=args.loss_scale,
                            max_length=args.max_length, truncation=args.truncation_strategy)
    columns = json.loads(args.columns) if args.columns else None
    dataset = list(args.dataset)
    if args.train_dataset_sample > 0:  # ms-swift v2: sample the (first) training dataset
        dataset = [d if "#" in d else f"{d}#{args.train_dataset_sample}" for d in dataset]
    splits = load_dataset(dataset, args.val_dataset or None, split_dataset_ratio=args.split_dataset_ratio,
                          seed=args.seed, columns=columns, skip_bad_rows=args.skip_bad_rows,
                          model_name=args.model_name or None, model_author=args.model_author or None,
                          hub=args.hub)
    with state.main_process_first():
        train_enc, dropped = encode_dataset(splits.train, template, num_proc=args.dataset_num_proc)
        val_enc, val_dropped = encode_dataset(splits.val, template, num_proc=1) if splits.val else ([], 0)
    if dropped:
        print(f"swiftlike: dropped {dropped} training row(s) longer than --max_length {args.max_length} "
              f"(--truncation_strategy {args.truncation_strategy})")
    if not train_enc:
        raise SwiftlikeError(f"every training row is longer than --max_length {args.max_length}; raise it or use "
                             f"--truncation_strategy left")
    if args.packing:
        train_enc = pack(train_enc, args.max_length)

    # ---- model and tuner
    if args.train_type in ("lora", "dora", "qlora"):
        args.target_modules = normalize_targets(args.target_modules, spec.lora_target_modules)
    dtype = pick_dtype(args.torch_dtype)
    padding_free = args.padding_free or args.packing
    if not torch.cuda.is_available() or args.device == "cpu":
        # every padding-free step has a new token count, so oneDNN builds new kernels each step; its default
        # cache keeps 1024 of them with their buffers and grows RSS by hundreds of MB over a run
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
    model, _ = load_model_tokenizer(resolved=resolved, torch_dtype=dtype, quant_bits=args.quant_bits,
                                    quant_type=args.bnb_4bit_quant_type,
                                    double_quant=args.bnb_4bit_use_double_quant,
                                    trust_remote_code=args.trust_remote_code,
                                    attn_implementation="sdpa" if args.attn_impl == "auto" else args.attn_impl,
                                    tokenizer=tokenizer)
    model.config.use_cache = False  # required for padding-free batches; useless in training anyway
    if args.attn_impl == "auto" and padding_free:
        enable_varlen_attention(model)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = resolve_callable(tuner.prepare)(model, args)
    if args.fused_lora and getattr(model, "peft_config", None):
        fuse_lora_layers(model, pack_weights=args.pack_cpu_weights)
    if args.pack_cpu_weights:
        pack_output_head(model)  # used only while the head is frozen, fp32 and on the CPU
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())

    collator = (PaddingFreeCollator() if padding_free
                else PaddingCollator(pad_token_id=tokenizer.pad_token_id))
    has_eval = bool(val_enc)
    save_strategy = "steps" if args.save_steps else "epoch"
    eval_steps = args.eval_steps or args.save_steps
    targs = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler_type, warmup_steps=args.warmup_steps or args.warmup_ratio,
        weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm, optim=args.optim,
        seed=args.seed, data_seed=args.seed,
        save_strategy=save_strategy, save_steps=args.save_steps or 500, save_total_limit=args.save_total_limit,
        eval_strategy=("steps" if eval_steps else "epoch") if has_eval else "no", eval_steps=eval_steps,
        logging_steps=args.logging_steps, logging_first_step=True,
        report_to=[r for r in args.report_to if r not in ("tensorboard", "none")] or "none",
        bf16=dtype == torch.bfloat16 and torch.cuda.is_available(),
        fp16=dtype == torch.float16 and torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available() or args.device == "cpu",
        remove_unused_columns=False, prediction_loss_only=True, include_num_input_tokens_seen=True,
        dataloader_num_workers=args.dataloader_num_workers, deepspeed=ds_config,
        neftune_noise_alpha=args.neftune_noise_alpha, ddp_find_unused_parameters=False,
        save_only_model=False, disable_tqdm=not state.is_main_process,
    )
    dataset_names = list(args.dataset)

    def manifest_info():
        return {
            "name": out.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "base_model_type": model_type, "base_model": spec.hf or str(resolved.path),
            "base_revision": args.model_revision or spec.revision, "base_fingerprint": base_fingerprint(resolved.path),
            "template": template.name, "template_text": template.chat_template_for_export(),
            "system": args.system, "tuner": args.train_type,
            "tuner_config": _tuner_config(model, args), "datasets": dataset_names,
        }

    base_info = None

    def after_checkpoint_save(ckpt: Path, trainer):
        nonlocal base_info
        base_info = base_info or manifest_info()
        save_template(ckpt, template)
        (ckpt / "args.json").write_text(json.dumps(_args_json(args, resolved, template), indent=2))
        logs = [h for h in trainer.state.log_history]
        metrics = {k: v for h in logs for k, v in h.items() if k in ("loss", "eval_loss", "train_loss")}
        write_manifest(ckpt, {**base_info, "step": trainer.state.global_step, "metrics": metrics})

    callbacks = [JsonlLogger(log_file), SaveAtEnd()]
    if "tensorboard" in args.report_to and state.is_main_process:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        # transformers 5 dropped TrainingArguments.logging_dir; give the callback its writer directly
        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=args.logging_dir or str(out / "runs"))))
    trainer = SwiftlikeTrainer(
        model=model, args=targs, train_dataset=train_enc, eval_dataset=val_enc or None, data_collator=collator,
        processing_class=tokenizer if tuner.requires_peft is False else None,
        callbacks=callbacks, manifest_info=manifest_info,
        after_checkpoint_save=after_checkpoint_save,
    )
    if state.is_main_process:
        (out / "args.json").write_text(json.dumps(_args_json(args, resolved, template), indent=2))
        print(f"swiftlike: {model_type} ({resolved.origin}: {resolved.path}), template {template.name}, "
              f"tuner {args.train_type}: {trainable:,} of {total:,} parameters trainable "
              f"({100 * trainable / max(total, 1):.3f}%); {len(splits.train)} train / {len(splits.val)} val rows; "
              f"output {out}")
    # The model, tokenizer and libraries (~500k Python objects) live through training; frozen, they are skipped by
    # the collector's full passes, which the Trainer and the steady allocation of autograd objects trigger (each
    # pass ~0.15 s). Unfrozen when sft returns, so an in-process caller's garbage is collected as usual.
    gc.freeze()
    gc.enable()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except (RuntimeError, MemoryError) as err:
        if is_out_of_memory(err):
            raise SwiftlikeError(oom_message(args)) from None
        raise
    metrics = dict(result.metrics)
    if has_eval:
        metrics.update(trainer.evaluate())
    last = out / f"checkpoint-{trainer.state.global_step}"
    if state.is_main_process:
        if log_file.exists():
            plot_loss(log_file, out / "loss.png")
        metrics["wall_s"] = round(time.perf_counter() - t_start, 1)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _summary(out, last, model_type, args, metrics)
    return {"run_dir": out, "last_checkpoint": last, "metrics": metrics}


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "out of memory" in text.lower() or "can't allocate memory" in text)


def oom_message(args) -> str:
    """The levers, in the order that usually helps most, with the values this run used."""
    levers = [f"--per_device_train_batch_size {max(1, args.per_device_train_batch_size // 2)} with "
              f"--gradient_accumulation_steps {args.gradient_accumulation_steps * 2}",
              f"--max_length {max(128, args.max_length // 2)}"]
    if not args.gradient_checkpointing:
        levers.append("--gradient_checkpointing true")
    if args.train_type in ("full", "freeze"):
        levers.append("--train_type lora")
    if not args.quant_bits:
        levers.append("--quant_bits 4 (QLoRA)")
    return "out of memory while training; try " + ", ".join(levers)


def _tuner_config(model, args) -> dict:
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        cfg = peft_config.get("default")
        return json.loads(json.dumps(cfg.to_dict(), default=lambda o: sorted(o) if isinstance(o, set) else str(o)))
    return {"train_type": args.train_type, "trainable_layers": args.trainable_layers,
            "freeze_ratio": args.freeze_ratio}


def _args_json(args, resolved, template) -> dict:
    data = asdict(args)
    data["model_type"] = args.model_type or resolved.spec.name
    data["model_dir"] = str(resolved.path)
    data["template"] = template.name
    return data


def _summary(out: Path, last: Path, model_type: str, args, metrics: dict) -> None:
    loss = metrics.get("train_loss")
    eval_loss = metrics.get("eval_loss")
    lines = [
        "",
        "=" * 78,
        f"swiftlike sft done in {metrics.get('wall_s', 0):.0f}s: train loss {loss:.4f}" if loss is not None
        else "swiftlike sft done",
    ]
    if eval_loss is not None:
        lines[-1] += f", eval loss {eval_loss:.4f}"
    lines += [
        f"  adapter:   {last}" if args.train_type in ("lora", "dora", "qlora") else f"  model:     {last}",
        f"  logs:      {out / 'logging.jsonl'}  (loss curve: {out / 'loss.png'})",
        f"  chat:      swiftlike infer --ckpt_dir {last}",
    ]
    if args.train_type in ("lora", "dora", "qlora"):
        lines.append(f"  merge:     swiftlike merge-lora --ckpt_dir {last}")
    lines.append("=" * 78)
    print("\n".join(lines))
