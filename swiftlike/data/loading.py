"""Load, check, sample, mix and split datasets into canonical rows `{"messages": [...], "tools"?: [...]}`."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

from . import preference
from .errors import DatasetError, Problem
from .formats import (FORMATS, RowError, detect_format, format_keys, normalize_format, rename_columns,
                      sharegpt_roles, to_messages)
from .readers import Record, read_file
from .sources import Source, parse_dataset, resolve
from .validate import check_messages, media_reason, split_reference

log = logging.getLogger("swiftlike.data")


@dataclass
class DatasetSplits:
    train: list
    val: list
    skipped: int = 0  # bad rows left out (skip_bad_rows=True)
    problems: list = field(default_factory=list)


def convert_records(records: Iterable[Record], fmt: Optional[str] = None, columns: Optional[dict] = None,
                    roles: Optional[dict] = None, *, prompts: bool = False, kind: str = "sft"):
    """Canonical rows and problems for the records of ONE file; its format is fixed by its first valid row.

    With prompts=True the rows are prompts for inference: `{"messages", "response", "location", "tools"?}`, where
    a last assistant turn is the reference `response` and the prompt ends with a user (or tool) turn. Other kinds
    (preference, kto, text, rl: the other training stages) are read by swiftlike.data.preference, row by row.
    """
    if kind in preference.KINDS:
        return _convert_kind(records, columns, roles, kind)
    rows, problems = [], []
    given = normalize_format(fmt)
    if roles:
        sharegpt_roles(roles)  # a bad mapping is one error, not a problem on every row
    fixed = given
    for rec in records:
        if rec.row is None:
            problems.append(Problem(rec.location, rec.error))
            continue
        row = rename_columns(rec.row, columns)
        reason = media_reason(row)
        if reason:
            problems.append(Problem(rec.location, reason))
            continue
        missing = [k for k in format_keys(fixed, prompts) if row.get(k) is None] if fixed else []
        if fixed is None or missing:
            found = detect_format(row, prompts)
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
            canon = to_messages(row, fixed, roles)
        except RowError as err:
            problems.append(Problem(rec.location, str(err)))
            continue
        reference = None
        if prompts:
            canon, reference = split_reference(canon)
        reason = media_reason(canon) or check_messages(canon, prompt=prompts)
        if reason:
            problems.append(Problem(rec.location, reason))
            continue
        if prompts:
            canon = {**canon, "response": reference, "location": rec.location}
        rows.append(canon)
    return rows, problems


def _convert_kind(records, columns, roles, kind):
    rows, problems, wrong_kind = [], [], 0
    if roles:
        sharegpt_roles(roles)
    for rec in records:
        if rec.row is None:
            problems.append(Problem(rec.location, rec.error))
            continue
        try:
            converted = preference.convert(rename_columns(rec.row, columns), kind, roles)
        except RowError as err:
            problems.append(Problem(rec.location, str(err)))
            wrong_kind += isinstance(err, preference.WrongKind)
            continue
        rows += [{**row, "location": rec.location} for row in converted]
    if problems and not rows and wrong_kind == len(problems):
        more = f" (and its {len(problems) - 1} other rows)" if len(problems) > 1 else ""
        raise DatasetError(f"{problems[0]}{more}", problems)
    return rows, problems


def read_source(source: Source, fmt: Optional[str] = None, columns: Optional[dict] = None, *,
                prompts: bool = False, kind: str = "sft"):
    """All rows of a resolved source; `fmt` / `columns` from the caller override the registry's."""
    fmt = fmt or source.format
    own = source.text_columns if kind == "text" and source.text_columns is not None else source.columns
    columns = {**(own or {}), **(columns or {})}
    if source.loader is not None:
        records = [Record(f"{source.name}[#{i}]", r) if isinstance(r, dict)
                   else Record(f"{source.name}[#{i}]", None, f"expected an object, got {type(r).__name__}")
                   for i, r in enumerate(source.loader())]
        return convert_records(records, fmt, columns, source.roles, prompts=prompts, kind=kind)
    rows, problems = [], []
    for path in source.files:
        file_rows, file_problems = convert_records(read_file(path), fmt, columns, source.roles, prompts=prompts,
                                                   kind=kind)
        rows += file_rows
        problems += file_problems
    return rows, problems


