"""Load test of `swiftlike serve` on loopback: many adapters vs one, latency, tokens/s, adapter swap and load times.

    SWIFTLIKE_HOME=/tmp/slhome python bench/serve_load.py                       # 500 requests, 32 at a time, 8 adapters
    python bench/serve_load.py --requests 96 --max_tokens 16 --num_threads 1    # scaled down for a small CPU box

Makes N random LoRA adapters (rank 8, all linear layers) for the model, times cold loads and resident swaps in process,
then starts `swiftlike serve` as a subprocess on 127.0.0.1 and sends the same requests twice: spread over all
adapters, then all to one adapter. Bounded: fixed request count, fixed concurrency, loopback only, ignore_eos so
every request generates exactly --max_tokens. Exits non-zero on any failed request.
"""
from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TOPICS = ["tides", "volcanoes", "compilers", "bread", "chess openings", "photosynthesis", "rainbows", "bicycles",
          "jazz", "glaciers", "databases", "bees", "lighthouses", "origami", "comets", "coffee"]


def make_adapters(model_dir: Path, out: Path, n: int, rank: int, template: str) -> list[Path]:
    """n PEFT LoRA adapters with random weights and a swiftlike manifest (reused when already there)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from swiftlike.checkpoint import base_fingerprint

    dirs = [out / f"adapter-{i}" for i in range(n)]
    if all((d / "swiftlike.json").exists() for d in dirs):
        return dirs
    fingerprint = base_fingerprint(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    for i, d in enumerate(dirs):
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.01)
        peft.save_pretrained(d)
        (d / "swiftlike.json").write_text(json.dumps({
            "format": "swiftlike.adapter/1", "base_model_type": model_dir.name, "base_fingerprint": fingerprint,
            "template": template, "tuner": "lora"}))
    return dirs


def time_in_process(opts, dirs: list[Path]) -> dict:
    """Cold load (disk → resident, incl. restacking the resident bank) and resident swap (pool acquire + the batch
    bookkeeping a new mix of resident adapters costs), measured on the real model in this process."""
    import random

    import torch

    from swiftlike.infer.lora import LoraBatch
    from swiftlike.serve.runtime import Runtime

    rt = Runtime(opts)
    layers = list(rt.wrapped.values())

    def stack(batch):  # what the next forward's LoRA layers look up (a one-adapter batch needs nothing stacked)
        if batch.single is not None:
            return
        for layer in layers:
            if layer._cat.get(batch.key) is None:
                layer._concat(batch)

    async def measure():
        for i, d in enumerate(dirs):
            rt.pool.register(f"a{i}", str(d), d)
        cold_read, cold_stack, loaded = [], [], []
        for i in range(len(dirs)):
            t = time.perf_counter()
            loaded.append(await rt.pool.acquire(f"a{i}"))
            t1 = time.perf_counter()
            if len(loaded) > 1:  # the next step with two adapters restacks the bank
                stack(LoraBatch(loaded[-2:], rt.ctx.bank))
            cold_read.append(t1 - t)
            cold_stack.append(time.perf_counter() - t1)
        for a in loaded:
            rt.pool.release(a)
        rng = random.Random(0)
        swap = []
        for _ in range(200):
            name = f"a{rng.randrange(len(dirs))}"
            mix = [rng.choice(loaded) for _ in range(rng.randrange(2, 33))]
            t = time.perf_counter()
            a = await rt.pool.acquire(name)
            stack(LoraBatch(mix + [a], rt.ctx.bank))
            swap.append(time.perf_counter() - t)
            rt.pool.release(a)
        return loaded, cold_read[1:], cold_stack[1:], swap  # the first load also hashes the base weights

    loaded, cold_read, cold_stack, swap = asyncio.run(measure())
    ids = torch.randint(100, 1000, (len(loaded), 1))
    step = {}
    with torch.inference_mode():
        for name, batch in (("mixed", LoraBatch(loaded, rt.ctx.bank)),
                            ("single", LoraBatch([loaded[0]] * len(loaded)))):
            with rt.ctx.use(batch):
                rt.model(input_ids=ids, use_cache=False)
                t = time.perf_counter()
                for _ in range(5):
                    rt.model(input_ids=ids, use_cache=False)
                step[name] = (time.perf_counter() - t) / 5
    ms = lambda xs: round(1000 * statistics.median(xs), 3)  # noqa: E731
    cold = [a + b for a, b in zip(cold_read, cold_stack)]
    return {"cold_load_ms_median": ms(cold), "cold_load_ms_max": round(1000 * max(cold), 3),
            "cold_read_ms_median": ms(cold_read), "cold_restack_ms_median": ms(cold_stack),
            "resident_swap_ms_median": ms(swap),
            "resident_swap_ms_p99": round(1000 * sorted(swap)[int(len(swap) * .99)], 3),
            "resident_swap_ms_max": round(1000 * max(swap), 3),
            "forward_single_over_mixed": round(step["single"] / step["mixed"], 3)}


class Client:
    """Keep-alive HTTP/1.1 connections to the server, one per worker thread."""

    def __init__(self, port: int):
        self.port = port
        self.local = threading.local()

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"{}")
        except (OSError, http.client.HTTPException) as err:
            self.local.conn = None
            return 0, {"error": str(err)}


def run_requests(client: Client, models: list[str], n: int, concurrency: int, max_tokens: int) -> dict:
    def one(i):
        body = {"model": models[i % len(models)], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                "messages": [{"role": "user", "content": f"In two sentences, what is interesting about "
                                                         f"{TOPICS[i % len(TOPICS)]}?"}]}
        t = time.perf_counter()
        status, out = client.post("/v1/chat/completions", body)
        return status, time.perf_counter() - t, out.get("usage", {}).get("completion_tokens", 0), out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, range(n)))
    return {"results": results, "wall": time.perf_counter() - t0}


def summarize(runs: list[dict]) -> dict:
    results = [r for run in runs for r in run["results"]]
    wall = sum(run["wall"] for run in runs)
    ok = [r for r in results if r[0] == 200]
    errors = [r for r in results if r[0] != 200]
    lat = sorted(r[1] for r in ok) or [0.0]
    tokens = sum(r[2] for r in ok)
    return {"requests": len(results), "errors": len(errors), "first_error": errors[0][3] if errors else None,
            "wall_s": round(wall, 2), "p50_s": round(lat[len(lat) // 2], 3),
            "p99_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 3),
            "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 2),
            "requests_per_s": round(len(results) / wall, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_type", default="smollm2-135m-instruct")
    ap.add_argument("--model", help="a model dir instead of --model_type")
    ap.add_argument("--template", default=None)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--adapters", type=int, default=8)
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--num_threads", type=int, default=None, help="torch threads of the server")
    ap.add_argument("--work_dir", default=None, help="where the adapters go (default: a temp dir)")
    ap.add_argument("--skip_single", action="store_true", help="skip the one-adapter comparison run")
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two workloads this many times")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    from swiftlike.models.resolve import resolve_model
    from swiftlike.serve.runtime import ServeArguments

    resolved = resolve_model(None if args.model else args.model_type, args.model)
    template = args.template or resolved.spec.template
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="serve-load-"))
    dirs = make_adapters(Path(resolved.path), work, args.adapters, args.rank, template)
    model_flags = ["--model", str(resolved.path)] if args.model else ["--model_type", args.model_type]
    opts = ServeArguments(model=args.model, model_type=None if args.model else args.model_type, template=args.template,
                        num_threads=args.num_threads, max_resident=args.adapters)
    results = {"model": resolved.spec.name, "args": vars(args), "in_process": time_in_process(opts, dirs)}
    print(json.dumps(results["in_process"]), flush=True)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "swiftlike", "serve", *model_flags, "--port", str(port), "--log_level", "warning",
           "--max_resident", str(args.adapters), "--max_batch_size", str(args.concurrency),
           "--max_queue", str(args.requests), "--max_tokens", str(args.max_tokens),
           "--adapters", *[f"a{i}={d}" for i, d in enumerate(dirs)]]
    if args.template:
        cmd += ["--template", args.template]
    if args.num_threads:
        cmd += ["--num_threads", str(args.num_threads)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        client = Client(port)
        for _ in range(600):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/health")
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"server exited: {server.stderr.read()}")
                time.sleep(0.2)
        names = [f"a{i}" for i in range(args.adapters)]
        warm = summarize([run_requests(client, names, args.adapters, args.adapters, 2)])  # loads every adapter
        assert warm["errors"] == 0, warm
        # the two workloads alternate in rounds, so a change in the machine's load hits both alike
        many, one = [], []
        for k in range(args.rounds):
            n = args.requests // args.rounds + (1 if k < args.requests % args.rounds else 0)
            many.append(run_requests(client, names, n, args.concurrency, args.max_tokens))
            print(f"round {k + 1}: {args.adapters} adapters {summarize(many[-1:])['tokens_per_s']} tokens/s",
                  flush=True)
            if not args.skip_single:
                one.append(run_requests(client, names[:1], n, args.concurrency, args.max_tokens))
                print(f"round {k + 1}: 1 adapter {summarize(one[-1:])['tokens_per_s']} tokens/s", flush=True)
        results["many"] = summarize(many)
        if one:
            results["one"] = summarize(one)
            results["ratio_many_vs_one"] = round(results["many"]["tokens_per_s"] / results["one"]["tokens_per_s"], 3)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        get = lambda name: float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith(name + " ")))  # noqa
        results["server"] = {"adapter_loads": get("swiftlike_adapter_loads_total"),
                             "evictions": get("swiftlike_adapter_evictions_total"),
                             "mean_decode_batch": round(get("swiftlike_engine_decode_rows_total")
                                                        / max(1.0, get("swiftlike_engine_decode_steps_total")), 2)}
    finally:
        server.terminate()
        server.wait(30)
    ip = results["in_process"]
    print(f"\nmodel {results['model']}, {args.requests} requests x {args.max_tokens} tokens, concurrency "
          f"{args.concurrency}, {args.adapters} adapters (rank {args.rank}), threads {args.num_threads or 'all'}")
    for key in ("many", "one"):
        if key in results:
            r = results[key]
            print(f"  {'%d adapters' % args.adapters if key == 'many' else '1 adapter '}: {r['errors']} errors, "
                  f"p50 {r['p50_s']} s, p99 {r['p99_s']} s, {r['tokens_per_s']} tokens/s, {r['requests_per_s']} req/s")
    if "ratio_many_vs_one" in results:
        print(f"  throughput {args.adapters} adapters / 1 adapter: {results['ratio_many_vs_one']} (target >= 0.8)")
    print(f"  resident swap: median {ip['resident_swap_ms_median']} ms, p99 {ip['resident_swap_ms_p99']} ms, "
          f"max {ip['resident_swap_ms_max']} ms (target <= 5)")
    print(f"  cold load: median {ip['cold_load_ms_median']} ms (read {ip['cold_read_ms_median']} + restack "
          f"{ip['cold_restack_ms_median']}), max {ip['cold_load_ms_max']} ms (target <= 100)")
    print(f"  server: {results['server']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    errors = results["many"]["errors"] + results.get("one", {}).get("errors", 0)
    return 1 if errors else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
