"""Prompt rows for inference: the same files and formats as training, where the reply may be left out.

    prompts = load_prompts("eval.jsonl#50")
    prompts[0] == {"messages": [{"role": "user", "content": "2+2?"}], "response": "4", "location": "eval.jsonl:1"}

A row ending with an assistant turn gives that turn as the reference `response` (None when the reply is missing
or empty). Rows keep their order; `#N` picks the rows training would sample, in file order. No torch import: this
runs before a model loads.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

from .errors import DatasetError, Problem
from .loading import _read


def load_prompts(dataset: Union[str, Sequence[str]], *, columns: Optional[dict] = None, format: Optional[str] = None,
                 hub: Optional[str] = None, dataset_info: Optional[dict] = None, seed: int = 42,
                 cache_dir=None, split: str = "train") -> list[dict]:
    """`{"messages", "response", "location", "tools"?}` for every row; bad rows raise one DatasetError.

    `split` picks the files of a directory or hub dataset whose names mark splits (test.jsonl...).
    """
    names = [dataset] if isinstance(dataset, str) else list(dataset)
    prompts: list[dict] = []
    problems: list[Problem] = []
    for text in names:
        rows, bad, _ = _read(text, seed=seed, format=format, columns=columns, hub=hub, cache_dir=cache_dir,
                             split=split, dataset_info=dataset_info, prompts=True)
        prompts += rows
        problems += bad
    if problems:
        raise DatasetError.from_problems(problems, hint="fix or remove them")
    if not prompts:
        raise DatasetError(f"dataset {dataset!r} has no rows")
    return prompts
