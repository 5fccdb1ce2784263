"""`swiftlike eval`: generate answers for a dataset's prompts and score them against the references (BLEU-4,
ROUGE-1/2/L, exact match) with the teacher-forced loss and perplexity of the references; several adapters together
on the batched multi-LoRA engine beside their base; benchmark suites through lm-evaluation-harness; reward models
(`--rlhf_type rm` checkpoints) rank preference pairs instead.

    from swiftlike.eval import EvalArguments, evaluate
    outcome = evaluate(EvalArguments(ckpt_dir="output/…/checkpoint-50", val_dataset=["eval.jsonl"]))
    outcome.metrics["models"]["checkpoint-50"]["rouge-l"]

Modules: arguments (the options), plan (inputs checked before any model loads), runner (the engine pass and the
loss), scores (text metrics), harness (lm-eval), reward (reward models), report (files and table), record (into the
checkpoint).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from .arguments import EvalArguments

__all__ = ["EvalArguments", "evaluate", "Outcome"]


@dataclass
class Outcome:
    directory: Path  # eval_result/<time>/
    metrics: dict  # what metrics.json holds
    table: str
    recorded: list  # checkpoints whose manifest and card now carry the metrics


def _default_root(plan) -> Path:
    """The checkpoint's own dir for one local checkpoint (not one in the adapter store, which is sealed), else the
    working directory."""
    from ..adapters.store import store_root

    args = plan.args
    if args.output_dir:
        return Path(args.output_dir)
    if args.ckpt_dir and not args.adapters:
        path = Path(args.ckpt_dir).expanduser()
        from ..train.rlhf.reward_model import is_hf_reward_model

        # results beside a checkpoint; not inside a Hugging Face model's directory (a hub cache snapshot, say)
        if path.is_dir() and not path.resolve().is_relative_to(store_root().resolve()) \
                and not is_hf_reward_model(path):
            return path
    return Path(".")


def evaluate(args: EvalArguments, *, progress: bool = True) -> Outcome:
    from .plan import make_plan
    from .report import result_dir, table, write

    plan = make_plan(args)  # every input error, before the model loads
    root = _default_root(plan)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    backend = "reward" if plan.reward else args.eval_backend
    if plan.reward:
        from .reward import rank_all

        models, predictions = rank_all(plan, progress)
        extra = {}
    elif args.eval_backend == "lm_eval":
        from .harness import run_harness

        models, extra = run_harness(plan), {"tasks": args.task_list()}
        predictions = None
    else:
        models, predictions = _native(plan, progress)
        extra = {"generation": args.generation() | {"seed": args.seed}}
    metrics = {"created": started, "backend": backend, "datasets": plan.datasets,
               "rows": len(plan.rows), **extra,
               "adapters": {s.name: str(s.path) for s in plan.adapters}, "models": models}
    out = write(result_dir(root), metrics, predictions)
    recorded = []
    if args.record:
        from .record import record_all

        recorded = record_all(plan, metrics)
    return Outcome(out, metrics, table(models), recorded)


def _native(plan, progress: bool):
    from .runner import Session, generate_all, reference_loss
    from .scores import average, score

    session = Session(plan)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(plan.rows) * len(session.models), desc="eval", unit="answer", file=sys.stderr)
    try:
        seconds = generate_all(session, plan.rows, plan.args, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    reference_loss(session, plan.rows)
    models = {}
    for m in session.models:
        scored = [score(p, r["response"]) for p, r in zip(m.predictions, plan.rows)]
        models[m.name] = {**average(scored), "loss": _round(m.loss), "perplexity": _round(m.perplexity),
                          "generated_tokens": m.generated_tokens}
    for m in models.values():
        m["generation_seconds"] = round(seconds, 3)  # one pass for all of them together
    predictions = [{"prompt": r["messages"], "reference": r["response"], "location": r.get("location"),
                    "predictions": {m.name: m.predictions[i] for m in session.models}}
                   for i, r in enumerate(plan.rows)]
    return models, predictions


def _round(value):
    return round(value, 6) if value is not None else None
