"""Each tuner on the sft benchmark job, beside LLaMA-Factory 0.9.5 where it has the same method, in one run.

The job of bench/sft_compare.py (SmolLM2-135M-Instruct, ChatML, batch 4, max_length 256, lr 1e-4 cosine, warmup 5 %,
weight decay 0.1, fp32 on CPU, seed 42; LoRA methods r8 alpha 32 all-linear), cut to --max_steps (default 30) so that
every method fits in one sitting. Per method and tool: trainable parameters (as each tool logs them), whole-process
wall, peak RSS, train loss and the held-out loss of the neutral script (plain transformers + peft; a whole-model
checkpoint for GaLore, BAdam and LLaMA Pro). With --repeat N the tools alternate N rounds and medians are reported.
Targets (issue 17): ours no slower and no larger than LLaMA-Factory's for the same method, held-out loss within 3 %.

LLaMA-Factory's GaLore and BAdam need the same packages its docs name (as a user of it installs them):
    VENVS/llamafactory/bin/pip install galore-torch badam
swiftlike's packs (galore, badam, llama-pro) are pip-installed into WORK/packs and put on the PYTHONPATH of our runs
only, so the benchmark leaves the environment as it found it.

    SWIFTLIKE_HOME=/tmp/slhome python bench/tuners.py [--only lora,dora,...] [--max_steps 30] [--repeat 2]
                                                      [--seed 42] [--same_order] [--venvs /work/venvs] [--work DIR]

Data order: swiftlike shuffles the rows with the seed when it loads them (swiftlike.data.loading.load_dataset), then
the Trainer's sampler permutes them; LLaMA-Factory only the latter (the same permutation). So in 30 updates each tool
sees a different 120 of the 400 rows, and a single run's held-out loss carries that. --same_order gives
LLaMA-Factory the rows in swiftlike's load order, so both train on the same batches (a control, not a user's run).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_compare import CFG, ROOT, SHARED, heldout_loss, run_llamafactory, run_rounds, run_swiftlike  # noqa: E402

# method -> (swiftlike flags, LLaMA-Factory YAML keys or None where it has no same method)
GALORE = dict(rank=16, update_proj_gap=200, scale=2.0)
BADAM_EVERY = 5
METHODS = {
    "lora": ([], {}),
    "dora": (["--train_type", "dora"], {"use_dora": True}),
    "pissa": (["--init_lora_weights", "pissa_niter_16"], {"pissa_init": True, "pissa_iter": 16, "pissa_convert": True}),
    "loraplus": (["--loraplus_lr_ratio", "16"], {"loraplus_lr_ratio": 16.0}),
    "galore": (["--train_type", "galore", "--tuner_args", json.dumps(GALORE)],
               {"finetuning_type": "full", "use_galore": True, "galore_target": "all", "galore_rank": GALORE["rank"],
                "galore_update_interval": GALORE["update_proj_gap"], "galore_scale": GALORE["scale"],
                # its GaLore builds its own AdamW and refuses transformers' default adamw_torch_fused
                "optim": "adamw_torch"}),
    "badam": (["--train_type", "badam", "--tuner_args",
               json.dumps({"switch_block_every": BADAM_EVERY, "switch_mode": "ascending"})],
              {"finetuning_type": "full", "use_badam": True, "badam_mode": "layer", "badam_switch_mode": "ascending",
               "badam_switch_interval": BADAM_EVERY}),
    # LLaMA-Factory's LLaMA Pro is a script (scripts/llama_pro.py) that is not in its wheel, then a freeze run:
    # not the same command a user of the wheel can run, so ours runs alone.
    "llama_pro": (["--train_type", "llama_pro", "--tuner_args", json.dumps({"num_expand": 6})], None),
}
PACKS = {"galore": "swiftlike-galore", "badam": "swiftlike-badam", "llama_pro": "swiftlike-llama-pro"}


def install_packs(names, target: Path) -> dict:
    """pip-install the packs these methods need into `target`; the environment of our runs with it on PYTHONPATH."""
    packs = sorted({PACKS[n] for n in names if n in PACKS})
    if packs:
        # built from copies: pip builds a local folder in place, and the build/ and *.egg-info it would leave in
        # packs/ put a second copy of the pack's entry point on the path of tests that load the pack from source
        sources = target.parent / "pack-sources"
        for p in packs:
            shutil.copytree(ROOT / "packs" / p, sources / p, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                        str(target), *(str(sources / p) for p in packs)], check=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}


def llamafactory(cli, model_dir, data, work, extra, name):
    r = run_llamafactory(cli, model_dir, data, work, extra, name=name)
    # with pissa_convert the top-level adapter belongs to the residual base it never saves; the adapter for the
    # original base is in pissa_converted/
    if r["adapter"] is not None and (Path(r["adapter"]) / "pissa_converted" / "adapter_config.json").exists():
        r["adapter"] = Path(r["adapter"]) / "pissa_converted"
    return r


def trainable(log: Path):
    """Trainable parameters as the tool logged them (swiftlike: 'N of M parameters trainable'; LLaMA-Factory:
    'trainable params: N')."""
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    found = re.findall(r"([\d,]+) of [\d,]+ parameters trainable", text) or re.findall(r"trainable params: ([\d,]+)",
                                                                                        text)
    return int(found[-1].replace(",", "")) if found else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(METHODS))
    ap.add_argument("--max_steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2, help="rounds of both tools per method; medians are reported")
    ap.add_argument("--venvs", default="/work/venvs")
    ap.add_argument("--llamafactory", default=None, help="default: VENVS/llamafactory/bin/llamafactory-cli")
    ap.add_argument("--work", default=None)
    ap.add_argument("--train", default=str(SHARED / "train.jsonl"))
    ap.add_argument("--heldout", default=str(SHARED / "heldout.jsonl"))
    ap.add_argument("--seed", type=int, default=CFG["seed"], help="both tools' seed (default 42)")
    ap.add_argument("--same_order", action="store_true",
                    help="give LLaMA-Factory the rows in the order swiftlike loads them (the same batches)")
    args = ap.parse_args()
    CFG["seed"] = args.seed  # read by both command builders
    names = args.only.split(",")
    lf = Path(args.llamafactory or Path(args.venvs) / "llamafactory" / "bin" / "llamafactory-cli")
    from swiftlike.models import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct").path
    work = Path(args.work or tempfile.mkdtemp(prefix="tuners-"))
    work.mkdir(parents=True, exist_ok=True)
    env = install_packs(names, work / "packs")
    rows = [json.loads(line) for line in Path(args.heldout).read_text().splitlines() if line.strip()]
    lf_train = args.train
    if args.same_order:
        lines = [line for line in Path(args.train).read_text().splitlines() if line.strip()]
        random.Random(args.seed).shuffle(lines)  # as load_dataset orders the rows it read
        lf_train = work / "train-swiftlike-order.jsonl"
        lf_train.write_text("\n".join(lines) + "\n")
    steps = ["--max_steps", str(args.max_steps)]
    table = {}
    for name in names:
        ours, theirs = METHODS[name]
        tools = [("swiftlike", lambda w, o=ours, n=name: run_swiftlike(model_dir, args.train, w, [*steps, *o],
                                                                       name=f"{n}-swiftlike", env=env))]
        if theirs is not None and lf.exists():
            tools.append(("LLaMA-Factory", lambda w, t=theirs, n=name: llamafactory(
                str(lf), model_dir, str(lf_train), w, {"max_steps": args.max_steps, **t}, name=f"{n}-llamafactory")))
        results = run_rounds(tools, args.repeat, work / name, round_dirs=True)
        for tool, r in results.items():
            suffix = "swiftlike" if tool == "swiftlike" else "llamafactory"
            r["trainable"] = trainable(work / name / "round0" / f"{name}-{suffix}.log")
            r["heldout"] = heldout_loss(model_dir, r["adapter"], rows) if r["adapter"] else None
        table[name] = results
        print(f"{name}: " + "; ".join(f"{t} {r['wall']:.1f} s, {r['rss']:.0f} MiB, held-out "
                                      f"{r['heldout'] if r['heldout'] is None else round(r['heldout'], 4)}"
                                      for t, r in results.items()), file=sys.stderr, flush=True)
    base = heldout_loss(model_dir, None, rows)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    order = ", LLaMA-Factory given swiftlike's row order" if args.same_order else ""
    print(f"work dir: {work}\nconfig: {CFG}, max_steps {args.max_steps}, {args.repeat} round(s), medians{order}\n"
          f"held-out loss of the untrained base: {base:.4f}\n")
    print(f"{'method':10} {'tool':14} {'rc':>3} {'trainable':>12} {'wall s':>7} {'RSS MiB':>8} {'train loss':>10} "
          f"{'held-out':>9}   ours/LF: wall  RSS  held-out")
    for name, results in table.items():
        for tool, r in results.items():
            line = (f"{name:10} {tool:14} {r['rc']:3d} {fmt(r['trainable'], '12,d')} {r['wall']:7.1f} {r['rss']:8.0f} "
                    f"{fmt(r['train_loss'], '10.4f')} {fmt(r['heldout'], '9.4f')}")
            peer = results.get("LLaMA-Factory")
            if tool == "swiftlike" and peer and peer["rc"] == 0 and r["rc"] == 0:
                held = r["heldout"] / peer["heldout"] if r["heldout"] and peer["heldout"] else None
                line += (f"   {r['wall'] / peer['wall']:.2f} {r['rss'] / peer['rss']:.2f} {fmt(held, '.3f')}"
                         f"  (walls {[round(w, 1) for w in r['walls']]} vs {[round(w, 1) for w in peer['walls']]})")
            print(line)
    print("\ntargets: wall <= 1.00, RSS <= 1.00, held-out <= 1.030 of LLaMA-Factory's for the same method")


if __name__ == "__main__":
    main()
