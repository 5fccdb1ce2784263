"""Read rows from .jsonl / .json / .csv (/ .parquet with pyarrow) files and directories of them.

Every row comes with its location, so problems can be reported as `file:line` (JSONL, CSV) or `file[#i]`
(0-based element index of a JSON array or parquet table).
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from .errors import DatasetError

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# Plain text (pretraining): one row {"text": line} per non-empty line, as HF datasets' "text" loader reads it. A
# directory's .txt files are its data only when it holds no structured data files.
TEXT_SUFFIXES = (".txt",)
# Metadata that hub snapshots carry next to the data (HF `datasets`, ModelScope).
METADATA_FILES = {"dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json",
                  "configuration.json", "dataset_infos.jsonl", "README.json"}
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"),
                 "test": ("test",), "eval": ("eval", "validation", "valid", "val", "dev")}
_ANY_SPLIT = re.compile(r"(?:^|[\W_])(train|test|validation|valid|val|dev|eval)(?:[\W_]|$)")


class Record(NamedTuple):
    location: str
    row: Optional[dict]  # None when the text could not be parsed
    error: Optional[str] = None


def read_file(path: Path) -> Iterator[Record]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    elif suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in TEXT_SUFFIXES:
        yield from _read_text(path)
    else:
        raise DatasetError(f"{path}: unsupported file type {suffix!r}; use one of "
                           f"{', '.join(DATA_SUFFIXES + TEXT_SUFFIXES)}")


def _read_text(path: Path) -> Iterator[Record]:
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip():
            yield Record(f"{path}:{lineno}", {"text": line})


def _read_jsonl(path: Path, text: str | None = None) -> Iterator[Record]:
    if text is None:
        text = path.read_text(encoding="utf-8-sig")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        loc = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield Record(loc, None, f"invalid JSON ({err.msg} at column {err.colno})")
            continue
        yield _as_row(loc, row)


def _read_json(path: Path) -> Iterator[Record]:
    text = path.read_text(encoding="utf-8-sig")
    # Many hub repos name JSON-lines files `.json`: anything not starting with '[' is read line by line.
    if not text.lstrip().startswith("["):
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            yield from _read_jsonl(path, text)
            return
        yield _as_row(f"{path}[#0]", row)
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        yield Record(f"{path}:{err.lineno}", None, f"invalid JSON ({err.msg} at column {err.colno}); "
                                                   "the whole file is unusable")
        return
    for i, row in enumerate(rows):
        yield _as_row(f"{path}[#{i}]", row)


def _read_csv(path: Path) -> Iterator[Record]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long responses exceed the 128 KiB default
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        start = reader.line_num + 1  # rows may span lines (quoted newlines): report where each starts
        for values in reader:
            loc = f"{path}:{start}"
            start = reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                yield Record(loc, None, f"CSV row has {len(values)} fields, the header has {len(header)}")
                continue
            yield Record(loc, dict(zip(header, values)))


def _read_parquet(path: Path) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield _as_row(f"{path}[#{i}]", row)


def _as_row(loc: str, row) -> Record:
    if not isinstance(row, dict):
        return Record(loc, None, f"expected a JSON object, got {type(row).__name__}")
    return Record(loc, row)


def data_files(root: Path, split: str | None = "train") -> list[Path]:
    """The data files under a directory (sorted), limited to `split` when file names mark splits.

    A directory with `train.jsonl` and `test.jsonl` gives only `train.jsonl` for split "train"; a directory whose
    names mark no split gives all its files.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    candidates = [p for p in root.rglob("*") if p.is_file() and p.name not in METADATA_FILES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    files = sorted(p for p in candidates if p.suffix.lower() in DATA_SUFFIXES)
    texts = sorted(p for p in candidates if p.suffix.lower() in TEXT_SUFFIXES)
    if files and texts:  # text files are read only where a directory holds no data files: say so, not silently
        import logging

        logging.getLogger("swiftlike").warning(
            "%s: reading its %d data file(s), not its %d text file(s) (%s); pass a text file itself to read it",
            root, len(files), len(texts), ", ".join(p.name for p in texts[:3]) + (", ..." if len(texts) > 3 else ""))
    files = files or texts
    if split:
        def marks(p):
            return {m.group(1) for m in _ANY_SPLIT.finditer(str(p.relative_to(root)).lower())}
        if any(marks(p) for p in files):
            wanted = set(SPLIT_ALIASES.get(split, (split,)))
            files = [p for p in files if marks(p) & wanted]
    return files
