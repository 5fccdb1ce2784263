"""GPU smoke and multi-LoRA throughput of `swiftlike serve --infer_backend vllm`, beside swiftlike's own engine.

    python bench/vllm_smoke.py --model /path/to/model_dir --template qwen2 --adapters 8 --json vllm.json

Needs Linux, a CUDA GPU and `pip install vllm` (swiftlike refuses --infer_backend vllm in one line otherwise; this
script exits 2 with that line). Bounded: fixed request counts and concurrency, loopback only, ignore_eos so that every
request generates exactly --max_tokens, a start-up timeout for each server.

1. Makes --adapters random PEFT LoRA adapters for the model (rank --rank, all linear layers, lora_B scaled by
   --lora_scale so that each adapter answers differently), with swiftlike manifests.
2. Starts `swiftlike serve --infer_backend vllm` on them (max_loras = --adapters) and checks, on the real engine:
   greedy answers are the same twice for one adapter and differ between adapters and from the base (each request's
   LoRARequest reaches vLLM); an admin POST /v1/adapters of adapter 0's directory under a new name answers exactly
   as adapter 0 (vLLM loaded that directory), and after DELETE the name is 404.
3. Sends --requests chat requests spread over all adapters (--concurrency at a time), then the same to one adapter;
   reports tokens/s, latency and the server's metrics.
4. Starts `swiftlike serve` (its own engine, --infer_backend pt; the model stays on the CPU, where serve puts it)
   and sends --pt_requests of the same requests spread over the adapters (skip with --skip_pt).

Exits 1 if a check or a request failed. Writes everything to --json when given.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_load import Client, run_requests, summarize  # noqa: E402

ASK = [{"role": "user", "content": "Write one sentence about the sea."}]


def make_adapters(model_dir: Path, out: Path, n: int, rank: int, scale: float, template: str | None) -> list[Path]:
    """n PEFT LoRA adapters with random lora_B (reused when already there)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from swiftlike.checkpoint import base_fingerprint

    dirs = [out / f"adapter-{i}" for i in range(n)]
    if all((d / "swiftlike.json").exists() for d in dirs):
        return dirs
    fingerprint = base_fingerprint(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    for i, d in enumerate(dirs):
        g = torch.Generator().manual_seed(1000 + i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
        peft.save_pretrained(d)
        manifest = {"format": "swiftlike.adapter/1", "base_model_type": model_dir.name,
                    "base_fingerprint": fingerprint, "tuner": "lora"}
        if template:
            manifest["template"] = template
        (d / "swiftlike.json").write_text(json.dumps(manifest))
    del peft, model
    return dirs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port: int, method: str, path: str, body: dict | None = None, timeout: float = 600) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw or b"{}")
        except ValueError:
            return resp.status, {"text": raw.decode(errors="replace")}
    finally:
        conn.close()


