"""`swiftlike.json`: what a checkpoint or published adapter is (base, template, tuner, metrics) and the sha256 and
size of every file in it."""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from ..checksums import sha256_file
from ..registry import SwiftlikeError

MANIFEST = "swiftlike.json"
FORMAT = "swiftlike.adapter/1"
MAX_MANIFEST_BYTES = 8 << 20  # template text and tuner config included, real manifests are a few KB
MAX_EVALUATIONS = 100  # `swiftlike eval` results kept in a manifest (the newest)


def walk_files(directory, *, storage_root=None) -> dict[str, Path]:
    """{relative posix path: real path} of every file under `directory`, sorted. A symlink counts only when it
    stays inside `directory` (or `storage_root`, a hub's cache); a link leaving it, a symlinked directory or a
    special file (fifo, socket, device) is an error: nothing outside the directory is ever read or published."""
    directory = Path(directory)
    inside = Path(storage_root or directory).resolve()
    out = {}
    for here, dirs, names in os.walk(directory, followlinks=False):
        base = Path(here)
        for name in dirs:
            if (base / name).is_symlink():
                rel = (base / name).relative_to(directory).as_posix()
                raise SwiftlikeError(f"{directory / rel}: symlinked directory; replace it with a real directory")
        for name in names:
            path = base / name
            rel = path.relative_to(directory).as_posix()
            real = path.resolve()
            if not real.is_relative_to(inside):
                raise SwiftlikeError(f"{directory / rel}: symlink pointing outside the directory ({real}); refused")
            try:
                mode = os.stat(real).st_mode
            except FileNotFoundError:
                raise SwiftlikeError(f"{directory / rel}: dangling symlink; remove it") from None
            if not stat.S_ISREG(mode):
                raise SwiftlikeError(f"{directory / rel}: not a regular file; remove it")
            out[rel] = real
    return dict(sorted(out.items()))


def file_table(directory, skip=(MANIFEST,)) -> dict:
    """{relative path: {sha256, size}} for every file (the manifest itself excluded)."""
    return {rel: {"sha256": sha256_file(real), "size": real.stat().st_size}
            for rel, real in walk_files(directory).items() if rel not in skip}


def write_manifest(directory, info: dict) -> dict:
    """Write swiftlike.json for `directory` (atomically): `info` plus the file table of what is there now."""
    directory = Path(directory)
    manifest = {"format": FORMAT, **info, "files": file_table(directory)}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, directory / MANIFEST)
    return manifest


def parse_manifest(data: bytes, where) -> dict:
    """The manifest in `data` (the bytes of a swiftlike.json), a JSON object of bounded size."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise SwiftlikeError(f"{where}: {len(data)} bytes, more than a manifest can be ({MAX_MANIFEST_BYTES}); "
                             f"refused")
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SwiftlikeError(f"{where}: invalid JSON ({err}); the checkpoint is damaged — reinstall or re-export "
                             f"it") from None
    if not isinstance(manifest, dict):
        raise SwiftlikeError(f"{where}: expected a JSON object; the checkpoint is damaged")
    return manifest


def read_manifest_bytes(file) -> bytes:
    """The bytes of manifest `file`, refusing one larger than a manifest can be before reading it."""
    with open(file, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise SwiftlikeError(f"{file}: larger than a manifest can be ({MAX_MANIFEST_BYTES} bytes); refused")
    return data


def read_manifest(directory) -> dict:
    """The manifest of `directory`, {} when it has none."""
    file = Path(directory) / MANIFEST
    if not file.exists():
        return {}
    return parse_manifest(read_manifest_bytes(file), file)


def unsafe_path_reason(rel) -> str | None:
    """Why `rel` could land outside the directory it is installed into; None when it is a plain relative path."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return "empty or invalid file name"
    if rel.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", rel):
        return "absolute path"
    if "\\" in rel:
        return "backslash in path"
    if any(part in ("..", ".", "") for part in rel.split("/")):
        return "path escapes the adapter directory"
    if _CONTROL.search(rel) or len(rel) > 1024:
        return "control character or overlong file name"
    return None


