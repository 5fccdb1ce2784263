"""Encode canonical rows with a template: in parallel (process pool) and cached on disk.

The cache key hashes the rows, the template (class, its source file, settings) and the tokenizer (class,
name_or_path, vocabulary, special tokens, chat template, tokenizer files), so any change re-encodes. Entries are
.npz files of plain integer arrays plus JSON text, loaded with allow_pickle=False, written atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger("swiftlike.data")
CACHE_VERSION = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")


def default_cache_dir() -> Path:
    from ..paths import swiftlike_home

    return swiftlike_home() / "cache" / "encoded"


def encode_dataset(rows: list, template, num_proc: int = 1, cache_dir=None,
                   template_factory: Optional[Callable] = None):
    """(encoded rows, number of rows dropped by truncation).

    num_proc > 1 encodes chunks in spawned worker processes; each gets `template_factory()` when given (for
    templates that cannot be pickled), else a pickled copy of `template`. cache_dir=None uses
    $SWIFTLIKE_HOME/cache/encoded; cache_dir=False disables the cache.
    """
    path = None
    if cache_dir is not False:
        key = cache_key(rows, template)
        path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
        if path.exists():
            try:
                encoded, dropped = _load(path)
                log.info("loaded %d encoded rows from %s", len(encoded), path)
                return encoded, dropped
            except Exception as err:  # a damaged entry is re-encoded, not fatal
                log.warning("ignoring unreadable encode cache %s (%s)", path, err)
    results = _encode_parallel(rows, template, num_proc, template_factory) if num_proc > 1 and len(rows) > 1 \
        else [_encode_row(template, r) for r in rows]
    encoded = [r for r in results if r is not None]
    dropped = len(results) - len(encoded)
    if path is not None:
        _save(path, encoded, dropped)
    return encoded, dropped


def _encode_row(template, row: dict):
    """`template.encode(messages)` (with the row's tools when encode takes `tools`); None when truncation
    drops the row (the template engine returns None or raises SequenceTooLong under truncation="delete")."""
    try:
        if row.get("tools") and _takes_tools(template):
            return template.encode(row["messages"], tools=row["tools"])
        return template.encode(row["messages"])
    except _too_long_errors():
        return None


def _too_long_errors() -> tuple:
    try:
        from ..templates.encode import SequenceTooLong
    except ImportError:
        return ()
    return (SequenceTooLong,)


def _takes_tools(template) -> bool:
    try:
        return "tools" in inspect.signature(template.encode).parameters
    except (TypeError, ValueError):
        return False


# --- parallel ---------------------------------------------------------------------------------------------------

_WORKER_TEMPLATE = None


def _init_worker(payload: bytes, is_factory: bool):
    global _WORKER_TEMPLATE
    obj = pickle.loads(payload)
    _WORKER_TEMPLATE = obj() if is_factory else obj


def _encode_chunk(rows: list) -> list:
    return [_encode_row(_WORKER_TEMPLATE, r) for r in rows]


def _encode_parallel(rows, template, num_proc, template_factory):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    try:
        payload = pickle.dumps(template_factory or template)
    except Exception as err:
        log.warning("template cannot be pickled (%s); encoding in one process (pass template_factory)", err)
        return [_encode_row(template, r) for r in rows]
    size = max(1, math.ceil(len(rows) / (num_proc * 4)))  # several chunks per worker balance uneven rows
    chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
    # spawn, not fork: forking a process that already runs torch / tokenizers threads can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(num_proc, len(chunks)), mp_context=ctx, initializer=_init_worker,
                             initargs=(payload, template_factory is not None)) as pool:
        return [r for part in pool.map(_encode_chunk, chunks) for r in part]


# --- cache key --------------------------------------------------------------------------------------------------

def _jsonable(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    if isinstance(o, (set, frozenset)):
        return sorted(map(str, o))
    if isinstance(o, (Path, tuple)):
        return str(o) if isinstance(o, Path) else list(o)
    if hasattr(o, "get_vocab"):
        return tokenizer_fingerprint(o)
    if callable(getattr(o, "encode", None)) and hasattr(o, "__dict__"):  # a wrapped template
        return template_fingerprint(o)
    # Other objects are keyed by type only: their repr often holds a memory address.
    return f"<{type(o).__qualname__}>"


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=_jsonable)


def _file_digest(path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def tokenizer_fingerprint(tokenizer) -> str:
    if tokenizer is None:
        return "none"
    h = hashlib.sha256()
    h.update(f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}\n".encode())
    name = str(getattr(tokenizer, "name_or_path", "") or "")
    h.update(name.encode())
    if hasattr(tokenizer, "get_vocab"):
        h.update(_json(sorted(tokenizer.get_vocab().items())).encode())
    for attr in ("chat_template", "special_tokens_map", "padding_side", "model_max_length"):
        h.update(_json(getattr(tokenizer, attr, None)).encode())
    if name and os.path.isdir(name):
        for fname in TOKENIZER_FILES:
            h.update(f"{fname}:{_file_digest(os.path.join(name, fname))}".encode())
    return h.hexdigest()


def _code_files(cls) -> list:
    """The class's source file, and its package's other modules (encoding logic often lives beside the class)."""
    try:
        source = Path(inspect.getsourcefile(cls))
    except TypeError:
        return []
    if "." not in cls.__module__:
        return [source]
    return sorted(source.parent.glob("*.py"))


def template_fingerprint(template) -> str:
    own = getattr(template, "fingerprint", None)
    if own is not None:
        return str(own() if callable(own) else own)
    h = hashlib.sha256()
    cls = type(template)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    for path in _code_files(cls):  # code changes re-encode
        h.update(f"{path.name}:{_file_digest(path)}".encode())
    tokenizer = getattr(template, "tokenizer", None)
    for k, v in sorted(vars(template).items() if hasattr(template, "__dict__") else []):
        # Private attributes are usually caches filled while encoding, which must not change the key.
        if v is tokenizer or callable(v) or k.startswith("_"):
            continue
        h.update(f"{k}={_json(v)}\n".encode())
    h.update(tokenizer_fingerprint(tokenizer).encode())
    return h.hexdigest()


def cache_key(rows: list, template) -> str:
    h = hashlib.sha256(f"swiftlike-encoded-v{CACHE_VERSION}\n".encode())
    h.update(template_fingerprint(template).encode())
    for r in rows:
        h.update(_json(r).encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


# --- storage ----------------------------------------------------------------------------------------------------

def _is_int_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)


def _save(path: Path, encoded: list, dropped: int) -> None:
    import numpy as np

    keys = sorted({k for r in encoded for k in r})
    int_keys = [k for k in keys if all(_is_int_list(r.get(k)) for r in encoded)]
    json_keys = [k for k in keys if k not in int_keys]
    arrays = {}
    for k in int_keys:
        lengths = [len(r[k]) for r in encoded]
        arrays[f"{k}.values"] = np.fromiter((x for r in encoded for x in r[k]), dtype=np.int64, count=sum(lengths))
        arrays[f"{k}.offsets"] = np.cumsum([0] + lengths, dtype=np.int64)
    meta = {"version": CACHE_VERSION, "dropped": dropped, "n": len(encoded), "int_keys": int_keys,
            "json_keys": json_keys}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    if json_keys:
        other = [{k: r[k] for k in json_keys if k in r} for r in encoded]
        arrays["__json__"] = np.frombuffer(json.dumps(other, ensure_ascii=False).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)  # readers see the old entry or the whole new one, never a partial file
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(path: Path):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["__meta__"].tobytes())
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"cache version {meta.get('version')}")
        encoded = [{} for _ in range(meta["n"])]
        for k in meta["int_keys"]:
            values, offsets = data[f"{k}.values"].tolist(), data[f"{k}.offsets"].tolist()
            for i, row in enumerate(encoded):
                row[k] = values[offsets[i]:offsets[i + 1]]
        if meta["json_keys"]:
            for row, other in zip(encoded, json.loads(data["__json__"].tobytes())):
                row.update(other)
    return encoded, meta["dropped"]
