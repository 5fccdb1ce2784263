"""Dataset arguments (`NAME_OR_PATH[:subset][#N]`) and where their rows come from.

    ./train.jsonl  /data/sft/  C:\\data\\train.csv   a local file or directory (checked first, so paths that
                                                     contain ':' or '#' work as they are)
    alpaca-zh  self-cognition                        a name registered in the catalog ([datasets.NAME])
    hf::ORG/NAME   ms::ORG/NAME                      a hub dataset on Hugging Face / ModelScope
    ORG/NAME                                         a registered hub id, else a hub dataset on the default hub
                                                     (SWIFTLIKE_HUB / USE_HF, see swiftlike.hub.default_hub)
    ...:subset                                       a subset: a subdirectory (or `data/SUBSET`, or files
                                                     named SUBSET*) of the dataset's directory
    ...#N                                            N rows sampled with the seed (cycled when N > rows)

With `dataset_info` (swiftlike.data.dataset_info.read_dataset_info), the names it defines come first.

Hub datasets are fetched with swiftlike.hub.snapshot_download(repo_type="dataset"), so HF_HUB_OFFLINE and the
hub caches apply.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..registry import DatasetSpec, SwiftlikeError, UnknownNameError, get_registry, resolve_callable
from .errors import DatasetError
from .formats import sharegpt_roles
from .readers import DATA_SUFFIXES, TEXT_SUFFIXES, data_files

HUB_PREFIXES = {"hf": "hf", "huggingface": "hf", "ms": "ms", "modelscope": "ms"}
_HUB_ID = re.compile(r"[\w.\-]+/[\w.\-]+")
_SUBSET = re.compile(r"[\w.\-]+(?:/[\w.\-]+)*")


@dataclass
class DatasetRef:
    """A parsed dataset argument. kind: path | name | hub."""
    kind: str
    target: str
    hub: Optional[str] = None
    subset: Optional[str] = None
    n: Optional[int] = None
    text: str = ""


@dataclass
class Source:
    """Where one dataset's rows come from: data files, or a loader callable (generated datasets)."""
    name: str
    files: list = field(default_factory=list)
    loader: Optional[Callable] = None
    format: Optional[str] = None
    columns: dict = field(default_factory=dict)
    roles: dict = field(default_factory=dict)  # sharegpt keys / role names, see swiftlike.data.formats
    n: Optional[int] = None  # rows to sample when the argument has no `#N` (dataset_info `num_samples`)
    kind: Optional[str] = None  # "preference" or "kto" when the definition says so (LLaMA-Factory's ranking/kto_tag)
    text_columns: Optional[dict] = None  # the rename pretraining uses instead of `columns` (LLaMA-Factory's prompt)


def _exists(path: str) -> bool:
    return bool(path) and os.path.exists(os.path.expanduser(path))


def _looks_like_path(text: str) -> bool:
    return ("\\" in text or text.startswith(("/", "./", "../", "~")) or bool(re.match(r"[A-Za-z]:[\\/]", text))
            or text.lower().endswith(DATA_SUFFIXES + TEXT_SUFFIXES))


def parse_dataset(text: str) -> DatasetRef:
    raw = text.strip()
    if _exists(raw):
        return DatasetRef("path", raw, text=raw)
    body, n = raw, None
    m = re.fullmatch(r"(.+)#(\d+)", body)
    if m:
        body, n = m.group(1), int(m.group(2))
        if _exists(body):
            return DatasetRef("path", body, n=n, text=raw)
    hub = None
    m = re.fullmatch(r"([A-Za-z]+)::(.+)", body)
    if m and m.group(1).lower() in HUB_PREFIXES:
        hub, body = HUB_PREFIXES[m.group(1).lower()], m.group(2)
    subset = None
    head, sep, tail = body.rpartition(":")
    # `C:\x` / `D:/x` are drives, not subsets: a subset is a plain name after a non-drive head.
    if sep and head and _SUBSET.fullmatch(tail) and not re.fullmatch(r"[A-Za-z]", head):
        if hub is None and _exists(head):
            return DatasetRef("path", head, subset=tail, n=n, text=raw)
        body, subset = head, tail
    if hub:
        return DatasetRef("hub", body, hub=hub, subset=subset, n=n, text=raw)
    kind = "path" if _looks_like_path(body) else "name"
    return DatasetRef(kind, body, subset=subset, n=n, text=raw)


