"""Start-to-answer of `swiftlike infer` beside ms-swift's `swift infer`, on the same LoRA adapter of the embedded
SmolLM2-135M-Instruct: a fresh process asked one question (greedy, 30 new tokens, ChatML), timed from the process
start to the first byte of the answer and to the process exit. The tools alternate, N rounds; medians are printed.

    python bench/infer_startup.py [--swift /work/venvs/msswift/bin/swift] [--adapter DIR] [--rounds 5]

Without --adapter, a 10-step swiftlike LoRA run makes one.
"""
from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTION = "Who are you?"


def timed(cmd, stdin_text=None, env=None, marker=None):
    """(seconds to the first answer byte, seconds to exit, answer text) for one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env)
    if stdin_text:
        proc.stdin.write(stdin_text.encode())
    proc.stdin.close()
    out, first = b"", None
    while True:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        out += chunk
        if first is None:
            text = out.decode(errors="replace")
            # ms-swift prints a prompt and log lines first; its answer follows the `<<< ` prompt
            if marker is None or (marker in text and text.split(marker, 1)[1].strip()):
                first = time.perf_counter() - start
    proc.wait()
    total = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{out.decode(errors='replace')[-2000:]}")
    text = out.decode(errors="replace")
    answer = text.split(marker, 1)[1].split("\n")[0].strip() if marker and marker in text else text.strip()
    return first or total, total, answer


def make_adapter(work: Path) -> Path:
    out = work / "adapter-run"
    subprocess.run([str(Path(sys.executable).with_name("swiftlike")), "sft", "--model_type", "smollm2-135m-instruct",
                    "--dataset", "self-cognition#40", "--model_name", "Nova", "--model_author", "Orbit Labs",
                    "--max_steps", "10", "--learning_rate", "5e-4", "--output_dir", str(out),
                    "--add_output_dir_suffix", "false", "--report_to", "none"], check=True,
                   stdout=subprocess.DEVNULL)
    return out / "checkpoint-10"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--swift", default="/work/venvs/msswift/bin/swift")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from swiftlike.models import resolve_model

    model_dir = resolve_model("smollm2-135m-instruct").path
    adapter = Path(args.adapter) if args.adapter else make_adapter(Path(tempfile.mkdtemp(prefix="infer-bench-")))
    ours = [str(Path(sys.executable).with_name("swiftlike")), "infer", "--ckpt_dir", str(adapter), "--template",
            "chatml", "--query", QUESTION, "--max_new_tokens", "30"]
    theirs = [args.swift, "infer", "--model", str(model_dir), "--model_type", "llama", "--template", "chatml",
              "--adapters", str(adapter), "--load_args", "false", "--max_new_tokens", "30", "--stream", "false",
              "--temperature", "0"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "USE_HF": "1"}
    tools = [("swiftlike", lambda: timed(ours, env=env))]
    if Path(args.swift).exists():
        tools.append(("ms-swift 4.6.0", lambda: timed(theirs, f"{QUESTION}\nexit\n", env=env, marker="<<< ")))
    results = {name: [] for name, _ in tools}
    for k in range(args.rounds):
        for name, fn in (tools if k % 2 == 0 else tools[::-1]):
            results[name].append(fn())
            print(f"round {k}: {name} answer {results[name][-1][0]:.2f} s, exit {results[name][-1][1]:.2f} s",
                  file=sys.stderr)
    print(f"adapter: {adapter}\n{'tool':16s} {'to answer s':>12s} {'to exit s':>10s}  answer")
    med = {}
    for name, runs in results.items():
        med[name] = statistics.median(r[0] for r in runs)
        print(f"{name:16s} {med[name]:12.2f} {statistics.median(r[1] for r in runs):10.2f}  {runs[-1][2][:60]!r}")
    if len(med) == 2:
        print(f"\nstart-to-answer: ms-swift / swiftlike = {med['ms-swift 4.6.0'] / med['swiftlike']:.2f}x "
              f"(target >= 1.00x)")


if __name__ == "__main__":
    main()
