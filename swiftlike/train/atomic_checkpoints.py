"""Atomic checkpoints for any transformers Trainer, in a module light enough for the stages to import before they
check their arguments (torch loads only when a checkpoint is saved)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

STAGING = ".staging"


class AtomicCheckpoints:
    """Mixin for any transformers Trainer (ours, TRL's): each checkpoint is written into a staging dir, completed by
    `after_checkpoint_save(staged_dir, trainer)` (template, args, card, manifest), then renamed into place, so a
    kill never leaves half a checkpoint that resume would pick up."""

    def __init__(self, *a, after_checkpoint_save=None, **kw):
        super().__init__(*a, **kw)
        self.after_checkpoint_save = after_checkpoint_save
        self._staging = False

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        if getattr(self.args, "fsdp_plugin_args", None) and not self.is_fsdp_enabled:
            from .fsdp import enable_on_cpu

            enable_on_cpu(self)  # --fsdp on CPU processes (gloo), which accelerate leaves as plain DDP

    def save_model(self, output_dir=None, _internal_call=False):
        if getattr(self, "is_fsdp_enabled", False) and hasattr(self.accelerator.unwrap_model(self.model),
                                                                "peft_config"):
            from .fsdp import save_gathered_adapter

            save_gathered_adapter(self, output_dir or self.args.output_dir)  # whole tensors, rank 0 writes
            return
        super().save_model(output_dir, _internal_call)

    def _get_output_dir(self, trial):
        out = super()._get_output_dir(trial)
        return os.path.join(out, STAGING) if self._staging else out

    def _save_checkpoint(self, model, trial):
        run_dir = super()._get_output_dir(trial)
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        # every rank writes into the staged checkpoint (its rng_state_<rank>.pth; shards under FSDP/DeepSpeed), with
        # no barrier of the Trainer's after it: wait for all before rank 0 completes and renames it
        self._barrier()
        name = f"checkpoint-{self.state.global_step}"
        staged = Path(run_dir) / STAGING / name
        final = Path(run_dir) / name
        if self.args.should_save:
            if self.after_checkpoint_save is not None:
                self.after_checkpoint_save(staged, self)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(Path(run_dir) / STAGING, ignore_errors=True)
            from .outputs import rotate_checkpoints

            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self._barrier()  # no rank trains on (and may save again) before the checkpoint is in place

    def _barrier(self) -> None:
        if self.args.parallel_mode.value == "distributed" and _distributed_ready():
            import torch

            torch.distributed.barrier()


def _distributed_ready() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()
