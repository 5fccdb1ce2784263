"""One DPO training step (policy forward + reference forward + backward), swiftlike's packed pairs against TRL's
padded batches, interleaved in one process on the same model and the same pairs.

    SWIFTLIKE_HOME=/tmp/slhome python bench/dpo_step.py [--steps 12] [--batch 4]

SmolLM2-135M-Instruct (embedded), ChatML, LoRA r8 alpha 32 all-linear, fp32 on CPU, rows of
../shared/bench/pref_train.jsonl in order. The first two steps of each kind are warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from swiftlike.train.rlhf import recipe_for
    from swiftlike.train.rlhf.arguments import RlhfArguments

    out = tempfile.mkdtemp(prefix="dpo-step-")
    recipe = recipe_for(RlhfArguments(
        rlhf_type="dpo", model_type="smollm2-135m-instruct", template="chatml", dataset=str(SHARED / "pref_train.jsonl"),
        output_dir=out, max_steps=10, per_device_train_batch_size=args.batch, lora_rank=8, lora_alpha=32,
        target_modules=["all-linear"], report_to=["none"]))
    for phase in ("check", "resolve", "setup_tokenizer", "setup_data", "setup_output", "setup_model", "setup_trainer"):
        getattr(recipe, phase)()
    trainer, model, data = recipe.trainer, recipe.trainer.model, recipe.train_data
    collators = {"swiftlike packed": trainer.data_collator,
                 "TRL padded": DataCollatorForPreference(pad_token_id=recipe.tokenizer.pad_token_id)}
    model.train()
    times = {name: [] for name in collators}
    tokens = {name: [] for name in collators}
    for i in range(args.steps):
        feats = [data[j % len(data)] for j in range(args.batch * i, args.batch * (i + 1))]
        order = list(collators.items()) if i % 2 else list(collators.items())[::-1]
        for name, collate in order:
            batch = collate(feats)
            t0 = time.perf_counter()
            trainer.compute_loss(model, batch).backward()
            elapsed = time.perf_counter() - t0
            model.zero_grad(set_to_none=True)
            if i >= 2:
                times[name].append(elapsed)
                ids = batch.get("swiftlike_packed_ids", batch["input_ids"])
                tokens[name].append(ids.numel())
    recipe.discard_output()
    print(f"torch threads {torch.get_num_threads()}, batch {args.batch} pairs, steps {args.steps - 2} each")
    for name in collators:
        print(f"{name:18s} median {statistics.median(times[name]) * 1000:7.0f} ms/step   "
              f"tokens per forward {statistics.mean(tokens[name]):6.0f} (padding included)")
    a, b = (statistics.median(times[n]) for n in collators)
    print(f"TRL padded / swiftlike packed = {b / a:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
