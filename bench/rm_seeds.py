"""The reward-model outcome of the preference benchmark over several seeds: for each seed, `swiftlike rlhf --rlhf_type
rm` on ../shared/bench/pref_train.jsonl (the embedded model, ChatML, batch 4, 1 epoch, plus any flags given after
`--`), then `swiftlike eval` of the checkpoint on pref_heldout.jsonl. Prints each seed's held-out accuracy and its
pairs ranked right by kind (the question types of ../shared/bench/eval_pref.py), then the spread.

`--fresh_sums N` also ranks N sum pairs made like the benchmark's (the same three phrasings, the rejected sum off by
±1, ±2, ±3 or +10, operands 1-60, none of the benchmark's own sums; seeded), with every checkpoint, and counts the
pairs whose summed answer log-probability under the base model prefers the right sum: 22 held-out sums are too few to
tell a reward model that checks sums from a lucky one.

    python bench/rm_seeds.py --work /tmp/rms                       # LoRA, lr 1e-4
    python bench/rm_seeds.py --work /tmp/rms --fresh_sums 200 -- --train_type freeze --trainable_layers 4
"""
from __future__ import annotations

import argparse
import json
import random
import re
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


SUM = re.compile(r"(\d+) \+ (\d+) = (\d+)\.")


def fresh_sums(n: int, path: Path) -> Path:
    """n sum pairs in the benchmark's ms-swift format, none with operands the benchmark's own sums use."""
    taken = set()
    for name in ("pref_train.jsonl", "pref_heldout.jsonl"):
        for line in (SHARED / name).read_text().splitlines():
            m = SUM.match(json.loads(line)["messages"][-1]["content"]) if line.strip() else None
            if m:
                taken.add((int(m[1]), int(m[2])))
    rng, rows = random.Random(0), []
    while len(rows) < n:
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        if (a, b) in taken:
            continue
        taken.add((a, b))
        wrong = a + b + rng.choice([1, -1, 2, -2, 3, -3, 10])
        question = rng.choice([f"What is {a} + {b}?", f"Compute {a} plus {b}.", f"Add {a} and {b}."])
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": f"{a} + {b} = {a + b}."}],
                     "rejected_response": f"{a} + {b} = {wrong}."})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def log_prob_preference(path: Path) -> int:
    """Pairs whose summed answer log-probability under the base model is higher for the chosen answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swiftlike.models import resolve_model
    from swiftlike.templates import get_template
    from swiftlike.train.rlhf.encode import encode_answer

    model_dir = resolve_model("smollm2-135m-instruct").path
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    template, right = get_template("chatml", tok), 0
    for line in path.read_text().splitlines():
        row = json.loads(line)
        scores = []
        for answer in (row["messages"][-1]["content"], row["rejected_response"]):
            prompt, ids = encode_answer(template, row["messages"][:-1], answer)
            x = torch.tensor([prompt + ids])
            with torch.no_grad():
                logp = torch.log_softmax(model(x).logits[0, :-1], -1).gather(1, x[0, 1:, None])[-len(ids):]
            scores.append(logp.sum().item())
        right += scores[0] > scores[1]
    return right


def one_seed(work: Path, seed: int, extra: list, fresh: Path | None = None) -> dict:
    out = work / f"seed{seed}"
    start = time.time()
    swiftlike("rlhf", "--rlhf_type", "rm", "--model_type", "smollm2-135m-instruct", "--template", "chatml",
              "--dataset", SHARED / "pref_train.jsonl", "--per_device_train_batch_size", 4, "--num_train_epochs", 1,
              "--seed", seed, "--output_dir", out, "--add_output_dir_suffix", "false", "--report_to", "none", *extra)
    train_s = time.time() - start
    ckpt = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    held = SHARED / "pref_heldout.jsonl"
    swiftlike("eval", "--ckpt_dir", ckpt, "--val_dataset", held, *([fresh] if fresh else []), "--output_dir", out,
              "--record", "false")
    result = sorted((out / "eval_result").iterdir())[-1]
    metrics = json.loads((result / "metrics.json").read_text())["models"][ckpt.name]
    by_kind: dict = {}
    for line in (result / "predictions.jsonl").read_text().splitlines():
        p = json.loads(line)
        if fresh and p["location"].startswith(str(fresh)):
            continue
        score = p["scores"][ckpt.name]
        counts = by_kind.setdefault(kind(p["prompt"][-1]["content"], p["chosen"]), [0, 0])
        counts[0] += score["chosen"] > score["rejected"]
        counts[1] += 1
    return {"seed": seed, "accuracy": metrics.get(f"accuracy[{held}]", metrics["accuracy"]),
            "fresh": metrics.get(f"accuracy[{fresh}]"), "train_s": round(train_s, 1),
            "by_kind": {k: f"{a}/{b}" for k, (a, b) in sorted(by_kind.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="where the runs go (one directory per seed)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1])
    ap.add_argument("--fresh_sums", type=int, default=0, help="also rank this many new sum pairs")
    ap.add_argument("extra", nargs="*", help="flags for swiftlike rlhf, after --")
    args = ap.parse_args()
    if not (SHARED / "pref_train.jsonl").exists():
        sys.exit(f"{SHARED}: the benchmark data is not beside the checkout")
    print("flags:", " ".join(args.extra) or "(defaults: LoRA r8, lr 1e-4)")
    fresh = None
    if args.fresh_sums:
        fresh = fresh_sums(args.fresh_sums, args.work / "fresh_sums.jsonl")
        print(f"{args.fresh_sums} fresh sum pairs ({fresh}): the base model's summed answer log-probability prefers "
              f"the right sum on {log_prob_preference(fresh)}", flush=True)
    runs = []
    for seed in args.seeds:
        run = one_seed(args.work, seed, args.extra, fresh)
        runs.append(run)
        print(f"seed {seed}: held-out accuracy {run['accuracy']:.3f}  {run['by_kind']}" +
              (f"  fresh sums {run['fresh']:.3f}" if fresh else "") + f"  (trained in {run['train_s']} s)",
              flush=True)
    accuracies = [r["accuracy"] for r in runs]
    print(f"held-out accuracy over {len(runs)} seeds: min {min(accuracies):.3f}, max {max(accuracies):.3f}, "
          f"mean {sum(accuracies) / len(accuracies):.3f}; target 0.90 met by {sum(a >= 0.9 for a in accuracies)}")


if __name__ == "__main__":
    main()