class Serve:
    """`swiftlike serve` as a subprocess in its own process group (vLLM's engine core goes down with it); its log in
    a file (vLLM logs a lot: a pipe nobody reads would block it)."""

    def __init__(self, flags: list[str], log: Path, timeout: float):
        self.port = free_port()
        self.log = log
        cmd = [sys.executable, "-m", "swiftlike", "serve", *flags, "--port", str(self.port), "--log_level", "warning"]
        self.cmd = cmd
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
        deadline = time.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited ({self.proc.returncode}) before answering:\n{self.tail()}")
            try:
                status, _ = call(self.port, "GET", "/health", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                self.close()
                raise SystemExit(f"serve did not answer /health within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(1)
        self.startup_s = round(time.perf_counter() - self.t0, 1)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def banner(self) -> list[str]:
        lines = self.log.read_text(errors="replace").splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("swiftlike serve:")), None)
        return lines[start:start + 8] if start is not None else []

    def metrics(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return {line.split()[0]: float(line.split()[-1]) for line in text.splitlines()
                if line and not line.startswith("#") and " " in line}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(30)


def answer(port: int, model: str, max_tokens: int) -> tuple[int, str, str]:
    status, out = call(port, "POST", "/v1/chat/completions", {"model": model, "messages": ASK, "temperature": 0,
                                                              "max_tokens": max_tokens})
    text = out["choices"][0]["message"]["content"] if status == 200 else json.dumps(out)[:300]
    return status, text, out.get("system_fingerprint", "")


def checks(port: int, names: list[str], base: str, dirs: list[Path]) -> dict:
    """Greedy answers through vLLM: stable per adapter, different across adapters and from the base; admin load of
    adapter 0's directory under a new name answers as adapter 0; after DELETE the name is gone."""
    got = {}
    for name in [base, *names[:3], names[0]]:
        status, text, fp = answer(port, name, 24)
        got.setdefault(name, []).append((status, text, fp))
    out = {"answers": {k: v[0][1] for k, v in got.items()}}
    out["all_200"] = all(s == 200 for v in got.values() for s, _, _ in v)
    out["same_adapter_same_answer"] = got[names[0]][0][1] == got[names[0]][1][1]
    texts = [got[n][0][1] for n in [base, *names[:3]]]
    out["adapters_and_base_differ"] = len(set(texts)) == len(texts)
    status, loaded = call(port, "POST", "/v1/adapters", {"name": "extra", "source": str(dirs[0])})
    out["admin_load"] = {"status": status, "body": loaded}
    s2, text2, fp2 = answer(port, "extra", 24)
    out["admin_loaded_answers_as_adapter_0"] = s2 == 200 and text2 == got[names[0]][0][1] and fp2 == "extra:v1"
    status, _ = call(port, "DELETE", "/v1/adapters/extra")
    s3, _, _ = answer(port, "extra", 4)
    out["admin_delete_then_404"] = status == 200 and s3 == 404
    out["ok"] = all(out[k] for k in ("all_200", "same_adapter_same_answer", "adapters_and_base_differ",
                                     "admin_loaded_answers_as_adapter_0", "admin_delete_then_404"))
    return out


def workload(port: int, names: list[str], requests: int, concurrency: int, max_tokens: int) -> dict:
    client = Client(port)
    warm = summarize([run_requests(client, names, len(names), len(names), 2)])  # every adapter loaded
    if warm["errors"]:
        return {"warm_up": warm}
    return summarize([run_requests(client, names, requests, concurrency, max_tokens)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model dir (e.g. a Qwen2-1.5B-shaped model with random weights)")
    ap.add_argument("--template", default=None, help="chat template (default: the model type's)")
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--lora_scale", type=float, default=0.05, help="std of the random lora_B weights")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max_tokens", type=int, default=64)
    ap.add_argument("--max_model_len", type=int, default=4096)
    ap.add_argument("--gpu_memory_utilization", type=float, default=0.6)
    ap.add_argument("--pt_requests", type=int, default=32, help="requests for swiftlike's own engine (on CPU)")
    ap.add_argument("--skip_pt", action="store_true", help="skip swiftlike's own engine")
    ap.add_argument("--skip_single", action="store_true", help="skip the one-adapter vLLM run")
    ap.add_argument("--startup_timeout", type=float, default=480)
    ap.add_argument("--work_dir", default=None, help="adapters and server logs (default: a temp dir)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    from swiftlike.infer.vllm_backend import require_vllm
    from swiftlike.registry import SwiftlikeError

    try:
        version = require_vllm()
    except SwiftlikeError as err:
        print(f"vllm_smoke: {err}", file=sys.stderr)
        return 2
    model = Path(args.model).resolve()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vllm-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    dirs = make_adapters(model, work, args.adapters, args.rank, args.lora_scale, args.template)
    names = [f"a{i}" for i in range(len(dirs))]
    results = {"vllm_version": version, "model": str(model), "args": vars(args),
               "adapters_made_s": round(time.perf_counter() - t, 1)}
    common = ["--model", str(model), "--adapters", *[f"{n}={d}" for n, d in zip(names, dirs)],
              "--max_tokens", str(args.max_tokens), "--max_queue", str(max(args.requests, args.pt_requests))]
    if args.template:
        common += ["--template", args.template]
    failed = False

    server = Serve([*common, "--infer_backend", "vllm", "--max_loras", str(args.adapters), "--max_batch_size",
                    str(args.concurrency), "--max_model_len", str(args.max_model_len), "--gpu_memory_utilization",
                    str(args.gpu_memory_utilization)], work / "serve-vllm.log", args.startup_timeout)
    try:
        results["vllm_startup_s"] = server.startup_s
        results["vllm_banner"] = server.banner()
        base = call(server.port, "GET", "/v1/models")[1]["data"][0]["id"]
        results["checks"] = checks(server.port, names, base, dirs)
        print(f"checks: {json.dumps({k: v for k, v in results['checks'].items() if k != 'answers'})}", flush=True)
        failed |= not results["checks"]["ok"]
        results["vllm_many"] = workload(server.port, names, args.requests, args.concurrency, args.max_tokens)
        print(f"vLLM, {len(names)} adapters: {results['vllm_many']}", flush=True)
        if not args.skip_single:
            results["vllm_one"] = workload(server.port, names[:1], args.requests, args.concurrency, args.max_tokens)
            print(f"vLLM, 1 adapter: {results['vllm_one']}", flush=True)
        m = server.metrics()
        results["vllm_metrics"] = {k: m.get(k) for k in ("swiftlike_adapter_loads_total",
                                                         "swiftlike_adapter_evictions_total",
                                                         "swiftlike_engine_generated_tokens_total",
                                                         "swiftlike_adapter_load_failures_total")}
    finally:
        server.close()
    for key in ("vllm_many", "vllm_one"):
        run = results.get(key)
        failed |= run is not None and (run.get("errors", 1) != 0 or "warm_up" in run)

    if not args.skip_pt:
        server = Serve([*common, "--max_resident", str(args.adapters), "--max_batch_size", str(args.concurrency)],
                       work / "serve-pt.log", args.startup_timeout)
        try:
            results["pt_startup_s"] = server.startup_s
            results["pt_banner"] = server.banner()
            results["pt_many"] = workload(server.port, names, args.pt_requests, args.concurrency, args.max_tokens)
            print(f"swiftlike engine (CPU), {len(names)} adapters: {results['pt_many']}", flush=True)
        finally:
            server.close()
        run = results["pt_many"]
        failed |= run.get("errors", 1) != 0 or "warm_up" in run
        if results.get("vllm_many", {}).get("tokens_per_s") and run.get("tokens_per_s"):
            results["vllm_over_pt_tokens_per_s"] = round(results["vllm_many"]["tokens_per_s"] / run["tokens_per_s"],
                                                         2)

    print(f"\nvLLM {version}, {model.name}, {len(names)} adapters (rank {args.rank}), {args.max_tokens} tokens per "
          f"request, concurrency {args.concurrency}; vLLM start-up {results.get('vllm_startup_s')} s")
    for key, label in (("vllm_many", f"vLLM, {len(names)} adapters"), ("vllm_one", "vLLM, 1 adapter"),
                       ("pt_many", f"swiftlike engine (CPU), {len(names)} adapters")):
        r = results.get(key)
        if r and "tokens_per_s" in r:
            print(f"  {label}: {r['requests']} requests, {r['errors']} errors, {r['tokens_per_s']} tokens/s, "
                  f"p50 {r['p50_s']} s, p99 {r['p99_s']} s")
    if "vllm_over_pt_tokens_per_s" in results:
        print(f"  vLLM / swiftlike engine tokens/s: {results['vllm_over_pt_tokens_per_s']}")
    print(f"  checks ok: {results.get('checks', {}).get('ok')}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
