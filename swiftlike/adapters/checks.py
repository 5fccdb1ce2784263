"""Copying an adapter safely: no pickle weights, no links leaving the repository, files matching the manifest."""
from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
from pathlib import Path, PurePosixPath

from ..checkpoint import MANIFEST
from ..registry import SwiftlikeError

# Loading these runs arbitrary code (torch.load / pickle): refused unless the user allows it.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Trainer state in a checkpoint: needed to resume, never published.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "trainer_state.json",
                  "rng_state*.pth")
# Files hubs add to every repo by themselves.
HUB_HOUSEKEEPING = (".gitattributes", ".cache/*", ".git/*")


def is_pickle(rel: str) -> bool:
    return rel.lower().endswith(PICKLE_SUFFIXES)


def is_training_state(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, pattern) for pattern in TRAINING_STATE)


def source_file(root: Path, rel: str, *, storage_root: Path | None = None) -> Path:
    """root/rel as a regular file; a symlink is followed only when it stays inside storage_root (a hub's cache)."""
    path = root / PurePosixPath(rel)
    if not os.path.lexists(path):
        raise SwiftlikeError(f"{rel}: missing (listed in swiftlike.json)")
    real = path.resolve()
    # resolve() both sides: a hub root reached through a symlinked dir (/home -> /mnt/home) is fine; a link that
    # leaves the repository (or the hub's cache of it) is not
    if not real.is_relative_to((storage_root or root).resolve()):
        raise SwiftlikeError(f"{rel}: symlink pointing outside the repository ({real}); refused")
    if not real.is_file():
        raise SwiftlikeError(f"{rel}: not a regular file")
    return real


def copy_verified(src: Path, dest: Path, rel: str, entry: dict) -> None:
    """Copy src to dest, hashing the bytes written; a size or sha256 different from the manifest is an error."""
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            fout.write(block)
    _compare(rel, entry, digest.hexdigest(), size)


def verify_file(path: Path, rel: str, entry: dict) -> None:
    from ..checksums import sha256_file

    size = path.stat().st_size
    if size != entry["size"]:
        _compare(rel, entry, None, size)
    _compare(rel, entry, sha256_file(path), size)


def _compare(rel, entry, sha, size) -> None:
    if size != entry["size"]:
        raise SwiftlikeError(f"{rel}: size {size} bytes, the manifest says {entry['size']} (damaged or tampered)")
    if sha != entry["sha256"]:
        raise SwiftlikeError(f"{rel}: sha256 mismatch (manifest {entry['sha256'][:12]}…, file {sha[:12]}…): "
                             f"damaged or tampered")


def unlisted_files(root: Path, files: dict, ignore=()) -> list[str]:
    """Files under root that the manifest does not list (hub housekeeping and `ignore` patterns aside)."""
    out = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST or rel in files or path.is_dir() and not path.is_symlink():
            continue
        if any(fnmatch.fnmatch(rel, p) for p in (*HUB_HOUSEKEEPING, *ignore)):
            continue
        out.append(rel)
    return out


def link_or_copy(src: Path, dest: Path) -> None:
    """Hard link when on one filesystem (weights can be GBs), else copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
