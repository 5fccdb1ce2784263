"""Run directories and loss.png (the checkpoint format itself lives in swiftlike.checkpoint)."""
from __future__ import annotations

import json
import re
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


def plot_loss(log_file: Path, out: Path) -> bool:
    """loss.png with train and eval loss against step (matplotlib, no display)."""
    rows = [json.loads(line) for line in Path(log_file).read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
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


def find_last_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (it has a manifest) under root or its newest v<N>-* run."""
    candidates = list(root.glob("checkpoint-*/swiftlike.json")) + list(root.glob("v*-*/checkpoint-*/swiftlike.json"))
    if not candidates:
        return None
    return max((p.parent for p in candidates), key=lambda p: (p.parent.name, int(p.name.split("-")[-1])))


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
