"""The built-in `self-cognition` dataset: "who are you" questions in Chinese and English.

`{{NAME}}` / `{{AUTHOR}}` in self_cognition.jsonl are filled from `model_name` / `model_author`, each one value for
both languages or a (zh, en) pair, as in ms-swift's `--model_name 小黄 'Xiao Huang' --model_author 魔搭 ModelScope`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

from .errors import DatasetError

DATA_FILE = Path(__file__).with_name("self_cognition.jsonl")
Names = Union[str, Sequence[str], None]


def _pair(value: Names, what: str) -> tuple:
    if isinstance(value, str):
        return value, value
    values = [v for v in (value or []) if v]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise DatasetError(f"self-cognition needs --{what} as one value or a (zh, en) pair, e.g. "
                       f"--model_name 小黄 'Xiao Huang' --model_author 魔搭 ModelScope; got {value!r}")


def load(model_name: Names = None, model_author: Names = None, subset: Optional[str] = None, **_) -> list:
    """Rows `{query, response, tag}` with the placeholders filled; subset "zh" or "en" keeps one language."""
    names, authors = _pair(model_name, "model_name"), _pair(model_author, "model_author")
    rows = []
    for line in DATA_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if subset and subset not in ("default", row["tag"]):
            continue
        i = 0 if row["tag"] == "zh" else 1
        for key in ("query", "response"):
            row[key] = row[key].replace("{{NAME}}", names[i]).replace("{{AUTHOR}}", authors[i])
        rows.append(row)
    return rows
