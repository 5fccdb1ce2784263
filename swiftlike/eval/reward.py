"""`swiftlike eval` on reward models (checkpoints of `--rlhf_type rm`): both answers of every preference pair are
scored, and a pair counts as ranked right when the chosen answer scores higher. The pairs are read, checked and
encoded exactly as `--rlhf_type rm` trained on them (any preference format, `file:line` errors, the checkpoint's
template), and each sequence is scored the way the trainer scored it (right-padded batches through the
sequence-classification head, read at the last token; for an implicit reward model, beta x the answer's
log-probability ratio to the base)."""
from __future__ import annotations

from ..registry import SwiftlikeError


def read_pairs(names: list) -> tuple[list, list]:
    """(canonical preference rows, dataset records); a file of other rows fails naming file:line and the formats."""
    from ..data import load_dataset
    from .plan import dataset_digest

    rows, datasets = [], []
    for name in names:
        # eval ranks every pair it is given (a skipped pair would change the accuracy): no --skip_bad_rows here
        part = load_dataset([name], shuffle=False, kind="preference",
                            bad_rows_hint="fix them (eval ranks every pair given)").train
        text = [{"messages": r["messages"], "response": [r["chosen"], r["rejected"]]} for r in part]
        datasets.append({"name": name, "sha256": dataset_digest(name, text), "rows": len(part)})
        rows += [{**r, "dataset": name} for r in part]
    return rows, datasets


def rank_all(plan, progress: bool = True) -> tuple[dict, list]:
    """({model name: accuracy, margin, mean scores}, predictions) for every reward model of the plan, one at a time
    (each carries its own trained body)."""
    models, scores = {}, {}
    for source in plan.adapters or [_full(plan)]:
        scores[source.name] = _score(plan, source, progress)
        models[source.name] = summary(scores[source.name], plan.rows)
    predictions = [{"prompt": r["messages"], "chosen": r["chosen"], "rejected": r["rejected"],
                    "location": r.get("location"),
                    "scores": {name: {"chosen": s[i][0], "rejected": s[i][1]} for name, s in scores.items()}}
                   for i, r in enumerate(plan.rows)]
    return models, predictions


def summary(scores: list, rows: list) -> dict:
    """Accuracy (ties count as wrong), the mean margin and scores, and the accuracy per dataset when there are
    several."""
    right = [c > r for c, r in scores]
    out = {"pairs": len(scores), "accuracy": round(sum(right) / len(scores), 6),
           "margin": round(sum(c - r for c, r in scores) / len(scores), 6),
           "chosen_score": round(sum(c for c, _ in scores) / len(scores), 6),
           "rejected_score": round(sum(r for _, r in scores) / len(scores), 6)}
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    if len(names) > 1:
        for name in names:
            mine = [ok for ok, r in zip(right, rows) if r["dataset"] == name]
            out[f"accuracy[{name}]"] = round(sum(mine) / len(mine), 6)
    return out


def _full(plan):
    from .plan import Source

    return Source(plan.model_name, str(plan.model_path), plan.model_path, {})


def _score(plan, source, progress: bool) -> list:
    """[(chosen score, rejected score)] of every pair under one reward model."""
    import torch

    from ..train.rlhf.encode import TooLong, encode_pair
    from ..train.rlhf.reward_scorer import RewardScorer

    args = plan.args
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    resolved = plan.base.resolve_model()
    if source.manifest.get("base_fingerprint") and not args.force:  # scores read the base's features: its own base
        from ..checkpoint import base_fingerprint, check_base

        check_base(source.manifest, base_model_type=plan.base.model_type or resolved.spec.name,
                   fingerprint=base_fingerprint(resolved.path), where=f"{source.given}: reward model")
    scorer = RewardScorer(source.path, base_path=resolved.path, default_template=resolved.spec.template,
                          template=args.template, system=args.system, dtype=args.torch_dtype,
                          trust_remote_code=args.trust_remote_code)
    sequences, starts = [], []  # an implicit reward model sums over the answer, which starts after the prompt
    for row in plan.rows:
        try:
            pair = encode_pair(scorer.template, row, None)
        except (TooLong, ValueError) as err:
            raise SwiftlikeError(f"{row.get('location', '?')}: {err}") from None
        sequences += [pair["prompt_ids"] + pair["chosen_ids"], pair["prompt_ids"] + pair["rejected_ids"]]
        starts += [len(pair["prompt_ids"])] * 2
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(plan.rows), desc=f"rank {source.name}", unit="pair", file=sys.stderr)
    step = max(2, args.max_batch_size - args.max_batch_size % 2)  # whole pairs per batch
    try:
        scores = scorer.score_ids(sequences, starts, step, on_batch=bar and (lambda n: bar.update(n // 2)))
    finally:
        if bar is not None:
            bar.close()
    out = list(zip(scores[0::2], scores[1::2]))
    return [(round(c, 6), round(r, 6)) for c, r in out]
