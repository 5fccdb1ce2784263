"""Adapter marketplace timings: push to a local hub, install into the store, and cold-load onto a loaded base.

    SWIFTLIKE_HOME=/tmp/slhome python bench/adapters.py [--rank 8] [--runs 5]

Builds the embedded SmolLM2-135M-Instruct (`resolve_model("smollm2-135m-instruct")`), puts a random rank-8
all-linear LoRA adapter on it with peft (random A and B, so it is not a no-op), saves it with a swiftlike manifest,
pushes it to a temporary `local:` hub and times:
  push     build the artifact (validate manifest, card) + publish a revision (copy, hash, rename, refs)
  install  download (local hub: the revision dir) + check paths + copy and sha256 every file + rename into the store
  load     swiftlike.adapters.load(base, installed path) onto an already-loaded base: base check (manifest type and
           weights fingerprint) + PeftModel.from_pretrained; in a fresh process, so the first load is cold (peft is
           imported before timing; its import time is printed separately). The adapter is unloaded between runs;
           the base check (manifest, model type, weights fingerprint) is also timed alone.
Target: load <= 100 ms for r8 on the 135M model. The installed copy is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL_TYPE = "smollm2-135m-instruct"


def make_adapter(out: Path, rank: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from swiftlike.models.load import load_model_tokenizer
    from swiftlike.models.resolve import resolve_model
    from swiftlike.checkpoint import base_fingerprint, write_manifest

    resolved = resolve_model(MODEL_TYPE)
    model, _ = load_model_tokenizer(resolved=resolved)
    torch.manual_seed(0)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    saved = json.loads((out / "adapter_config.json").read_text())
    write_manifest(out, {"name": out.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                         "base_model_type": MODEL_TYPE, "base_model": resolved.spec.hf,
                         "base_fingerprint": base_fingerprint(resolved.path), "template": resolved.spec.template,
                         "tuner": "lora", "tuner_config": saved, "datasets": []})
    return out


def load_phase(path: str, runs: int) -> dict:
    """Runs in a fresh process: load the base, then time loading the adapter onto it `runs` times."""
    t0 = time.perf_counter()
    import peft  # noqa: F401

    import_peft = time.perf_counter() - t0
    import torch

    import swiftlike.adapters
    from swiftlike.models.load import load_model_tokenizer

    model, tokenizer = load_model_tokenizer(model_type=MODEL_TYPE)
    model.eval()
    ids = tokenizer("Who are you?", return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits
    from swiftlike.adapters.loading import loaded_from
    from swiftlike.checkpoint import check_base, read_manifest

    times, checks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        adapted = swiftlike.adapters.load(model, path)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()  # the swiftlike part of a load, timed alone: manifest + base type/fingerprint
        check_base(read_manifest(path), base_dir=loaded_from(model), base_model_type=MODEL_TYPE)
        checks.append(time.perf_counter() - start)
        with torch.no_grad():
            changed = not torch.equal(adapted(input_ids=ids).logits, base_logits)
        model = adapted.unload()
    return {"import_peft_s": import_peft, "load_s": times, "check_s": checks, "changes_logits": changed}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--_load", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._load:
        print(json.dumps(load_phase(args._load, args.runs)))
        return

    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install, remove

    work = Path(tempfile.mkdtemp(prefix="swiftlike-bench-adapters-"))
    name = f"bench-r{args.rank}-{os.getpid()}"
    try:
        ckpt = make_adapter(work / "ckpt", args.rank)
        size = sum(p.stat().st_size for p in ckpt.iterdir())
        hub = str(work / "hub")
        push_s, install_s = [], []
        for i in range(args.runs):
            start = time.perf_counter()
            ref = push(ckpt, f"local:bench/{name}", hub_root=hub)
            push_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            installed = install(ref, name=name, hub_root=hub)
            install_s.append(time.perf_counter() - start)
            if i < args.runs - 1:
                remove(name)
        proc = subprocess.run([sys.executable, __file__, "--_load", str(installed.path), "--runs", str(args.runs)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        loaded = json.loads(proc.stdout.strip().splitlines()[-1])
        remove(name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def fmt(xs):
        return f"first {xs[0] * 1000:7.1f} ms   best {min(xs) * 1000:7.1f} ms   median {statistics.median(xs) * 1000:7.1f} ms"

    print(f"r{args.rank} all-linear LoRA on {MODEL_TYPE}: {size / 1e6:.2f} MB adapter, {args.runs} runs")
    print(f"  push (local hub)          {fmt(push_s)}")
    print(f"  install (sha256 verified) {fmt(install_s)}")
    print(f"  load onto loaded base     {fmt(loaded['load_s'])}   (target <= 100 ms)")
    print(f"    of which base check     {fmt(loaded['check_s'])}   (the rest is PeftModel.from_pretrained)")
    print(f"  import peft (not in load) {loaded['import_peft_s'] * 1000:7.1f} ms; adapter changes logits: "
          f"{loaded['changes_logits']}")


if __name__ == "__main__":
    main()
