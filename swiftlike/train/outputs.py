"""Run directories, logging.jsonl, loss.png and the swiftlike.json manifest of a checkpoint."""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from ..checksums import sha256_file

MANIFEST = "swiftlike.json"


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


def file_table(directory: Path, skip=(MANIFEST,)) -> dict:
    """{relative path: {sha256, size}} for every file (the manifest itself excluded)."""
    out = {}
    for path in sorted(Path(directory).rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel not in skip:
            out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def write_manifest(directory: Path, info: dict) -> dict:
    manifest = {"format": "swiftlike.adapter/1", **info, "files": file_table(directory)}
    tmp = Path(directory) / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, Path(directory) / MANIFEST)
    return manifest


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
