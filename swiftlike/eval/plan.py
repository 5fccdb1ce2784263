"""What an evaluation runs on, settled before any model loads: the rows (each with its reference), the adapters
(resolved, batchable, all on one base) and the base model's options. Every bad input fails here, in one line."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..registry import SwiftlikeError
from .arguments import EvalArguments


@dataclass
class Source:
    name: str  # the column of the table and the key of metrics.json
    given: str  # what the user typed
    path: Path
    manifest: dict


@dataclass
class Plan:
    args: EvalArguments
    rows: list  # {"messages", "response", "location"}
    datasets: list  # [{"name", "sha256", "rows"}]
    base: object  # ModelArguments of the base model
    adapters: list = field(default_factory=list)  # [Source], batched LoRA adapters
    model_name: Optional[str] = None  # a full model given as --ckpt_dir (evaluated alone, as the base)
    model_path: Optional[Path] = None
    with_base: bool = True
    reward: bool = False  # reward models (--rlhf_type rm): the rows are preference pairs, ranked (reward.py)


def dataset_digest(name: str, rows: list) -> str:
    """sha256 of the file when `name` is one local file, else of the rows evaluated (prompt and reference)."""
    from ..checksums import sha256_file

    path = Path(name.split("#", 1)[0]).expanduser()
    if path.is_file():
        return sha256_file(path)
    text = json.dumps([[r["messages"], r["response"]] for r in rows], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_rows(names: list) -> tuple[list, list]:
    """(rows, dataset records); a row without a reference answer is an error naming file:line."""
    from ..data import load_prompts

    rows, datasets = [], []
    for name in names:
        part = load_prompts(name)
        missing = [r for r in part if not (isinstance(r.get("response"), str) and r["response"].strip())]
        if missing:
            raise SwiftlikeError(f"{missing[0].get('location', name)}: the row has no reference answer (a final "
                                 f"assistant turn, `response` or `output`); eval scores answers against it — add "
                                 f"one, or use `swiftlike infer --val_dataset` to only answer")
        datasets.append({"name": name, "sha256": dataset_digest(name, part), "rows": len(part)})
        rows += part
    return rows, datasets


def _unique(name: str, taken: set) -> str:
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}-{n}"
    taken.add(out)
    return out


def make_plan(args: EvalArguments) -> Plan:
    """Check everything that can be checked without loading a model."""
    from ..adapters import resolve
    from ..checkpoint import check_base, is_adapter_dir, is_reward_model, read_manifest, saved_args
    from ..infer import base_options
    from .reward import read_pairs

    args.check()
    opts = args.model_arguments()
    hint = opts.model_cache_dir or opts.model or opts.model_type
    resolved = []
    for text in args.sources():
        path = Path(resolve(text, base=None if args.force else hint, force=args.force))
        if not path.is_dir():
            raise SwiftlikeError(f"{text}: no such directory")
        resolved.append((text, path))
    from ..train.rlhf.reward_model import is_hf_reward_model

    reward = [is_reward_model(p) or is_hf_reward_model(p) for _, p in resolved]
    for text, path in resolved:
        if is_hf_reward_model(path) and not args.template:
            from ..models.resolve import infer_spec

            if infer_spec(path).template == "auto":
                raise SwiftlikeError(f"{text}: cannot tell which chat template this reward model reads "
                                     f"conversations in; pass --template NAME (see `swiftlike templates list`)")
    if any(reward) and not all(reward):
        text = next(t for (t, _), r in zip(resolved, reward) if not r)
        raise SwiftlikeError(f"{text}: not a reward model; evaluate reward models (--rlhf_type rm) and "
                             f"generating models in separate runs")
    rows, datasets = [], []
    if any(reward):
        if args.eval_backend != "native":
            raise SwiftlikeError("a reward model ranks preference pairs (--val_dataset); --eval_backend lm_eval "
                                 "generates, which a reward model cannot")
        rows, datasets = read_pairs(args.val_dataset)
    elif args.eval_backend == "native":
        from .scores import check_installed

        check_installed()
        rows, datasets = read_rows(args.val_dataset)
    if args.eval_backend == "lm_eval":
        from .harness import check_tasks

        check_tasks(args)
    full = [(t, p) for t, p in resolved if not is_adapter_dir(p)]
    if full and len(resolved) > 1:
        raise SwiftlikeError(f"{full[0][0]}: a full model, not an adapter; evaluate full models one at a time "
                             f"(--ckpt_dir), adapters together (--adapters)")
    first = resolved[0][1] if resolved else None
    base = base_options(opts, first, saved_args(first) if first else {}, read_manifest(first) if first else {})
    plan = Plan(args, rows, datasets, base, with_base=args.eval_base and not any(reward), reward=any(reward))
    if full:
        plan.model_name, plan.model_path, plan.with_base = full[0][1].name, full[0][1], False
        return plan
    taken = {"base"}
    base_type = base.model_type
    for text, path in resolved:
        if args.eval_backend == "native" and not plan.reward:
            from ..infer.lora import lora_config

            lora_config(path)  # LoRA only: DoRA and saved modules cannot be batched per row
        manifest = read_manifest(path)
        if base_type and manifest.get("base_model_type") and not args.force:
            check_base(manifest, base_model_type=base_type, where=f"{text}: adapter")
        name = path.name if path.name not in ("", ".") else text
        plan.adapters.append(Source(_unique(name, taken), text, path, manifest))
    return plan
