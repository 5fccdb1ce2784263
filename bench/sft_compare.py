"""The same LoRA job with swiftlike, ms-swift and LLaMA-Factory, each in its own virtualenv, from one run.

SmolLM2-135M-Instruct (the embedded model), ChatML, LoRA r8 alpha 32 all-linear, dropout 0, batch 4, 1 epoch,
max_length 256, lr 1e-4 (cosine, warmup 5 %, weight decay 0.1), fp32 on CPU, seed 42, gradient checkpointing off.
Prints whole-process wall time, peak RSS, train loss and held-out loss (one neutral script for all adapters).

The peers are installed as a user installs them (`--install` makes the virtualenvs that are missing):
    python3 -m venv VENVS/llamafactory && VENVS/llamafactory/bin/pip install llamafactory==0.9.5
    python3 -m venv VENVS/msswift && VENVS/msswift/bin/pip install torch==2.13.0 && \
        VENVS/msswift/bin/pip install ms-swift==4.6.0
and the versions of torch, transformers and peft each one resolved are printed with the results.

    python bench/sft_compare.py [--venvs /work/venvs] [--install] [--only swiftlike,ms-swift,llamafactory]
                                [--work DIR] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "bench"
CFG = dict(rank=8, alpha=32, batch=4, epochs=1, max_length=256, lr=1e-4, warmup=0.05, wd=0.1, seed=42)


def timed(cmd, env=None, cwd=None, log=None):
    """Run cmd in a fresh wrapper process; (wall seconds, peak RSS MiB of the tree, returncode)."""
    wrapper = ("import json,resource,subprocess,sys,time;t=time.perf_counter();"
               "rc=subprocess.call(sys.argv[1:]);w=time.perf_counter()-t;"
               "print('@@'+json.dumps([w,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,rc]),"
               "file=sys.stderr)")
    with open(log, "w") if log else open(os.devnull, "w") as out:
        proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, cwd=cwd, stdout=out,
                              stderr=subprocess.PIPE, text=True)
    if log:
        with open(log, "a") as out:
            out.write(proc.stderr)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def swiftlike_cmd(model_dir, data, out, *extra) -> list:
    """The benchmark job as a `swiftlike sft` command line (CFG), plus extra flags."""
    return [str(Path(sys.executable).with_name("swiftlike")), "sft", "--model", str(model_dir), "--template", "chatml",
            "--dataset", str(data), "--train_type", "lora", "--lora_rank", str(CFG["rank"]),
            "--lora_alpha", str(CFG["alpha"]), "--lora_dropout", "0", "--target_modules", "all-linear",
            "--per_device_train_batch_size", str(CFG["batch"]), "--num_train_epochs", str(CFG["epochs"]),
            "--max_length", str(CFG["max_length"]), "--learning_rate", str(CFG["lr"]),
            "--warmup_ratio", str(CFG["warmup"]), "--weight_decay", str(CFG["wd"]), "--torch_dtype", "float32",
            "--seed", str(CFG["seed"]), "--output_dir", str(out), "--add_output_dir_suffix", "False",
            "--report_to", "none", "--logging_steps", "5", *extra]


def run_swiftlike(model_dir, data, work, extra=(), name="swiftlike", env=None):
    """One swiftlike run; `adapter` is its last checkpoint (an adapter, or a whole model for full-parameter tuners)."""
    out = work / name
    wall, rss, rc = timed(swiftlike_cmd(model_dir, data, out, *extra), env=env, log=work / f"{name}.log")
    ckpt = max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]), default=None)
    loss = json.loads((out / "metrics.json").read_text())["train_loss"] if rc == 0 else None
    return dict(wall=wall, rss=rss, rc=rc, adapter=ckpt if rc == 0 else None, train_loss=loss)


def run_msswift(swift, model_dir, data, work):
    out = work / "ms-swift"
    cmd = [swift, "sft", "--model", str(model_dir), "--model_type", "llama", "--template", "chatml",
           "--tuner_type", "lora", "--dataset", str(data), "--lora_rank", str(CFG["rank"]),
           "--lora_alpha", str(CFG["alpha"]), "--lora_dropout", "0", "--target_modules", "all-linear",
           "--per_device_train_batch_size", str(CFG["batch"]), "--num_train_epochs", str(CFG["epochs"]),
           "--max_length", str(CFG["max_length"]), "--learning_rate", str(CFG["lr"]),
           "--warmup_ratio", str(CFG["warmup"]), "--weight_decay", str(CFG["wd"]), "--torch_dtype", "float32",
           # ms-swift 4 silently raises gradient accumulation to reach 16 samples per update; keep 4
           "--gradient_accumulation_steps", "1",
           "--seed", str(CFG["seed"]), "--gradient_checkpointing", "false", "--split_dataset_ratio", "0",
           "--output_dir", str(out), "--report_to", "none", "--logging_steps", "5", "--dataset_num_proc", "1",
           "--dataloader_num_workers", "0", "--save_only_model", "true"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "USE_HF": "1", "HF_HUB_OFFLINE": "1"}
    wall, rss, rc = timed(cmd, env=env, log=work / "ms-swift.log")
    ckpts = sorted(out.glob("v*/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    loss = _last_train_loss(work / "ms-swift.log")
    return dict(wall=wall, rss=rss, rc=rc, adapter=ckpts[-1] if ckpts else None, train_loss=loss)


def llamafactory_dataset(data, ddir: Path) -> Path:
    """`ddir` as LLaMA-Factory's dataset_dir: the messages-format rows as dataset "bench" (sharegpt, OpenAI tags)."""
    ddir.mkdir(exist_ok=True)
    shutil.copy(data, ddir / "train.jsonl")
    (ddir / "dataset_info.json").write_text(json.dumps({"bench": {
        "file_name": "train.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}))
    return ddir


def run_llamafactory(cli, model_dir, data, work, extra=None, name="llamafactory"):
    """One LLaMA-Factory run; `extra` overrides the YAML's keys (the method's own switches)."""
    out = work / name
    ddir = llamafactory_dataset(data, work / "lf-data")
    cfg = {
        "model_name_or_path": str(model_dir), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": CFG["rank"], "lora_alpha": CFG["alpha"], "lora_dropout": 0.0, "lora_target": "all",
        "dataset": "bench", "dataset_dir": str(ddir), "template": "chatml", "cutoff_len": CFG["max_length"],
        "overwrite_cache": True, "preprocessing_num_workers": 1, "output_dir": str(out), "logging_steps": 5,
        "save_strategy": "no", "per_device_train_batch_size": CFG["batch"], "gradient_accumulation_steps": 1,
        "learning_rate": CFG["lr"], "num_train_epochs": float(CFG["epochs"]), "lr_scheduler_type": "cosine",
        "warmup_ratio": CFG["warmup"], "weight_decay": CFG["wd"], "seed": CFG["seed"], "report_to": "none",
        "disable_gradient_checkpointing": True, "overwrite_output_dir": True, "dataloader_num_workers": 0,
        **(extra or {}),
    }
    yaml = work / f"{name}.yaml"
    yaml.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    wall, rss, rc = timed([cli, "train", str(yaml)], env=env, log=work / f"{name}.log")
    loss = None
    if (out / "train_results.json").exists():
        loss = json.loads((out / "train_results.json").read_text()).get("train_loss")
    saved = (out / "adapter_config.json").exists() or (out / "config.json").exists()
    return dict(wall=wall, rss=rss, rc=rc, adapter=out if rc == 0 and saved else None, train_loss=loss)


PEERS = {"llamafactory": (["llamafactory==0.9.5"], "llamafactory-cli"),
         "msswift": (["torch==2.13.0", "ms-swift==4.6.0"], "swift")}


def install_peer(venvs: Path, name: str) -> Path:
    """VENVS/NAME as a user makes it: a fresh virtualenv, then pip install, one requirement at a time."""
    requirements, script = PEERS[name]
    venv = venvs / name
    if not (venv / "bin" / script).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for req in requirements:
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", req], check=True)
    return venv / "bin" / script


def versions(python: Path) -> str:
    code = ("import importlib.metadata as m\nout=[]\nfor d in ('torch','transformers','peft','trl','ms-swift',"
            "'llamafactory'):\n    try: out.append(f'{d} {m.version(d)}')\n    except m.PackageNotFoundError: pass\n"
            "print(', '.join(out))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()[-200:]


def machine() -> str:
    """The CPU the figures were taken on: its model, cores, and the vector extensions fp32 kernels use."""
    model, flags = "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ext = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(ext) or 'no avx2/avx512'}"


def _last_train_loss(log: Path):
    text = log.read_text(errors="replace")
    found = re.findall(r"'train_loss': '?([0-9.]+)", text)
    return float(found[-1]) if found else None


def heldout_loss(model_dir, adapter, rows) -> float:
    """Neutral: plain transformers + peft, ChatML rendered here, loss on the final assistant reply + <|im_end|>.
    `adapter` is a PEFT adapter directory, a whole model directory (full-parameter tuners), or None (the base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    whole = adapter is not None and not (Path(adapter) / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(adapter if whole else model_dir, dtype=torch.float32)
    if adapter is not None and not whole:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    total, count = 0.0, 0
    for row in rows:
        msgs = row["messages"]
        prefix = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs[:-1])
        prefix += "<|im_start|>assistant\n"
        target = msgs[-1]["content"] + "<|im_end|>"
        p_ids = tok(prefix, add_special_tokens=False).input_ids
        t_ids = tok(target, add_special_tokens=False).input_ids
        ids = torch.tensor([p_ids + t_ids])
        labels = torch.tensor([[-100] * len(p_ids) + t_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")
        total += loss.item()
        count += len(t_ids)
    return total / count


def run_rounds(tools, repeat: int, work: Path, *, round_dirs: bool = False) -> dict:
    """Each tool's median run. Shared cores drift: with repeat N every round runs all tools (the order rotates each
    round) and the table gives each tool's median; the per-round walls show how much the machine moved."""
    runs = {name: [] for name, _ in tools}
    for k in range(repeat):
        for name, fn in tools[k % len(tools):] + tools[:k % len(tools)] if tools else []:
            w = work / f"round{k}" if repeat > 1 or round_dirs else work
            w.mkdir(parents=True, exist_ok=True)
            runs[name].append(fn(w))
            print(f"round {k}: {name} {runs[name][-1]['wall']:.1f} s rc {runs[name][-1]['rc']}", file=sys.stderr)
    results = {}
    for name, rs in runs.items():
        ok = [r for r in rs if r["rc"] == 0] or rs
        results[name] = {**ok[-1], "wall": statistics.median(r["wall"] for r in ok), "walls": [r["wall"] for r in rs],
                         "rss": statistics.median(r["rss"] for r in ok)}
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--venvs", default="/work/venvs", help="where the peers' virtualenvs are (or go, --install)")
    ap.add_argument("--install", action="store_true", help="create the peers' virtualenvs that are missing")
    ap.add_argument("--swift", default=None, help="default: VENVS/msswift/bin/swift")
    ap.add_argument("--llamafactory", default=None, help="default: VENVS/llamafactory/bin/llamafactory-cli")
    ap.add_argument("--only", default="swiftlike,ms-swift,llamafactory")
    ap.add_argument("--work", default=None)
    ap.add_argument("--train", default=str(SHARED / "train.jsonl"))
    ap.add_argument("--heldout", default=str(SHARED / "heldout.jsonl"))
    ap.add_argument("--repeat", type=int, default=1, help="rounds of all tools; medians are reported")
    args = ap.parse_args()
    venvs = Path(args.venvs)
    if args.install:
        for name in PEERS:
            install_peer(venvs, name)
    args.swift = args.swift or str(venvs / "msswift" / "bin" / "swift")
    args.llamafactory = args.llamafactory or str(venvs / "llamafactory" / "bin" / "llamafactory-cli")
    from swiftlike.models import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct").path
    work = Path(args.work or tempfile.mkdtemp(prefix="sft-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    tools = []
    if "swiftlike" in only:
        tools.append(("swiftlike", lambda w: run_swiftlike(model_dir, args.train, w)))
    if "ms-swift" in only and Path(args.swift).exists():
        tools.append(("ms-swift 4.6.0", lambda w: run_msswift(args.swift, model_dir, args.train, w)))
    if "llamafactory" in only and Path(args.llamafactory).exists():
        tools.append(("LLaMA-Factory 0.9.5", lambda w: run_llamafactory(args.llamafactory, model_dir, args.train, w)))
    results = run_rounds(tools, args.repeat, work)
    rows = [json.loads(line) for line in Path(args.heldout).read_text().splitlines() if line.strip()]
    for r in results.values():
        r["heldout"] = heldout_loss(model_dir, r["adapter"], rows) if r["adapter"] else None
    base = heldout_loss(model_dir, None, rows)
    print(f"work dir: {work}\nconfig: {CFG}\nheld-out loss of the untrained base: {base:.4f}")
    print(f"machine: {machine()}")
    print(f"swiftlike: {versions(Path(sys.executable))}")
    for name, script in (("ms-swift", args.swift), ("LLaMA-Factory", args.llamafactory)):
        if Path(script).exists():
            print(f"{name}: {versions(Path(script).with_name('python'))}")
    print()
    print(f"{'tool':22s} {'rc':>3s} {'wall s':>8s} {'peak RSS MiB':>13s} {'train loss':>11s} {'held-out':>9s}"
          + ("  walls per round" if args.repeat > 1 else ""))
    for name, r in results.items():
        fmt = lambda v, f: format(v, f) if v is not None else "-"
        print(f"{name:22s} {r['rc']:3d} {r['wall']:8.1f} {r['rss']:13.0f} {fmt(r['train_loss'], '11.4f')} "
              f"{fmt(r['heldout'], '9.4f')}" + (f"  {[round(w, 1) for w in r['walls']]}" if args.repeat > 1 else ""))
    ours = results.get("swiftlike")
    peers = {k: v for k, v in results.items() if k != "swiftlike" and v["rc"] == 0}
    if ours and peers:
        fastest = min(peers.items(), key=lambda kv: kv[1]["wall"])
        if args.repeat > 1:
            per_round = [min(v["walls"][k] for v in peers.values()) / ours["walls"][k] for k in range(args.repeat)]
            print(f"per round, fastest peer / swiftlike: {[round(x, 2) for x in per_round]}")
        best = min((v["heldout"] for v in peers.values() if v["heldout"] is not None), default=None)
        print(f"\nwall: {fastest[0]} / swiftlike = {fastest[1]['wall'] / ours['wall']:.2f}x (target >= 2.00x)")
        low_rss = min(v["rss"] for v in peers.values())
        print(f"peak RSS: swiftlike / lowest peer = {ours['rss'] / low_rss:.2f} (target <= 1.00)")
        if best and ours["heldout"]:
            print(f"held-out loss: swiftlike / best peer = {ours['heldout'] / best:.3f} (target <= 1.030)")


if __name__ == "__main__":
    main()
