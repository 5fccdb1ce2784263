"""`swiftlike eval` of N adapters together (one base in memory, mixed-adapter batches on the multi-LoRA engine) vs
the same N evaluated one after another (N runs, each loading the base and batching its own rows).

    SWIFTLIKE_HOME=/tmp/slhome python bench/eval_adapters.py                    # 8 adapters, 8 rows, 32 tokens
    SWIFTLIKE_HOME=/tmp/slhome python bench/eval_adapters.py --adapters 4 --rows 4 --max_new_tokens 16

Makes N random-init LoRA adapters (rank 8, all linear layers) for the embedded SmolLM2-135M-Instruct and a small
dataset, checks that both ways give the same greedy answers, and prints wall times (model loads included) and the
generation time alone. In process, so the interpreter's start-up is left out of both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import TOPICS, make_adapters  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_type", default="smollm2-135m-instruct")
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--num_threads", type=int, default=None)
    p.add_argument("--workdir", default=None, help="Keep adapters and results here (default: a temp dir).")
    p.add_argument("--cli", action="store_true", help="Also time the commands a user runs: one `swiftlike eval "
                   "--adapters A1 … AN` against N `swiftlike eval --adapters Ai` (process start and model load "
                   "included).")
    a = p.parse_args()

    import torch

    from swiftlike.eval import EvalArguments, evaluate
    from swiftlike.models.options import ModelArguments

    if a.num_threads:
        torch.set_num_threads(a.num_threads)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="swiftlike-eval-bench-"))
    resolved = ModelArguments(model_type=a.model_type).resolve_model()
    dirs = make_adapters(resolved.path, work / "adapters", a.adapters, rank=8, template=resolved.spec.template)
    data = work / "eval.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"In one sentence, what is interesting about {t}?"},
        {"role": "assistant", "content": f"{t.capitalize()} are interesting because they surprise people."}]}) + "\n"
        for t in (TOPICS * 4)[:a.rows]))
    common = dict(model_type=a.model_type, val_dataset=[str(data)], max_new_tokens=a.max_new_tokens,
                  eval_base=False, record=False)

    # warm-up: lazy imports (scoring libraries, kernels) and the page cache, so neither side pays them
    evaluate(EvalArguments(adapters=[str(dirs[0])], output_dir=str(work / "warm-up"),
                           **{**common, "max_new_tokens": 2}), progress=False)
    t0 = time.perf_counter()
    together = evaluate(EvalArguments(adapters=[str(d) for d in dirs], output_dir=str(work / "together"),
                                      **common), progress=False)
    t_together = time.perf_counter() - t0
    gen_together = next(iter(together.metrics["models"].values()))["generation_seconds"]

    t0 = time.perf_counter()
    gen_alone, alone_preds = 0.0, {}
    for d in dirs:
        one = evaluate(EvalArguments(adapters=[str(d)], output_dir=str(work / "alone"), **common), progress=False)
        gen_alone += one.metrics["models"][d.name]["generation_seconds"]
        alone_preds[d.name] = [json.loads(line)["predictions"][d.name]
                               for line in (one.directory / "predictions.jsonl").read_text().splitlines()]
    t_alone = time.perf_counter() - t0
    together_preds = [json.loads(line)["predictions"]
                      for line in (together.directory / "predictions.jsonl").read_text().splitlines()]
    same = all([row[d.name] for row in together_preds] == alone_preds[d.name] for d in dirs)
    tokens = sum(m["generated_tokens"] for m in together.metrics["models"].values())

    print(f"{a.adapters} adapters x {a.rows} rows, max_new_tokens {a.max_new_tokens}, {a.model_type}, "
          f"{torch.get_num_threads()} threads ({os.cpu_count()} CPUs); {tokens} tokens generated per side")
    print(f"  together:        {t_together:7.1f} s wall ({gen_together:.1f} s generating)")
    print(f"  one after other: {t_alone:7.1f} s wall ({gen_alone:.1f} s generating)")
    print(f"  ratio:           {t_alone / t_together:7.2f}x wall, {gen_alone / gen_together:.2f}x generation")
    print(f"  same greedy answers both ways: {same}")
    if a.cli:
        import subprocess

        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        flags = ["--model_type", a.model_type, "--val_dataset", str(data), "--max_new_tokens", str(a.max_new_tokens),
                 "--eval_base", "false", "--record", "false", "--output_dir", str(work / "cli")]
        if a.num_threads:
            flags += ["--num_threads", str(a.num_threads)]

        def cli(*adapters):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "swiftlike", "eval", "--adapters", *map(str, adapters), *flags],
                           check=True, capture_output=True, env=env)
            return time.perf_counter() - t

        c_together = cli(*dirs)
        c_alone = sum(cli(d) for d in dirs)
        print(f"  commands: 1 x `swiftlike eval --adapters` ({a.adapters}) {c_together:.1f} s, "
              f"{a.adapters} x one adapter {c_alone:.1f} s: {c_alone / c_together:.2f}x")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
