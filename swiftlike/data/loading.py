"""Load, check, sample, mix and split datasets into canonical rows `{"messages": [...], "tools"?: [...]}`."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

from .errors import DatasetError, Problem
from .formats import (FORMATS, RowError, detect_format, format_keys, normalize_format, rename_columns,
                      to_messages)
from .readers import Record, read_file
from .sources import Source, parse_dataset, resolve
from .validate import check_messages

log = logging.getLogger("swiftlike.data")


@dataclass
class DatasetSplits:
    train: list
    val: list
    skipped: int = 0  # bad rows left out (skip_bad_rows=True)
    problems: list = field(default_factory=list)


def convert_records(records: Iterable[Record], fmt: Optional[str] = None, columns: Optional[dict] = None):
    """Canonical rows and problems for the records of ONE file; its format is fixed by its first valid row."""
    rows, problems = [], []
    given = normalize_format(fmt)
    fixed = given
    for rec in records:
        if rec.row is None:
            problems.append(Problem(rec.location, rec.error))
            continue
        row = rename_columns(rec.row, columns)
        missing = [k for k in format_keys(fixed) if row.get(k) is None] if fixed else []
        if fixed is None or missing:
            found = detect_format(row)
            if found is None and not given:
                keys = ", ".join(sorted(map(str, row))) or "none"
                problems.append(Problem(rec.location, f"row in no known format (keys: {keys}); expected one of "
                                                      f"{', '.join(FORMATS)} (see swiftlike.data.formats)"))
                continue
            if fixed is None:
                fixed = found
            else:
                why = f"format {given} was given" if given else f"the file's first valid row is {fixed}"
                problems.append(Problem(rec.location, f"row is not in {fixed} format (missing "
                                                      f"{', '.join(missing)}; {why})"))
                continue
        try:
            canon = to_messages(row, fixed)
        except RowError as err:
            problems.append(Problem(rec.location, str(err)))
            continue
        reason = check_messages(canon)
        if reason:
            problems.append(Problem(rec.location, reason))
            continue
        rows.append(canon)
    return rows, problems


def read_source(source: Source, fmt: Optional[str] = None, columns: Optional[dict] = None):
    """All rows of a resolved source; `fmt` / `columns` from the caller override the registry's."""
    fmt = fmt or source.format
    columns = {**(source.columns or {}), **(columns or {})}
    if source.loader is not None:
        records = [Record(f"{source.name}[#{i}]", r) if isinstance(r, dict)
                   else Record(f"{source.name}[#{i}]", None, f"expected an object, got {type(r).__name__}")
                   for i, r in enumerate(source.loader())]
        return convert_records(records, fmt, columns)
    rows, problems = [], []
    for path in source.files:
        file_rows, file_problems = convert_records(read_file(path), fmt, columns)
        rows += file_rows
        problems += file_problems
    return rows, problems


def sample_rows(rows: list, n: int, rng: random.Random) -> list:
    """N rows without replacement; past len(rows) the whole data repeats, then the remainder is sampled."""
    if n <= len(rows):
        return rng.sample(rows, n)
    if not rows:
        raise DatasetError(f"cannot sample {n} rows from an empty dataset")
    return rows * (n // len(rows)) + rng.sample(rows, n % len(rows))


def read_dataset(text: str, *, seed: int = 42, format: Optional[str] = None, columns: Optional[dict] = None,
                 hub: Optional[str] = None, cache_dir=None, split: str = "train", **loader_kwargs):
    """One dataset argument (`NAME_OR_PATH[:subset][#N]`) -> (rows, problems); `#N` sampling applied."""
    ref = parse_dataset(text)
    source = resolve(ref, hub=hub, cache_dir=cache_dir, split=split, loader_kwargs=loader_kwargs)
    rows, problems = read_source(source, format, columns)
    if ref.n is not None:
        # Seeded by the argument too, so a dataset's sample does not depend on what it is mixed with.
        rows = sample_rows(rows, ref.n, random.Random(f"{seed}/{ref.text}"))
    return rows, problems


def split_rows(rows: list, ratio: float, seed: int = 42):
    """(train, val): a seeded `ratio` share of rows (at least one) goes to val."""
    if not 0 < ratio < 1:
        raise ValueError(f"split_dataset_ratio must be between 0 and 1, got {ratio}")
    n_val = max(1, int(len(rows) * ratio + 0.5))
    if n_val >= len(rows):
        raise DatasetError(f"split_dataset_ratio={ratio} leaves no training rows out of {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    return ([r for i, r in enumerate(rows) if i not in val_idx], [rows[i] for i in sorted(val_idx)])


def load_dataset(dataset: Union[str, Sequence[str]], val_dataset: Union[str, Sequence[str], None] = None, *,
                 split_dataset_ratio: float = 0.0, seed: int = 42, shuffle: bool = True,
                 format: Optional[str] = None, columns: Optional[dict] = None, skip_bad_rows: bool = False,
                 model_name=None, model_author=None, hub: Optional[str] = None, cache_dir=None) -> DatasetSplits:
    """Train (and val) rows from dataset arguments, checked before any training starts.

    Several datasets are concatenated then shuffled with `seed`. Without `val_dataset`, `split_dataset_ratio`
    splits val off the train rows. Bad rows raise one DatasetError listing them, or are skipped (counted in
    `.skipped`, logged once) with skip_bad_rows=True.
    """
    opts = dict(seed=seed, format=format, columns=columns, hub=hub, cache_dir=cache_dir,
                model_name=model_name, model_author=model_author)
    problems: list[Problem] = []

    def read_all(names, split):
        rows = []
        for text in [names] if isinstance(names, str) else list(names or []):
            got, bad = read_dataset(text, split=split, **opts)
            rows += got
            problems.extend(bad)
        return rows

    train = read_all(dataset, "train")
    val = read_all(val_dataset, "train")  # a val dataset is its own dataset: its train split is the data
    if problems and not skip_bad_rows:
        raise DatasetError.from_problems(problems)
    if problems:
        log.warning("skipped %d bad row(s); first: %s", len(problems), problems[0])
    if not train:
        raise DatasetError(f"dataset {dataset!r} has no usable rows")
    if shuffle:
        random.Random(seed).shuffle(train)
    if not val and split_dataset_ratio:
        train, val = split_rows(train, split_dataset_ratio, seed)
    return DatasetSplits(train, val, skipped=len(problems), problems=problems)
