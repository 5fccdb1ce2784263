"""Dataset definitions from a LLaMA-Factory `dataset_info.json` or an ms-swift custom dataset_info file.

    specs = read_dataset_info("LLaMA-Factory/data")       # the `dataset_dir`, or the .json itself
    load_dataset("alpaca_en_demo#100", dataset_info=specs)

LLaMA-Factory's form is an object `name -> entry` (its data/README.md): `file_name` (relative to the json; a
file or a directory), `hf_hub_url`, `ms_hub_url`, `formatting` (alpaca | sharegpt), `subset`, `folder`, `split`,
`num_samples`, `columns` and `tags`. ms-swift's form is a list of entries with `dataset_path` / `ms_dataset_id` /
`hf_dataset_id`, `dataset_name`, `subsets`, `split` and `columns` (a rename map to its standard columns).

An entry swiftlike cannot train on (multimodal columns, loading scripts, unknown keys) is kept as a spec whose use
raises a one-line DatasetError naming the json and the entry, so the stock LLaMA-Factory file, which defines such
entries too, still serves its usable ones. The entry's default subset, `num_samples` and, for preference
(`ranking: true`) or KTO (`kto_tag`) data, its `kind` travel in `DatasetSpec.extra`: such data feeds
`swiftlike rlhf`, and sft refuses it in one line.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from ..registry import DatasetSpec
from .errors import DatasetError
from .formats import SHAREGPT_TAGS

INFO_FILE = "dataset_info.json"
# LLaMA-Factory column -> the swiftlike column of the same format (formats.py).
LF_COLUMNS = {"alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                         "history": "history", "tools": "tools"},
              "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools"}}
_LF_OTHER_COLUMNS = ("images", "videos", "audios", "chosen", "rejected", "kto_tag")
_LF_KEYS = ("file_name", "hf_hub_url", "ms_hub_url", "formatting", "ranking", "subset", "folder", "split",
            "num_samples", "columns", "tags", "file_sha1")
_LF_UNSUPPORTED = {"script_url": "a dataset loading script", "cloud_file_name": "a cloud storage file",
                   "om_hub_url": "the Modelers hub"}
_MS_KEYS = ("dataset_path", "ms_dataset_id", "hf_dataset_id", "dataset_name", "subsets", "split", "columns",
            "tags", "help")


class _Unusable(Exception):
    """An entry swiftlike cannot use; the message says why."""


def read_dataset_info(path) -> dict[str, DatasetSpec]:
    """name -> DatasetSpec for every entry of a dataset_info file (or of a directory's dataset_info.json)."""
    file = Path(os.path.expanduser(str(path))).absolute()
    if file.is_dir():
        file = file / INFO_FILE
    if not file.is_file():
        raise DatasetError(f"dataset_info {file} does not exist; pass a dataset_info.json or the directory "
                           "holding one")
    try:
        data = json.loads(file.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{file}:{err.lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
    if isinstance(data, dict):
        return {name: _spec(file, name, entry, _lf_entry) for name, entry in data.items()}
    if isinstance(data, list):
        return _ms_specs(file, data)
    raise DatasetError(f"{file}: expected an object of datasets (LLaMA-Factory) or a list (ms-swift), "
                       f"got {type(data).__name__}")


def _spec(file: Path, name: str, entry, convert) -> DatasetSpec:
    try:
        spec = convert(name, entry, file.parent)
    except _Unusable as err:
        return DatasetSpec(name, plugin=str(file), extra={"error": f"{file}: dataset {name!r}: {err}"})
    spec.plugin = str(file)
    return spec


def _lf_entry(name: str, entry, base: Path) -> DatasetSpec:
    if not isinstance(entry, dict):
        raise _Unusable(f"expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(_LF_KEYS) - set(_LF_UNSUPPORTED))
    if unknown:
        raise _Unusable(f"unknown key(s) {', '.join(unknown)}; LLaMA-Factory's are {', '.join(_LF_KEYS)}")
    fmt = entry.get("formatting") or "alpaca"
    if fmt not in LF_COLUMNS:
        raise _Unusable(f"formatting {fmt!r} is not supported; use alpaca or sharegpt")
    columns = _object(entry, "columns")
    # `ranking: true` rows are chosen/rejected pairs and `kto_tag` rows KTO feedback: data for `swiftlike rlhf`
    kind = "preference" if entry.get("ranking") else "kto" if columns.get("kto_tag") else None
    columns = _lf_columns(columns, fmt, kind)
    tags = _object(entry, "tags")
    bad_tags = sorted(set(tags) - set(SHAREGPT_TAGS))
    if bad_tags:
        raise _Unusable(f"unknown tags {', '.join(bad_tags)}; expected {', '.join(SHAREGPT_TAGS)}")
    for key, value in tags.items():
        if value is not None and not isinstance(value, str):
            raise _Unusable(f"tags.{key} must be a string")
    # LLaMA-Factory reads tags for sharegpt only.
    roles = {k: v for k, v in tags.items() if v} if fmt == "sharegpt" else {}
    hf, ms = _text(entry, "hf_hub_url"), _text(entry, "ms_hub_url")
    path = None
    if not (hf or ms):  # hub urls win over a file, as in LLaMA-Factory
        for key, what in _LF_UNSUPPORTED.items():
            if key in entry:
                raise _Unusable(f"{key}: {what} is not supported; point file_name at JSON/JSONL/CSV/parquet data")
        file_name = _text(entry, "file_name")
        if not file_name:
            raise _Unusable("needs file_name, hf_hub_url or ms_hub_url")
        path = _existing(base, file_name, "file_name")
    folder, subset = _text(entry, "folder"), _text(entry, "subset")
    subset = f"{folder}/{subset}" if folder and subset else folder or subset
    return DatasetSpec(name, hf=hf, ms=ms, path=path, format=fmt, split=_text(entry, "split") or "train",
                       subsets=[subset] if subset else [], columns=columns, roles=roles,
                       extra={"subset": subset, "num_samples": _num_samples(entry.get("num_samples")),
                              **({"kind": kind} if kind else {}), **_pretrain_columns(entry, fmt)})


def _pretrain_columns(entry: dict, fmt: str) -> dict:
    """LLaMA-Factory pretrains on an alpaca entry's prompt column (`columns: {"prompt": "text"}`, default
    `instruction`): the rename `swiftlike pt` uses instead of the sft one."""
    if fmt != "alpaca":
        return {}
    prompt = (entry.get("columns") or {}).get("prompt") or "instruction"
    return {"text_columns": {prompt: "text"}} if isinstance(prompt, str) else {}


def _lf_columns(columns: dict, fmt: str, kind: Optional[str] = None) -> dict:
    """LLaMA-Factory's `columns` (its column -> the data's column) as a swiftlike rename map (data -> swiftlike);
    `kind` "preference" (ranking) also maps `chosen`/`rejected`, "kto" maps `kto_tag`."""
    for key in ("images", "videos", "audios"):
        if columns.get(key):
            raise _Unusable(f"columns.{key}: multimodal data; swiftlike trains text-only models")
    own = dict(LF_COLUMNS[fmt], **{"preference": {"chosen": "chosen", "rejected": "rejected"},
                                   "kto": {"kto_tag": "kto_tag"}}.get(kind, {}))
    other = "sharegpt" if fmt == "alpaca" else "alpaca"
    out = {}
    for key, source in columns.items():
        if key in own:
            if source is not None and not isinstance(source, str):
                raise _Unusable(f"columns.{key} must be a column name")
            if source and source != own[key]:
                out[source] = own[key]
        elif key in LF_COLUMNS[other]:
            raise _Unusable(f"columns.{key} is a {other} column but formatting is {fmt}; set \"formatting\": "
                            f"\"{other}\" or use {', '.join(LF_COLUMNS[fmt])}")
        elif key not in _LF_OTHER_COLUMNS:  # chosen/rejected without ranking are unused, as in LLaMA-Factory
            raise _Unusable(f"unknown column key {key!r}; expected {', '.join(own)}")
    return out


def _ms_specs(file: Path, entries: list) -> dict[str, DatasetSpec]:
    specs: dict[str, DatasetSpec] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not any(entry.get(k) for k in ("dataset_path", "ms_dataset_id",
                                                                          "hf_dataset_id")):
            # Nothing names it, so it cannot be reported when used: the file itself is wrong.
            raise DatasetError(f"{file}[#{i}]: an ms-swift dataset_info entry needs dataset_path, ms_dataset_id or "
                               "hf_dataset_id")
        ids = [v for v in (entry.get("ms_dataset_id"), entry.get("hf_dataset_id")) if isinstance(v, str) and v]
        path = entry.get("dataset_path")
        name = (entry.get("dataset_name") or (Path(path).stem if isinstance(path, str) and path else None)
                or (ids[0] if ids else f"#{i}"))
        spec = _spec(file, str(name), entry, _ms_entry)
        # ms-swift users may pass the hub id of a dataset that also has a name.
        for key in dict.fromkeys([str(name), *ids]):
            if key in specs:
                raise DatasetError(f"{file}[#{i}]: dataset {key!r} is defined twice")
            specs[key] = spec
    return specs


def _ms_entry(name: str, entry: dict, base: Path) -> DatasetSpec:
    unknown = sorted(set(entry) - set(_MS_KEYS))
    if unknown:
        raise _Unusable(f"unknown key(s) {', '.join(unknown)}; supported: {', '.join(_MS_KEYS)}")
    columns = _object(entry, "columns")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in columns.items()):
        raise _Unusable("columns must map column names to column names")
    subsets = entry.get("subsets") or []
    if not isinstance(subsets, list) or not all(isinstance(s, str) for s in subsets):
        raise _Unusable("subsets must be a list of subset names (per-subset settings are not supported)")
    split = entry.get("split") or "train"
    if isinstance(split, list):
        if len(split) != 1 or not isinstance(split[0], str):
            raise _Unusable(f"split {split!r}: give one split name")
        split = split[0]
    if not isinstance(split, str):
        raise _Unusable("split must be a split name")
    path = _text(entry, "dataset_path")
    return DatasetSpec(name, ms=None if path else _text(entry, "ms_dataset_id"),
                       hf=None if path else _text(entry, "hf_dataset_id"),
                       path=_existing(base, path, "dataset_path") if path else None,
                       split=split, subsets=list(subsets), columns=dict(columns))


def _object(entry: dict, key: str) -> dict:
    value = entry.get(key) or {}
    if not isinstance(value, dict):
        raise _Unusable(f"{key} must be an object")
    return value


def _text(entry: dict, key: str) -> Optional[str]:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise _Unusable(f"{key} must be a string, got {type(value).__name__}")
    return value or None


def _existing(base: Path, name: str, key: str) -> str:
    path = Path(os.path.abspath(base / os.path.expanduser(name)))
    if not path.exists():
        raise _Unusable(f"{key} {name!r}: {path} does not exist")
    return str(path)


def _num_samples(value) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Unusable(f"num_samples must be a positive integer, got {value!r}")
    return value