def resolve(ref: DatasetRef, *, hub: Optional[str] = None, cache_dir=None, split: str = "train",
            loader_kwargs: Optional[dict] = None, dataset_info: Optional[dict] = None) -> Source:
    """Turn a parsed argument into a Source, downloading hub datasets (or finding them in the cache).

    `dataset_info` (name -> DatasetSpec) is looked up first: the user named that file, so its names win over
    local paths and the registry.
    """
    spec = (dataset_info or {}).get(ref.target) if ref.kind != "hub" else None
    if spec is not None:
        return _from_spec(spec, ref, hub=hub, cache_dir=cache_dir, split=split, loader_kwargs=loader_kwargs or {})
    if ref.kind == "path":
        path = Path(os.path.expanduser(ref.target))
        if not path.exists():
            raise DatasetError(f"dataset {ref.text!r}: {path} does not exist")
        return Source(ref.text, files=_files(path, ref.subset, split, ref.text))
    if ref.kind == "hub":
        root = _download(ref.target, ref.hub, cache_dir)
        return Source(ref.text, files=_files(root, ref.subset, split, ref.text))
    spec = _find_spec(ref.target)
    if spec is None:
        if _HUB_ID.fullmatch(ref.target):
            root = _download(ref.target, hub, cache_dir)
            return Source(ref.text, files=_files(root, ref.subset, split, ref.text))
        try:
            get_registry().datasets.get(ref.target)
        except UnknownNameError as err:
            raise DatasetError(f"dataset {ref.text!r} is neither a file nor a registered dataset: {err}") from None
    return _from_spec(spec, ref, hub=hub, cache_dir=cache_dir, split=split, loader_kwargs=loader_kwargs or {})


def _find_spec(name: str) -> Optional[DatasetSpec]:
    table = get_registry().datasets
    if name in table:
        return table.get(name)
    for spec in table:  # ms-swift users pass hub ids of registered datasets
        if name in (spec.hf, spec.ms):
            return spec
    return None


def _from_spec(spec: DatasetSpec, ref: DatasetRef, *, hub, cache_dir, split, loader_kwargs) -> Source:
    extra = spec.extra or {}
    if extra.get("error"):  # a dataset_info entry swiftlike cannot use, reported when it is asked for
        raise DatasetError(extra["error"])
    if ref.subset and spec.subsets and ref.subset not in spec.subsets:
        raise DatasetError(f"dataset {spec.name!r} has no subset {ref.subset!r}; one of {', '.join(spec.subsets)}")
    subset = ref.subset or extra.get("subset")
    try:
        sharegpt_roles(spec.roles)
    except ValueError as err:
        raise DatasetError(f"dataset {spec.name!r} (plugin {spec.plugin}): {err}") from None
    common = dict(format=spec.format, columns=dict(spec.columns or {}), roles=dict(spec.roles or {}),
                  n=extra.get("num_samples"), kind=extra.get("kind"),
                  text_columns=extra.get("text_columns"))
    split = split if split != "train" else (spec.split or "train")
    if spec.loader is not None:
        fn = resolve_callable(spec.loader)
        kwargs = dict(loader_kwargs, subset=subset, split=split)
        params = inspect.signature(fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in params}
        return Source(spec.name, loader=lambda: fn(**kwargs), **common)
    if spec.path:
        path = Path(os.path.expanduser(spec.path))
        if not path.is_absolute() and spec.base_dir is not None:
            path = Path(spec.base_dir) / path
        if not path.exists():
            raise DatasetError(f"dataset {spec.name!r} (plugin {spec.plugin}): {path} does not exist")
        return Source(spec.name, files=_files(path, subset, split, spec.name), **common)
    ids = {"hf": spec.hf, "ms": spec.ms}
    from ..hub import default_hub

    chosen = hub or default_hub()
    if not ids.get(chosen):
        chosen = next((h for h, i in ids.items() if i), None)
    if chosen is None:
        raise DatasetError(f"dataset {spec.name!r} (plugin {spec.plugin}) has no path, hub id or loader")
    root = _download(ids[chosen], chosen, cache_dir)
    return Source(spec.name, files=_files(root, subset, split, spec.name), **common)


def _download(repo_id: str, hub: Optional[str], cache_dir) -> Path:
    from ..hub import snapshot_download

    try:
        return snapshot_download(repo_id, hub=hub, repo_type="dataset", cache_dir=cache_dir)
    except SwiftlikeError as err:
        raise DatasetError(f"dataset {repo_id}: {err}") from None


def _files(root: Path, subset: Optional[str], split: str, what: str) -> list:
    if subset and subset != "default":
        if root.is_file():
            raise DatasetError(f"dataset {what!r}: {root} is a file; a subset names a subdirectory")
        root = _subset_root(root, subset, what)
    if isinstance(root, list):
        files = root
    else:
        files = data_files(root, split)
    if not files:
        raise DatasetError(f"dataset {what!r}: no {'/'.join(DATA_SUFFIXES)} files for split {split!r} in {root}")
    return files


def _subset_root(root: Path, subset: str, what: str):
    for cand in (root / subset, root / "data" / subset):
        if cand.exists():
            return cand
    named = [p for p in data_files(root, None) if re.match(rf"{re.escape(subset)}(?:$|[\W_])", p.stem)]
    if named:
        return named
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise DatasetError(f"dataset {what!r}: no subset {subset!r} in {root}"
                       + (f"; subdirectories: {', '.join(subdirs)}" if subdirs else ""))
