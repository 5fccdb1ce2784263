"""The metrics of an evaluation into the adapter checkpoints it evaluated (their manifest and model card), so that
`adapter push` publishes them and `adapter show` prints them. Checkpoints in the adapter store are sealed at install
and left alone."""
from __future__ import annotations

import sys

from ..registry import SwiftlikeError

SCORES = ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match", "loss", "perplexity")


def entry_for(name: str, metrics: dict) -> dict:
    """The manifest's record of model `name`'s result (with the base's beside it when it was evaluated)."""
    models = metrics["models"]

    def numbers(m):
        return {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and (k in SCORES or metrics.get("backend") != "native")}

    entry = {"date": metrics["created"], "backend": metrics["backend"],
             "datasets": metrics.get("datasets") or [], "rows": metrics.get("rows") or 0,
             "metrics": numbers(models[name])}
    if metrics.get("tasks"):
        entry["tasks"] = list(metrics["tasks"])
    if "base" in models and name != "base":
        entry["baseline"] = numbers(models["base"])
    return entry


def record_all(plan, metrics: dict) -> list:
    """Record into every evaluated local checkpoint that has a manifest; returns their paths."""
    from ..adapters.store import store_root
    from ..checkpoint import add_evaluation, read_manifest

    store = store_root().resolve()
    done = []
    targets = [(s.name, s.path) for s in plan.adapters]
    if plan.model_path is not None:
        targets.append((plan.model_name, plan.model_path))
    for name, path in targets:
        if path is None or name not in metrics["models"]:
            continue
        if path.resolve().is_relative_to(store):
            print(f"swiftlike: {name} is installed in the adapter store (sealed); its metrics are in "
                  f"metrics.json only", file=sys.stderr)
            continue
        if not read_manifest(path):
            continue
        try:
            add_evaluation(path, entry_for(name, metrics))
        except (OSError, SwiftlikeError) as err:
            print(f"swiftlike: could not record the metrics in {path}: {err}", file=sys.stderr)
            continue
        done.append(path)
    return done
