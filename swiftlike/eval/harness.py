"""Benchmark suites through EleutherAI's lm-evaluation-harness (`lm-eval`): its Hugging Face model class on the
base model with the adapter (`peft=`), the tasks by name (MMLU, C-Eval, CMMLU... or a local task YAML through
--include_path). Each task's scores go into metrics.json as `task/metric`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..registry import SwiftlikeError


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise SwiftlikeError("--eval_backend lm_eval needs lm-eval: pip install 'swiftlike[lm_eval]'") from None
    return lm_eval, TaskManager


def check_tasks(args):
    """The task manager, after every task was found (one line naming the unknown one, before a model loads)."""
    import difflib

    _, TaskManager = _lm_eval()
    if args.include_path and not Path(args.include_path).is_dir():
        raise SwiftlikeError(f"--include_path {args.include_path}: no such directory")
    manager = None
    if args.include_path:  # indexing lm-eval's thousands of built-in tasks takes a while: only when needed
        manager = TaskManager(include_path=args.include_path, include_defaults=False)
        if not set(args.task_list()) <= set(manager.all_tasks):
            manager = None
    manager = manager or TaskManager(include_path=args.include_path)
    known = set(manager.all_tasks)
    for task in args.task_list():
        if task not in known:
            near = difflib.get_close_matches(task, sorted(known), n=3)
            raise SwiftlikeError(f"--tasks {task}: not an lm-eval task" + (f" (did you mean {', '.join(near)}?)"
                                                                           if near else "") +
                                 "; `lm-eval ls tasks` lists them, --include_path adds a directory of task YAMLs")
    return manager


def run_harness(plan, manager=None) -> dict:
    """{model name: {"task/metric": value}} for the adapter (and the base beside it) or the model."""
    import torch

    lm_eval, _ = _lm_eval()
    args = plan.args
    manager = manager or check_tasks(args)
    resolved = plan.base.resolve_model()
    dtype = {"auto": "float32" if not torch.cuda.is_available() else "auto"}.get(args.torch_dtype, args.torch_dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = []
    if plan.adapters:
        runs.append((plan.adapters[0].name, str(plan.adapters[0].path)))
        if plan.with_base:
            runs.insert(0, ("base", None))
    else:
        runs.append((plan.model_name or "base", None))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = {}
    for name, adapter in runs:
        model_args = {"pretrained": str(resolved.path), "dtype": dtype, "trust_remote_code": args.trust_remote_code}
        if adapter:
            model_args["peft"] = adapter
        print(f"swiftlike: lm-eval {','.join(args.task_list())} on {name}", file=sys.stderr)
        results = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=args.task_list(),
                                          num_fewshot=args.num_fewshot, limit=_limit(args.limit), device=device,
                                          batch_size=args.max_batch_size, task_manager=manager,
                                          random_seed=args.seed, log_samples=False)
        scores = {}
        for task, values in (results or {}).get("results", {}).items():
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key \
                        and key != "sample_len":
                    scores[f"{task}/{key.split(',')[0]}"] = round(float(value), 6)
        out[name] = scores
    return out


def _limit(limit):
    if limit is None:
        return None
    return int(limit) if float(limit) >= 1 else float(limit)
