"""`swiftlike.json`: what a checkpoint or published adapter is (base, template, tuner, metrics) and the sha256 and
size of every file in it."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..checksums import sha256_file
from ..registry import SwiftlikeError

MANIFEST = "swiftlike.json"
FORMAT = "swiftlike.adapter/1"


def file_table(directory, skip=(MANIFEST,)) -> dict:
    """{relative path: {sha256, size}} for every file (the manifest itself excluded)."""
    directory = Path(directory)
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel not in skip:
            out[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def write_manifest(directory, info: dict) -> dict:
    """Write swiftlike.json for `directory` (atomically): `info` plus the file table of what is there now."""
    directory = Path(directory)
    manifest = {"format": FORMAT, **info, "files": file_table(directory)}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(directory) -> dict:
    """The manifest of `directory`, {} when it has none."""
    file = Path(directory) / MANIFEST
    if not file.exists():
        return {}
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SwiftlikeError(f"{file}: invalid JSON ({err}); the checkpoint is damaged — reinstall or re-export "
                             f"it") from None
    if not isinstance(data, dict):
        raise SwiftlikeError(f"{file}: expected a JSON object; the checkpoint is damaged")
    return data


def unsafe_path_reason(rel) -> str | None:
    """Why `rel` could land outside the directory it is installed into; None when it is a plain relative path."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return "empty or invalid file name"
    if rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return "absolute path"
    if "\\" in rel:
        return "backslash in path"
    if any(part in ("..", ".", "") for part in rel.split("/")):
        return "path escapes the adapter directory"
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
        if not (isinstance(entry, dict) and re.fullmatch(r"[0-9a-f]{64}", str(entry.get("sha256", "")))
                and isinstance(entry.get("size"), int)):
            raise SwiftlikeError(f"{where}: {rel}: manifest entry lacks sha256/size; re-push the adapter")
    return files
