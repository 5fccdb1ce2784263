"""Run directories and loss.png (the checkpoint format itself lives in swiftlike.checkpoint)."""
from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path


def run_dir(output_dir: str, model_type: str, add_suffix: bool) -> Path:
    """OUTPUT/<model_type>/v<N>-<YYYYMMDD-HHMMSS>/ (N one more than the largest there), or OUTPUT itself."""
    root = Path(output_dir)
    if not add_suffix:
        root.mkdir(parents=True, exist_ok=True)
        return root
    parent = root / model_type
    parent.mkdir(parents=True, exist_ok=True)
    versions = [int(m.group(1)) for p in parent.iterdir() if (m := re.match(r"v(\d+)-", p.name))]
    while True:
        path = parent / f"v{max(versions, default=-1) + 1}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # two runs started in the same second
            versions.append(max(versions, default=-1) + 1)


def finite(value):
    """`value` with NaN and infinities as None: JSON has no NaN (PPO logs val/ratio_var as NaN on one batch)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def plot_loss(log_file: Path, out: Path, key: str = "loss") -> bool:
    """loss.png with train (`key`: PPO logs its policy loss as loss/policy_avg) and eval loss against step
    (matplotlib, no display)."""
    rows = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
    train = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
    if not train and not evals:
        return False
    # Figure + the Agg canvas directly: no pyplot, no global figure state, no backend switch for the caller
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return True


def checkpoint_step(path) -> int | None:
    """N of a training checkpoint dir named `checkpoint-N`; None for anything else (`checkpoint-4-merged`, which
    merge-lora writes beside it, is not one)."""
    m = re.fullmatch(r"checkpoint-(\d+)", Path(path).name)
    return int(m[1]) if m else None


def rotate_checkpoints(run_dir, limit: int | None, best: str | None = None) -> None:
    """Keep the newest `limit` training checkpoints of run_dir (and the best one); transformers' own rotation counts
    any `checkpoint-<N>*` dir, so it deleted the merged models merge-lora writes beside them."""
    if not limit or limit <= 0:
        return
    found = sorted((step, p) for p in Path(run_dir).iterdir() if p.is_dir()
                   for step in [checkpoint_step(p)] if step is not None)
    if len(found) <= limit:
        return
    protected = {found[-1][1]} | ({Path(best)} if best else set())  # the newest (resume) and the best, as transformers
    remaining = len(found)
    for _, p in found:
        if remaining <= max(limit, len(protected)):
            break
        if p not in protected:
            shutil.rmtree(p, ignore_errors=True)
            remaining -= 1


def find_last_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (it has a manifest) under root or its newest v<N>-* run."""
    candidates = [p.parent for p in (list(root.glob("checkpoint-*/swiftlike.json"))
                                     + list(root.glob("v*-*/checkpoint-*/swiftlike.json")))
                  if checkpoint_step(p.parent) is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (_version(p.parent.name), checkpoint_step(p)))


def _version(name: str) -> int:
    """N of a `v<N>-<time>` run dir (v10 after v9); -1 for the output dir itself."""
    m = re.match(r"v(\d+)-", name)
    return int(m[1]) if m else -1


def resolve_resume(value: str | None, output_dir: str, model_type: str) -> Path | None:
    """--resume_from_checkpoint DIR|last -> the checkpoint dir to resume from (None: a new run)."""
    from ..registry import SwiftlikeError

    if not value:
        return None
    if value == "last":
        root = Path(output_dir)
        found = find_last_checkpoint(root / model_type) or find_last_checkpoint(root)
        if found is None:
            raise SwiftlikeError(f"--resume_from_checkpoint last: no complete checkpoint under {root}")
        return found
    path = Path(value)
    if not (path / "trainer_state.json").exists():
        raise SwiftlikeError(f"--resume_from_checkpoint {path}: not a checkpoint dir (no trainer_state.json)")
    return path
