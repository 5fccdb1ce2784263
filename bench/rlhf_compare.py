"""The same DPO job with swiftlike, ms-swift (`swift rlhf --rlhf_type dpo`) and LLaMA-Factory (`stage: dpo`), each in
its own virtualenv as a user installs it (see sft_compare.py, `--install`), in one run.

SmolLM2-135M-Instruct (the embedded model), ChatML, LoRA r8 alpha 32 all-linear, dropout 0, beta 0.1, sigmoid loss,
batch 4 pairs, 1 epoch, max_length 256, lr 1e-4 (cosine, warmup 5 %, weight decay 0.1), fp32 on CPU, seed 42,
gradient checkpointing off; data ../shared/bench/pref_train.jsonl (400 pairs, ms-swift format). Prints whole-process
wall time, peak RSS and the neutral judge's figures (../shared/bench/eval_pref.py on pref_heldout.jsonl, ChatML).
`--extra "--rpo_alpha 1.0"` adds options to swiftlike's run only (e.g. the README's quick-start).

    python bench/rlhf_compare.py [--venvs /work/venvs] [--only swiftlike,ms-swift,llamafactory] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sft_compare import SHARED, install_peer, machine, run_rounds, timed, versions  # noqa: E402

CFG = dict(rank=8, alpha=32, batch=4, epochs=1, max_length=256, lr=1e-4, warmup=0.05, wd=0.1, seed=42, beta=0.1)
COMMON = ["--lora_rank", str(CFG["rank"]), "--lora_alpha", str(CFG["alpha"]), "--lora_dropout", "0",
          "--target_modules", "all-linear", "--per_device_train_batch_size", str(CFG["batch"]),
          "--num_train_epochs", str(CFG["epochs"]), "--max_length", str(CFG["max_length"]),
          "--learning_rate", str(CFG["lr"]), "--warmup_ratio", str(CFG["warmup"]), "--weight_decay", str(CFG["wd"]),
          "--torch_dtype", "float32", "--seed", str(CFG["seed"]), "--beta", str(CFG["beta"]), "--report_to", "none",
          "--logging_steps", "10"]


def run_swiftlike(model_dir, data, work, extra):
    out = work / "swiftlike"
    cmd = [str(Path(sys.executable).with_name("swiftlike")), "rlhf", "--rlhf_type", "dpo", "--model", str(model_dir),
           "--template", "chatml", "--dataset", str(data), "--train_type", "lora", *COMMON,
           "--output_dir", str(out), "--add_output_dir_suffix", "False", *extra]
    wall, rss, rc = timed(cmd, log=work / "swiftlike.log")
    ckpt = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]), default=None)
    return dict(wall=wall, rss=rss, rc=rc, adapter=ckpt)


def run_msswift(swift, model_dir, data, work):
    out = work / "ms-swift"
    cmd = [swift, "rlhf", "--rlhf_type", "dpo", "--model", str(model_dir), "--model_type", "llama", "--template",
           "chatml", "--tuner_type", "lora", "--dataset", str(data), *COMMON, "--loss_type", "sigmoid",
           "--gradient_accumulation_steps", "1", "--gradient_checkpointing", "false", "--split_dataset_ratio", "0",
           "--output_dir", str(out), "--dataset_num_proc", "1", "--dataloader_num_workers", "0",
           "--save_only_model", "true"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "USE_HF": "1", "HF_HUB_OFFLINE": "1"}
    wall, rss, rc = timed(cmd, env=env, log=work / "ms-swift.log")
    ckpts = sorted(out.glob("v*/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return dict(wall=wall, rss=rss, rc=rc, adapter=ckpts[-1] if ckpts else None)


def run_llamafactory(cli, model_dir, data, work):
    out = work / "llamafactory"
    ddir = work / "lf-data"
    ddir.mkdir(exist_ok=True)
    rows = [json.loads(line) for line in Path(data).read_text().splitlines() if line.strip()]
    lf = [{"conversations": [{"from": "human" if m["role"] == "user" else m["role"], "value": m["content"]}
                             for m in r["messages"][:-1]],
           "chosen": {"from": "gpt", "value": r["messages"][-1]["content"]},
           "rejected": {"from": "gpt", "value": r["rejected_response"]}} for r in rows]
    (ddir / "pref.json").write_text(json.dumps(lf, ensure_ascii=False))
    (ddir / "dataset_info.json").write_text(json.dumps({"bench": {
        "file_name": "pref.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}}))
    cfg = {
        "model_name_or_path": str(model_dir), "stage": "dpo", "do_train": True, "finetuning_type": "lora",
        "lora_rank": CFG["rank"], "lora_alpha": CFG["alpha"], "lora_dropout": 0.0, "lora_target": "all",
        "pref_beta": CFG["beta"], "pref_loss": "sigmoid", "dataset": "bench", "dataset_dir": str(ddir),
        "template": "chatml", "cutoff_len": CFG["max_length"], "overwrite_cache": True,
        "preprocessing_num_workers": 1, "output_dir": str(out), "logging_steps": 10, "save_strategy": "no",
        "per_device_train_batch_size": CFG["batch"], "gradient_accumulation_steps": 1, "learning_rate": CFG["lr"],
        "num_train_epochs": float(CFG["epochs"]), "lr_scheduler_type": "cosine", "warmup_ratio": CFG["warmup"],
        "weight_decay": CFG["wd"], "seed": CFG["seed"], "report_to": "none", "disable_gradient_checkpointing": True,
        "overwrite_output_dir": True, "dataloader_num_workers": 0,
    }
    yaml = work / "lf.yaml"
    yaml.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    wall, rss, rc = timed([cli, "train", str(yaml)], env=env, log=work / "llamafactory.log")
    return dict(wall=wall, rss=rss, rc=rc, adapter=out if (out / "adapter_config.json").exists() else None)


def judge(model_dir, adapter) -> dict:
    """The neutral judge's last two lines: shares by kind, then pref_acc / implicit_acc / margin / behaviour."""
    proc = subprocess.run([sys.executable, str(SHARED / "eval_pref.py"), str(model_dir), str(adapter or "-"),
                           str(SHARED / "pref_heldout.jsonl"), "chatml"], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    figures = dict(re.findall(r"(\w+) ([-\d.]+)", lines[-1])) if lines else {}
    return {"by_kind": lines[-2] if len(lines) > 1 else "", **{k: float(v) for k, v in figures.items()}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venvs", default="/work/venvs")
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--only", default="swiftlike,ms-swift,llamafactory")
    ap.add_argument("--work", default=None)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--extra", default="", help="more options for swiftlike's run")
    args = ap.parse_args()
    venvs = Path(args.venvs)
    if args.install:
        for name in ("llamafactory", "msswift"):
            install_peer(venvs, name)
    swift, lf = venvs / "msswift" / "bin" / "swift", venvs / "llamafactory" / "bin" / "llamafactory-cli"
    from swiftlike.models import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct").path
    data = SHARED / "pref_train.jsonl"
    work = Path(args.work or tempfile.mkdtemp(prefix="rlhf-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    tools = []
    if "swiftlike" in only:
        tools.append(("swiftlike", lambda w: run_swiftlike(model_dir, data, w, shlex.split(args.extra))))
    if "ms-swift" in only and swift.exists():
        tools.append(("ms-swift 4.6.0", lambda w: run_msswift(str(swift), model_dir, data, w)))
    if "llamafactory" in only and lf.exists():
        tools.append(("LLaMA-Factory 0.9.5", lambda w: run_llamafactory(str(lf), model_dir, data, w)))
    results = run_rounds(tools, args.repeat, work, round_dirs=True)
    for r in results.values():
        r["judge"] = judge(model_dir, r["adapter"]) if r["adapter"] else {}
    base = judge(model_dir, None)
    print(f"work dir: {work}\nconfig: {CFG}  swiftlike extra: {args.extra or '-'}")
    print(f"machine: {machine()}")
    print(f"swiftlike: {versions(Path(sys.executable))}")
    for name, script in (("ms-swift", swift), ("LLaMA-Factory", lf)):
        if script.exists():
            print(f"{name}: {versions(script.with_name('python'))}")
    print(f"base model: behaviour {base.get('behaviour')}  ({base.get('by_kind')})\n")
    print(f"{'tool':22s} {'rc':>3s} {'wall s':>8s} {'peak RSS MiB':>13s} {'implicit':>9s} {'margin':>8s} "
          f"{'behaviour':>10s}  by kind")
    for name, r in results.items():
        j = r["judge"]
        print(f"{name:22s} {r['rc']:3d} {r['wall']:8.1f} {r['rss']:13.0f} {j.get('implicit_acc', float('nan')):9.3f} "
              f"{j.get('margin', float('nan')):8.2f} {j.get('behaviour', float('nan')):10.3f}  {j.get('by_kind', '')}")
    ours = results.get("swiftlike")
    peers = {k: v for k, v in results.items() if k != "swiftlike" and v["rc"] == 0}
    if ours and peers:
        fastest = min(peers.items(), key=lambda kv: kv[1]["wall"])
        print(f"\nwall: {fastest[0]} / swiftlike = {fastest[1]['wall'] / ours['wall']:.2f}x (target >= 2.00x)")
        print(f"peak RSS: swiftlike / lowest peer = {ours['rss'] / min(v['rss'] for v in peers.values()):.2f} "
              f"(target <= 1.00)")
        best = max((v["judge"].get("behaviour", 0) for v in peers.values()), default=0)
        print(f"behaviour: swiftlike {ours['judge'].get('behaviour')} vs best peer {best} (target >=)")


if __name__ == "__main__":
    main()
