"""The HF Trainer with what it lacks for SFT: loss (and logits) only at supervised positions, atomic
checkpoints with a manifest (a mixin the other stages' TRL trainers use too), and a logging.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

from .atomic_checkpoints import AtomicCheckpoints

IGNORE_INDEX = -100


class SwiftlikeTrainer(AtomicCheckpoints, Trainer):
    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy over supervised positions only: the lm_head runs on those positions alone
        (`logits_to_keep` takes an index tensor), which on SFT data skips half the vocabulary projection."""
        labels = inputs.pop("labels")
        shift = labels[:, 1:]
        keep = (shift != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)  # positions predicting a supervised token
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long, device=labels.device)
        outputs = model(**inputs, logits_to_keep=keep + self._virtual_tokens())
        logits = outputs.logits  # [batch, len(keep), vocab]
        targets = shift[:, keep]
        loss_sum = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
        if num_items_in_batch is not None:
            # normalised over the whole accumulated (and, with DDP, all-device) batch: token-level mean loss
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes
            self.loss_is_scaled_for_ga = True
        else:
            loss = loss_sum / (targets != IGNORE_INDEX).sum().clamp(min=1)
            self.loss_is_scaled_for_ga = False
        return (loss, outputs) if return_outputs else loss

    def _virtual_tokens(self) -> int:
        """PEFT's prompt tuning and p-tuning prepend virtual tokens to every sequence (prefix tuning keeps them in
        the KV cache instead), which shifts every position of the logits by as many."""
        if getattr(self, "_n_virtual", None) is None:
            cfg = getattr(self.model, "active_peft_config", None) if hasattr(self.model, "peft_config") else None
            prepended = cfg is not None and str(getattr(cfg, "peft_type", "")).split(".")[-1] in (
                "PROMPT_TUNING", "P_TUNING")
            self._n_virtual = cfg.num_virtual_tokens * (cfg.num_transformer_submodules or 1) if prepended else 0
        return self._n_virtual

    # ------------------------------------------------------------------ per-step host work
    # The base class walks every module of the model several times per step (counting parameters for the FLOP
    # estimate, collecting parameters to clip). On a small model on the CPU that is ~15 ms a step.
    def floating_point_ops(self, inputs):
        main = getattr(self.model, "main_input_name", "input_ids")
        if main not in inputs or not hasattr(self.model, "num_parameters"):
            return 0
        if getattr(self, "_flop_params", None) is None:
            self._flop_params = self.model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main].numel() * self._flop_params

    def _clip_grad_norm(self, model):
        from accelerate.utils import DistributedType

        plain = self.accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU,
                                                      DistributedType.MULTI_GPU)
        if not plain or self._has_mixed_mesh_grads(model) or self.args.fp16:
            return super()._clip_grad_norm(model)
        if getattr(self, "_all_params", None) is None:
            self._all_params = list(model.parameters())
        # the same norm and clipping as the base class: parameters without a gradient add nothing to either
        return self.accelerator.clip_grad_norm_([p for p in self._all_params if p.grad is not None],
                                                self.args.max_grad_norm)

    def _get_num_items_in_batch(self, batch_samples, device):
        # The base class only counts when the model takes loss kwargs; we always normalise by tokens.
        count = sum((b["labels"][..., 1:] != IGNORE_INDEX).sum() for b in batch_samples if "labels" in b)
        if not torch.is_tensor(count):
            return None
        count = count.to(device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            count = self.accelerator.gather(count).sum()
        return count


class JsonlLogger(TrainerCallback):
    """logging.jsonl: one JSON object per log event (rank 0), plus tokens/s."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._last = None  # (time, tokens)

    def on_train_begin(self, args, state, control, **kw):
        import time

        self._last = (time.perf_counter(), state.num_input_tokens_seen or 0)
        if state.global_step and state.is_world_process_zero and self.path.exists():
            # resumed (after a kill, or on another process count): rows the interrupted run logged past the
            # checkpoint are trained again now, so they go rather than appear twice (as does a line cut by a kill)
            rows = self.path.read_text().splitlines(keepends=True)
            kept = [r for r in rows if _step(r) is not None and _step(r) <= state.global_step]
            if len(kept) != len(rows):
                tmp = self.path.with_suffix(".jsonl.tmp")
                tmp.write_text("".join(kept))
                tmp.replace(self.path)

    def on_log(self, args, state, control, logs=None, **kw):
        import time

        if not state.is_world_process_zero or not logs:
            return
        now, seen = time.perf_counter(), state.num_input_tokens_seen
        if self._last is not None and seen and seen > self._last[1] and now > self._last[0]:
            logs["tokens_per_s"] = round((seen - self._last[1]) / (now - self._last[0]), 1)
        self._last = (now, seen)
        from .outputs import finite

        row = finite({"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return None


class SaveAtEnd(TrainerCallback):
    """Always checkpoint the last step, so the run's final adapter exists whatever save_steps was."""

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= state.max_steps:
            control.should_save = True
        return control
