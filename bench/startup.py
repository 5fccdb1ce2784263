"""Start-up time of `swiftlike --help` and `swiftlike models list` (best and median of N fresh processes).

    python bench/startup.py [--runs 10] [--compare-swift PATH_TO_swift]
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time


def measure(cmd, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--compare-swift", help="path to ms-swift's `swift` executable (own virtualenv)")
    args = ap.parse_args()
    exe = shutil.which("swiftlike") or sys.executable
    base = [exe] if exe.endswith("swiftlike") else [exe, "-m", "swiftlike"]
    rows = [("swiftlike --help", base + ["--help"]), ("swiftlike models list", base + ["models", "list"]),
            ("swiftlike templates list", base + ["templates", "list"])]
    if args.compare_swift:
        rows.append(("swift sft --help (ms-swift)", [args.compare_swift, "sft", "--help"]))
    print(f"{'command':32s} {'best s':>8s} {'median s':>9s}  target")
    for label, cmd in rows:
        best, med = measure(cmd, args.runs if "ms-swift" not in label else max(3, args.runs // 3))
        target = "<= 0.30" if label.startswith("swiftlike") else ""
        print(f"{label:32s} {best:8.3f} {med:9.3f}  {target}")


if __name__ == "__main__":
    main()
