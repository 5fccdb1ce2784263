"""Two behaviours in one adapter: `swiftlike adapter merge` (PEFT add_weighted_adapter) of an identity adapter and a
one-word-answers adapter, measured on held-out probes against each source alone and the base.

    SWIFTLIKE_HOME=/tmp/slhome python bench/merge_adapters.py [--steps_a 40] [--steps_b 30] [--lr 1e-3]
                                                              [--num_threads N] [--work DIR]

On the embedded SmolLM2-135M-Instruct (LoRA r8/alpha32 all-linear, batch 4, fp32 on CPU):
  A: identity ("Nova" by "Orbit Labs") on ../shared/bench/train.jsonl;
  B: one-word answers on the single-word rows of ../shared/bench/pref_train.jsonl used as sft data (the messages
     end with the chosen answer);
then A+B merged into the adapter store with `cat` and with `ties` (density 0.5), and greedy answers scored on
  identity: the 6 identity rows of heldout.jsonl — share of answers naming Nova or Orbit Labs;
  one-word: the single-word rows of pref_heldout.jsonl — share of answers of one word (and of at most three words,
  the measure of the shared judge eval_pref.py).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "bench"
MODEL = "smollm2-135m-instruct"


def rows(path, keep):
    return [r for r in (json.loads(line) for line in open(path, encoding="utf-8")) if keep(r)]


def is_one_word(row) -> bool:
    return "single word" in row["messages"][-2]["content"]


def train(name, data, steps, lr, work) -> tuple[Path, float]:
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    t = time.perf_counter()
    run = sft(SftArguments(model_type=MODEL, dataset=[str(data)], output_dir=str(work / name), max_steps=steps,
                           save_steps=steps, per_device_train_batch_size=4, learning_rate=lr, lora_rank=8,
                           lora_alpha=32, lora_dropout=0.0, max_length=256, warmup_ratio=0.05, logging_steps=10,
                           report_to=["none"], seed=42, add_output_dir_suffix=False))
    return run["last_checkpoint"], time.perf_counter() - t


def score(ckpt, identity, one_word) -> dict:
    from swiftlike.infer import generate, load_checkpoint

    loaded = load_checkpoint(ckpt) if ckpt else load_checkpoint(None, model_type=MODEL)
    named = [generate(loaded.model, loaded.template, r["messages"][:-1], max_new_tokens=40) for r in identity]
    short = [generate(loaded.model, loaded.template, r["messages"][:-1], max_new_tokens=16) for r in one_word]
    words = [len(re.findall(r"\w+", s)) for s in short]
    return {"identity": sum(("Nova" in a or "Orbit" in a) for a in named) / len(named),
            "one_word": sum(w == 1 for w in words) / len(words),
            "le3_words": sum(1 <= w <= 3 for w in words) / len(words),
            "examples": [named[0], short[0]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps_a", type=int, default=40, help="Identity adapter steps (batch 4).")
    p.add_argument("--steps_b", type=int, default=30, help="One-word adapter steps (batch 4).")
    p.add_argument("--lr", type=float, default=1e-3, help="Learning rate of both adapters.")
    p.add_argument("--num_threads", type=int, default=None, help="torch threads (1 on a shared machine: several "
                   "processes with a thread per core each slow each other down many times over).")
    p.add_argument("--density", type=float, default=0.5, help="ties density.")
    p.add_argument("--work", default=None, help="Keep runs here (default: a temp dir).")
    p.add_argument("--probes", type=int, default=None, help="Score only the first N probes of each kind (a smoke "
                   "run).")
    a = p.parse_args()

    from swiftlike.combine import merge_adapters

    work = Path(a.work or tempfile.mkdtemp(prefix="swiftlike-merge-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    one_word_data = work / "one_word_sft.jsonl"
    one_word_data.write_text("".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) + "\n"
                                     for r in rows(SHARED / "pref_train.jsonl", is_one_word)))
    identity_probes = rows(SHARED / "heldout.jsonl", lambda r: any(k in r["messages"][-1]["content"]
                                                                   for k in ("Nova", "Orbit")))
    one_word_probes = rows(SHARED / "pref_heldout.jsonl", is_one_word)
    if a.probes:
        identity_probes, one_word_probes = identity_probes[:a.probes], one_word_probes[:a.probes]

    if a.num_threads:
        import torch

        torch.set_num_threads(a.num_threads)
    ckpt_a, wall_a = train("identity", SHARED / "train.jsonl", a.steps_a, a.lr, work)
    ckpt_b, wall_b = train("one-word", one_word_data, a.steps_b, a.lr, work)
    merged, walls = {}, {}
    for method, extra in (("cat", {}), ("ties", {"density": a.density})):
        t = time.perf_counter()
        made = merge_adapters([str(ckpt_a), str(ckpt_b)], method=method, name=f"bench-nova-oneword-{method}",
                              overwrite=True, **extra)
        walls[method] = time.perf_counter() - t
        merged[method] = made.name

    results = {}
    for label, ckpt in (("base", None), ("A identity", ckpt_a), ("B one-word", ckpt_b),
                        ("merged cat", merged["cat"]), (f"merged ties (d={a.density})", merged["ties"])):
        results[label] = score(ckpt, identity_probes, one_word_probes)
        print(f"scored {label}: {results[label]}", file=sys.stderr)

    print(f"\ntrain walls: A {wall_a:.0f} s ({a.steps_a} steps), B {wall_b:.0f} s ({a.steps_b} steps); merge walls: "
          + ", ".join(f"{m} {w:.1f} s" for m, w in walls.items()))
    print(f"probes: {len(identity_probes)} identity (heldout.jsonl), {len(one_word_probes)} one-word "
          f"(pref_heldout.jsonl)\n")
    print("| adapter | identity (names Nova/Orbit Labs) | one-word answers | at most 3 words |")
    print("|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['identity']:.2f} | {r['one_word']:.2f} | {r['le3_words']:.2f} |")
    print()
    for label, r in results.items():
        print(f"{label}: {r['examples']}")


if __name__ == "__main__":
    main()