def check_manifest_files(manifest: dict, where) -> dict:
    """The `files` table of a manifest, each entry well-formed: {rel: {sha256, size}}."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise SwiftlikeError(f"{where}: {MANIFEST} has no `files` table; re-push the adapter with swiftlike")
    for rel, entry in files.items():
        reason = unsafe_path_reason(rel)
        if reason:
            raise SwiftlikeError(f"{where}: {rel!r}: {reason}; refused")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) and _is_int(entry.get("size"))
                and entry["size"] >= 0):
            raise SwiftlikeError(f"{where}: {rel}: manifest entry lacks sha256/size; re-push the adapter")
    return files


# ---------------------------------------------------------------- field validation
# Manifest text ends up in wheel METADATA, model cards, Python source of packaged wheels and terminal output:
# names are plain ASCII tokens, one-line fields have no control or line-breaking characters.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}", re.ASCII)
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token(value, pattern=_TOKEN) -> str | None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        return f"must be a name of letters, digits and . _ + - (at most {128 if pattern is _TOKEN else 64})"
    return None


def _line(limit):
    def check(value):
        if not isinstance(value, str) or len(value) > limit or _CONTROL.search(value):
            return f"must be one line of text (no control characters, at most {limit} characters)"
        return None
    return check


def _text(limit):
    def check(value):
        if not isinstance(value, str) or len(value) > limit or _CONTROL_MULTILINE.search(value):
            return f"must be text without control characters (at most {limit} characters)"
        return None
    return check


def _step(value):
    return None if _is_int(value) and value >= 0 else "must be a non-negative integer"


def _hex64(value):
    return None if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else "must be 64 hex digits"


def _kind(value):
    return None if value in ("adapter", "model") else "must be 'adapter' or 'model'"


def _datasets(value):
    if not isinstance(value, list) or len(value) > 1000 or any(_line(1024)(v) for v in value):
        return "must be a list of one-line strings"
    return None


def _metrics(value):
    if not isinstance(value, dict) or len(value) > 1000:
        return "must be an object of at most 1000 metrics"
    for key, v in value.items():
        if _line(128)(key) or not (v is None or isinstance(v, (int, float)) or not _line(256)(v)):
            return f"entry {key!r} must be a short name with a number or one line of text"
    return None


def _evaluations(value):
    """[{date, backend, datasets: [{name, sha256, rows}], rows, tasks?, metrics, baseline?}] from `swiftlike eval`."""
    if not isinstance(value, list) or len(value) > MAX_EVALUATIONS:
        return f"must be a list of at most {MAX_EVALUATIONS} evaluations"
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            return f"entry {i} must be an object"
        for key, check in (("date", _line(64)), ("backend", _token), ("rows", _step), ("metrics", _metrics),
                           ("baseline", _metrics)):
            if entry.get(key) is not None and check(entry[key]):
                return f"entry {i}: {key} {check(entry[key])}"
        if not isinstance(entry.get("metrics"), dict):
            return f"entry {i} has no metrics"
        tasks = entry.get("tasks")
        if tasks is not None and (not isinstance(tasks, list) or len(tasks) > 1000
                                  or any(_line(256)(t) for t in tasks)):
            return f"entry {i}: tasks must be a list of names"
        datasets = entry.get("datasets") or []
        if not isinstance(datasets, list) or len(datasets) > 100:
            return f"entry {i}: datasets must be a list"
        for d in datasets:
            if not isinstance(d, dict) or _line(1024)(d.get("name")) or _hex64(d.get("sha256")) or _step(d.get("rows")):
                return f"entry {i}: each dataset needs a one-line name, a sha256 and a row count"
    return None


def _tuner_config(value):
    if not isinstance(value, dict):
        return "must be a JSON object"
    if len(json.dumps(value, default=str)) > 256 << 10:
        return "is larger than 256 KiB"
    if "r" in value and value["r"] is not None and not _is_int(value["r"]):
        return "r must be an integer"
    if "lora_alpha" in value and value["lora_alpha"] is not None and (
            isinstance(value["lora_alpha"], bool) or not isinstance(value["lora_alpha"], (int, float))):
        return "lora_alpha must be a number"
    if "peft_type" in value and value["peft_type"] is not None and _token(value["peft_type"]):
        return "peft_type must be a name"
    targets = value.get("target_modules")
    if targets is not None and not (isinstance(targets, str) and not _line(4096)(targets)) and not (
            isinstance(targets, list) and all(isinstance(t, str) and not _line(256)(t) for t in targets)):
        return "target_modules must be a name or a list of names"
    return None


RECIPE_METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")


def _number(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _recipe(value):
    """How `swiftlike adapter merge` made an adapter: {method, weights, density, sources: [{name, ref,
    manifest_sha256}], library}."""
    if not isinstance(value, dict):
        return "must be a JSON object"
    if value.get("method") not in RECIPE_METHODS:
        return f"method must be one of {', '.join(RECIPE_METHODS)}"
    sources, weights = value.get("sources"), value.get("weights")
    if not isinstance(sources, list) or not 2 <= len(sources) <= 100:
        return "sources must be a list of 2 to 100 adapters"
    if not isinstance(weights, list) or len(weights) != len(sources) or not all(_number(w) for w in weights):
        return "weights must be one number per source"
    density = value.get("density")
    if density is not None and not (_number(density) and 0 < density <= 1):
        return "density must be a number in (0, 1]"
    for i, src in enumerate(sources):
        if not isinstance(src, dict) or _line(256)(src.get("name")) or _hex64(src.get("manifest_sha256")):
            return f"source {i} needs a one-line name and the sha256 of its manifest"
        if src.get("ref") is not None and _line(1024)(src["ref"]):
            return f"source {i}: ref must be one line of text"
    if value.get("library") is not None and _line(64)(value["library"]):
        return "library must be one line of text"
    return None


FIELDS = {
    "format": _line(64), "name": _line(256), "version": lambda v: _token(v, _VERSION), "kind": _kind, "tuner": _token,
    "base_model_type": _token, "base_model": _line(1024), "base_revision": _line(256), "base_fingerprint": _hex64,
    "template": _line(256), "template_text": _text(1 << 20), "system": _text(1 << 16), "datasets": _datasets,
    "step": _step, "metrics": _metrics, "tuner_config": _tuner_config, "created": _line(64),
    "merged_from": _line(1024), "stage": _line(64), "evaluations": _evaluations, "recipe": _recipe,
    "license": _token,  # the base model's licence (catalog `license`): a Hub license id or license_name
}


def check_manifest(manifest: dict, where) -> dict:
    """Validate every field swiftlike reads (types, characters, lengths) and the file table; returns the files."""
    check_manifest_fields(manifest, where)
    return check_manifest_files(manifest, where)


def check_manifest_fields(manifest: dict, where) -> None:
    """Validate the fields swiftlike reads (types, characters, lengths). Unknown fields are left as they are:
    nothing swiftlike writes out comes from them."""
    for key, check in FIELDS.items():
        value = manifest.get(key)
        if value is None:
            continue
        reason = check(value)
        if reason:
            shown = repr(value) if isinstance(value, str) and len(value) <= 80 else type(value).__name__
            raise SwiftlikeError(f"{where}: field {key!r} ({shown}) {reason}; refused")
