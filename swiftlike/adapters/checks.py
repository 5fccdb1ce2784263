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


def copy_verified(src: Path, dest: Path, rel: str, entry: dict) -> str:
    """Copy src to dest, hashing the bytes written; returns the sha256. The manifest's size is the limit: a file
    larger than it says is refused before it is copied (and at the first byte over, should it grow meanwhile)."""
    size = os.stat(src).st_size
    if size != entry["size"]:
        _compare(rel, entry, None, size)
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dest, "xb") as fout:
        while block := fin.read(min(1 << 20, entry["size"] + 1 - size)):
            digest.update(block)
            size += len(block)
            if size > entry["size"]:
                raise SwiftlikeError(f"{rel}: more than the {entry['size']} bytes the manifest says (damaged or "
                                     f"tampered); stopped copying")
            fout.write(block)
    _compare(rel, entry, digest.hexdigest(), size)
    return digest.hexdigest()


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


def is_housekeeping(rel: str) -> bool:
    return any(fnmatch.fnmatch(rel, p) for p in HUB_HOUSEKEEPING)


def unlisted_files(root: Path, files: dict, ignore=(), housekeeping: bool = True) -> list[str]:
    """Files under root that the manifest does not list (`ignore` patterns and, unless housekeeping=False, the
    files hubs add by themselves aside)."""
    out = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST or rel in files or path.is_dir() and not path.is_symlink():
            continue
        if any(fnmatch.fnmatch(rel, p) for p in ignore) or housekeeping and is_housekeeping(rel):
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
