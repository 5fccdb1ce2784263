"""The results of an evaluation on disk and on screen: `eval_result/<time>/metrics.json` and `predictions.jsonl`,
written into a temporary directory and renamed (never half there), and a table with one column per model."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

ORDER = ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match", "loss", "perplexity")


def result_dir(root) -> Path:
    """root/eval_result/<YYYYMMDD-HHMMSS>[-N]: a name no earlier run took."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = Path(root) / "eval_result"
    path, n = parent / stamp, 1
    while path.exists():
        n += 1
        path = parent / f"{stamp}-{n}"
    return path


def write(out: Path, metrics: dict, predictions: list | None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        if predictions is not None:
            with open(tmp / "predictions.jsonl", "w", encoding="utf-8") as f:
                for row in predictions:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def table(models: dict) -> str:
    """Metrics down, models across (the base first)."""
    names = list(models)
    keys = [k for k in ORDER if any(k in m for m in models.values())]
    keys += sorted({k for m in models.values() for k, v in m.items()
                    if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool)})
    cells = [["metric", *names]]
    for key in keys:
        cells.append([key, *(_fmt(models[n].get(key)) for n in names)])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)
