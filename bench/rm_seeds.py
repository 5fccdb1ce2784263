"""The reward-model outcome of the preference benchmark over several seeds: for each seed, `swiftlike rlhf --rlhf_type
rm` on ../shared/bench/pref_train.jsonl (the embedded model, ChatML, batch 4, 1 epoch, plus any flags given after
`--`), then `swiftlike eval` of the checkpoint on pref_heldout.jsonl. Prints each seed's held-out accuracy and its
pairs ranked right by kind (the question types of ../shared/bench/eval_pref.py), then the spread.

    python bench/rm_seeds.py --work /tmp/rms                       # LoRA, lr 1e-4
    python bench/rm_seeds.py --work /tmp/rms -- --train_type freeze --trainable_layers 4
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "bench"


def kind(question: str, chosen: str) -> str:
    if "synonym" in question:
        return "one-word"
    if "capital" in question:
        return "capital"
    return "sum" if "=" in chosen else "identity"


def swiftlike(*args) -> None:
    proc = subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"swiftlike {args[0]} failed:\n{proc.stderr[-3000:]}")


def one_seed(work: Path, seed: int, extra: list) -> dict:
    out = work / f"seed{seed}"
    start = time.time()
    swiftlike("rlhf", "--rlhf_type", "rm", "--model_type", "smollm2-135m-instruct", "--template", "chatml",
              "--dataset", SHARED / "pref_train.jsonl", "--per_device_train_batch_size", 4, "--num_train_epochs", 1,
              "--seed", seed, "--output_dir", out, "--add_output_dir_suffix", "false", "--report_to", "none", *extra)
    train_s = time.time() - start
    ckpt = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    swiftlike("eval", "--ckpt_dir", ckpt, "--val_dataset", SHARED / "pref_heldout.jsonl", "--output_dir", out,
              "--record", "false")
    result = sorted((out / "eval_result").iterdir())[-1]
    metrics = json.loads((result / "metrics.json").read_text())["models"][ckpt.name]
    by_kind: dict = {}
    for line in (result / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        score = p["scores"][ckpt.name]
        counts = by_kind.setdefault(kind(p["prompt"][-1]["content"], p["chosen"]), [0, 0])
        counts[0] += score["chosen"] > score["rejected"]
        counts[1] += 1
    return {"seed": seed, "accuracy": metrics["accuracy"], "train_s": round(train_s, 1),
            "by_kind": {k: f"{a}/{b}" for k, (a, b) in sorted(by_kind.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="where the runs go (one directory per seed)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    ap.add_argument("extra", nargs="*", help="flags for swiftlike rlhf, after --")
    args = ap.parse_args()
    if not (SHARED / "pref_train.jsonl").exists():
        sys.exit(f"{SHARED}: the benchmark data is not beside the checkout")
    print("flags:", " ".join(args.extra) or "(defaults: LoRA r8, lr 1e-4)")
    runs = []
    for seed in args.seeds:
        run = one_seed(args.work, seed, args.extra)
        runs.append(run)
        print(f"seed {seed}: accuracy {run['accuracy']:.3f}  {run['by_kind']}  (trained in {run['train_s']} s)",
              flush=True)
    accuracies = [r["accuracy"] for r in runs]
    print(f"held-out accuracy over {len(runs)} seeds: min {min(accuracies):.3f}, max {max(accuracies):.3f}, "
          f"mean {sum(accuracies) / len(accuracies):.3f}; target 0.90 met by {sum(a >= 0.9 for a in accuracies)}")


if __name__ == "__main__":
    main()