def _groups(rows: list) -> list[list]:
    """Rows grouped by the source row they came from (a preference pair read by KTO gives two rows marked `pair`, at
    one `location`), in order; every other row is its own group."""
    groups, at = [], {}
    for row in rows:
        key = row.get("location") if isinstance(row, dict) and row.get("pair") else None
        if key is not None and key in at:
            groups[at[key]].append(row)
            continue
        if key is not None:
            at[key] = len(groups)
        groups.append([row])
    return groups


def sample_rows(rows: list, n: int, rng: random.Random, keep_order: bool = False) -> list:
    """N source rows without replacement; past their number the whole data repeats, then the remainder is sampled.
    The rows one source row gave (KTO's halves of a pair) are picked together.

    keep_order=True picks the same rows but returns them in their original order.
    """
    groups = _groups(rows)
    if n > len(groups) and not groups:
        raise DatasetError(f"cannot sample {n} rows from an empty dataset")
    # rng.sample over indices draws exactly what rng.sample(rows, n) would.
    picked = rng.sample(range(len(groups)), n) if n <= len(groups) else (
        list(range(len(groups))) * (n // len(groups)) + rng.sample(range(len(groups)), n % len(groups)))
    return [row for i in (sorted(picked) if keep_order else picked) for row in groups[i]]


def _read(text: str, *, seed: int, format, columns, hub, cache_dir, split: str = "train", dataset_info=None,
          prompts: bool = False, kind: str = "sft", **loader_kwargs):
    """(rows, problems, good rows read before `#N` sampling) for one dataset argument."""
    ref = parse_dataset(text)
    source = resolve(ref, hub=hub, cache_dir=cache_dir, split=split, loader_kwargs=loader_kwargs,
                     dataset_info=dataset_info)
    _check_kind(source, kind, prompts)
    rows, problems = read_source(source, format, columns, prompts=prompts, kind=kind)
    read = len(rows)
    n = ref.n if ref.n is not None else source.n
    if n is not None:
        # Seeded by the argument too, so a dataset's sample does not depend on what it is mixed with.
        rows = sample_rows(rows, n, random.Random(f"{seed}/{ref.text}"), keep_order=prompts)
    return rows, problems, read


_KIND_WORDS = {"preference": "preference data (chosen/rejected pairs)", "kto": "KTO feedback data (kto_tag)"}


def _check_kind(source: Source, kind: str, prompts: bool) -> None:
    """A dataset defined as preference or KTO data, asked for by a stage that reads something else: one line."""
    if source.kind is None or prompts or kind == source.kind or (kind == "kto" and source.kind == "preference"):
        return  # KTO reads a pair as a desirable and an undesirable row
    if kind == "sft":
        use = "--rlhf_type kto" if source.kind == "kto" else "--rlhf_type dpo (or orpo, simpo, cpo, rm, kto)"
        raise DatasetError(f"dataset {source.name!r} is {_KIND_WORDS[source.kind]}; train on it with "
                           f"`swiftlike rlhf {use}`")
    raise DatasetError(f"dataset {source.name!r} is {_KIND_WORDS[source.kind]}, not the {kind} rows this stage "
                       "reads" + ("; use it with --rlhf_type kto" if source.kind == "kto" else ""))


def read_dataset(text: str, *, seed: int = 42, format: Optional[str] = None, columns: Optional[dict] = None,
                 hub: Optional[str] = None, cache_dir=None, split: str = "train",
                 dataset_info: Optional[dict] = None, **loader_kwargs):
    """One dataset argument (`NAME_OR_PATH[:subset][#N]`) -> (rows, problems); `#N` sampling applied."""
    rows, problems, _ = _read(text, seed=seed, format=format, columns=columns, hub=hub, cache_dir=cache_dir,
                              split=split, dataset_info=dataset_info, **loader_kwargs)
    return rows, problems


def split_rows(rows: list, ratio: float, seed: int = 42):
    """(train, val): a seeded `ratio` share of the source rows (at least one) goes to val, with every row each gave
    (KTO's two halves of a pair stay on one side: a prompt in both would leak)."""
    if not 0 < ratio < 1:
        raise ValueError(f"split_dataset_ratio must be between 0 and 1, got {ratio}")
    groups = _groups(rows)
    n_val = max(1, int(len(groups) * ratio + 0.5))
    if n_val >= len(groups):
        raise DatasetError(f"split_dataset_ratio={ratio} leaves no training rows out of {len(rows)}")
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    val_rows = {id(r) for i in order[:n_val] for r in groups[i]}
    # each side keeps the rows' own order: KTO's KL term pairs a row with its neighbour's answer, so the halves of a
    # pair must not be put next to each other
    return [r for r in rows if id(r) not in val_rows], [r for r in rows if id(r) in val_rows]


def load_dataset(dataset: Union[str, Sequence[str]], val_dataset: Union[str, Sequence[str], None] = None, *,
                 split_dataset_ratio: float = 0.0, seed: int = 42, shuffle: bool = True,
                 format: Optional[str] = None, columns: Optional[dict] = None, skip_bad_rows: bool = False,
                 model_name=None, model_author=None, hub: Optional[str] = None, cache_dir=None,
                 dataset_info: Optional[dict] = None, kind: str = "sft",
                 max_samples: Optional[int] = None, bad_rows_hint: Optional[str] = None) -> DatasetSplits:
    """Train (and val) rows from dataset arguments, checked before any training starts.

    Several datasets are concatenated then shuffled with `seed`. Without `val_dataset`, `split_dataset_ratio`
    splits val off the train rows. Bad rows raise one DatasetError listing them, or are skipped (counted in
    `.skipped`, logged once) with skip_bad_rows=True, unless they are more than half of the rows read.
    `dataset_info` (read_dataset_info) defines names that resolve before the registry's. `kind`: sft rows, or
    the rows of another stage (preference, kto, text, rl: see swiftlike.data.preference). `max_samples` keeps
    each dataset argument's first rows (LLaMA-Factory's max_samples; `#N` samples, and repeats past the end).
    `bad_rows_hint` replaces "pass --skip_bad_rows" in the bad-rows error for callers without that option.
    """
    opts = dict(seed=seed, format=format, columns=columns, hub=hub, cache_dir=cache_dir, dataset_info=dataset_info,
                model_name=model_name, model_author=model_author, kind=kind)
    problems: list[Problem] = []
    good = 0

    def read_all(names, split):
        nonlocal good
        rows = []
        for text in [names] if isinstance(names, str) else list(names or []):
            got, bad, read = _read(text, split=split, **opts)
            rows += got[:max_samples] if max_samples else got
            good += read
            problems.extend(bad)
        return rows

    train = read_all(dataset, "train")
    val = read_all(val_dataset, "train")  # a val dataset is its own dataset: its train split is the data
    if problems and not skip_bad_rows:
        raise DatasetError.from_problems(problems, *([bad_rows_hint] if bad_rows_hint else []))
    total = good + len(problems)
    if len(problems) * 2 > total:
        # Skipping most of the data hides a wrong file or format; training on the rest would be a silent failure.
        first = "; ".join(str(p) for p in problems[:3])
        raise DatasetError(f"skipped {len(problems)} of {total} rows (more than half) — the data or its format is "
                           f"probably wrong; first problems: {first}", problems)
    if problems:
        log.warning("skipped %d bad row(s); first: %s", len(problems), problems[0])
    if not train:
        raise DatasetError(f"dataset {dataset!r} has no usable rows")
    if shuffle:
        random.Random(seed).shuffle(train)
    if not val and split_dataset_ratio:
        train, val = split_rows(train, split_dataset_ratio, seed)
    return DatasetSplits(train, val, skipped=len(problems), problems=problems)
