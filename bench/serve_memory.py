"""Memory and responsiveness of `swiftlike serve` under the requests of the security review, on the embedded model.

    SWIFTLIKE_HOME=/tmp/slhome python bench/serve_memory.py               # smollm2-135m-instruct, context 8192
    python bench/serve_memory.py --new 64 --context 4096                  # quicker

Starts `swiftlike serve` as a subprocess on 127.0.0.1 and prints:
1. peak RSS while one long request runs (a prompt filling the context but --new tokens, then --new tokens) against
   the server's idle RSS (the base model) plus that request's own KV cache, and the RSS once idle again;
2. /health latency while 20 MB bodies arrive (Content-Length and chunked), a 7 MB prompt is tokenised and a
   200k-message body is refused.
Bounded: one long request, a fixed set of floods, loopback only. Exits non-zero when a figure misses its target.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def status(pid: int, key: str) -> int:
    """VmRSS / VmHWM of `pid`, bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        return True
    except OSError:
        return False


def call(port, method, path, body=None, headers=None, timeout=600):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw_send(port, head: bytes, chunks, pause=0.0):
    """Send a hand-made request; returns the status line (or what went wrong)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        s.sendall(head)
        for c in chunks:
            s.sendall(c)
            if pause:
                time.sleep(pause)
        s.shutdown(socket.SHUT_WR)
    except OSError as err:  # the server answered and closed before the whole body went out
        kind = type(err).__name__
    else:
        kind = "sent"
    try:
        line = s.recv(200).split(b"\r\n")[0].decode(errors="replace")
    except OSError as err:
        line = type(err).__name__
    s.close()
    return f"{line} ({kind})"


def health_while(port, work) -> tuple[float, list]:
    """Max /health latency (s) while `work` (callables) run in threads, and their results."""
    results, worst, stop = [None] * len(work), [0.0], threading.Event()

    def run(i, fn):
        results[i] = fn()

    def poll():
        while not stop.is_set():
            t0 = time.perf_counter()
            status, _ = call(port, "GET", "/health", timeout=60)
            assert status == 200
            worst[0] = max(worst[0], time.perf_counter() - t0)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(work)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    poller.join()
    return worst[0], results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model_type", default="smollm2-135m-instruct")
    ap.add_argument("--context", type=int, default=8192, help="prompt + completion tokens of the long request")
    ap.add_argument("--new", type=int, default=192, help="completion tokens of the long request")
    ap.add_argument("--num_threads", type=int, default=None)
    args = ap.parse_args()

    from transformers import AutoConfig, AutoTokenizer

    from swiftlike.models.options import ModelArguments

    model_dir = ModelArguments(model_type=args.model_type).resolve_model().path
    config = AutoConfig.from_pretrained(model_dir)
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = config.num_hidden_layers * 2 * kv_heads * head_dim * 4  # fp32 on CPU
    tok = AutoTokenizer.from_pretrained(model_dir)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "swiftlike", "serve", "--model_type", args.model_type, "--port", str(port),
           "--log_level", "warning"]
    if args.num_threads:
        cmd += ["--num_threads", str(args.num_threads)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    failures = []
    try:
        banner = []
        for line in proc.stderr:
            banner.append(line.rstrip())
            if "OpenAI API at" in line:
                break
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        for _ in range(300):
            try:
                if call(port, "GET", "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        print("\n".join(banner))
        time.sleep(1.0)
        base = status(proc.pid, "VmRSS")
        exact_peak = reset_peak(proc.pid)

        # 1. one long request
        words = ("tides volcanoes compilers bread chess photosynthesis rainbows bicycles jazz glaciers "
                 "databases bees lighthouses origami comets coffee ").split()
        ids = tok(" ".join(words[i % len(words)] for i in range(args.context)), add_special_tokens=False).input_ids
        prompt = tok.decode(ids[: args.context - args.new - 8])
        peak_polled = [0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak_polled[0] = max(peak_polled[0], status(proc.pid, "VmRSS"))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.perf_counter()
        code, raw = call(port, "POST", "/v1/completions", {"model": args.model_type, "prompt": prompt,
                                                           "max_tokens": args.new, "temperature": 0,
                                                           "ignore_eos": True})
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        assert code == 200, raw[:300]
        usage = json.loads(raw)["usage"]
        peak = max(status(proc.pid, "VmHWM") if exact_peak else 0, peak_polled[0])
        time.sleep(1.0)
        idle = status(proc.pid, "VmRSS")
        own = usage["total_tokens"] * per_token
        target = 1.5 * base + own
        mib = 1 / 2 ** 20
        print(f"\n1. one long request: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion "
              f"tokens in {seconds:.1f}s")
        print(f"   base RSS (idle server)     {base * mib:8.0f} MiB")
        print(f"   request's own KV cache     {own * mib:8.0f} MiB  ({per_token} bytes/token)")
        print(f"   peak RSS during request    {peak * mib:8.0f} MiB  ({'VmHWM' if exact_peak else 'polled'}); "
              f"= base + {(peak - base) * mib:.0f} MiB")
        print(f"   target 1.5 x base + cache  {target * mib:8.0f} MiB  -> {'ok' if peak <= target else 'MISSED'}")
        print(f"   RSS once idle again        {idle * mib:8.0f} MiB")
        if peak > target:
            failures.append("peak RSS")

        # 2. /health under floods
        big = 20 * 2 ** 20
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {big}\r\n\r\n").encode()
        chunked = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        piece = b"x" * 2 ** 20
        chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(20)] + [b"0\r\n\r\n"]
        many = {"model": args.model_type, "messages": [{"role": "user", "content": "x"}] * 200_000}
        long_prompt = {"model": args.model_type, "prompt": "hello world, this is a test. " * 240_000}
        work = [lambda: raw_send(port, head, [piece] * 20), lambda: raw_send(port, chunked, chunks),
                lambda: call(port, "POST", "/v1/chat/completions", many)[0],
                lambda: call(port, "POST", "/v1/completions", long_prompt)[0]]
        worst, results = health_while(port, work)
        print("\n2. /health while 20 MB bodies arrive (Content-Length, chunked), 200k messages and a 7 MB prompt:")
        print(f"   answers: {results}")
        print(f"   worst /health latency      {worst * 1000:8.0f} ms  -> {'ok' if worst < 1 else 'MISSED'} (< 1 s)")
        if worst >= 1:
            failures.append("/health latency")
    finally:
        proc.terminate()
        proc.wait(30)
    if failures:
        sys.exit(f"missed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
