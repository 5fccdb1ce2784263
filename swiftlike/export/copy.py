"""A checkpoint (adapter or merged model) copied to a directory without trainer state, or pushed to a hub reference."""
from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

from ..registry import SwiftlikeError, get_registry

TRAINER_STATE = ("optimizer.pt", "scheduler.pt", "rng_state*.pth", "scaler.pt", "training_args.bin")


def export(ckpt_dir, to: str, *, private=False, message=None, hub_root=None, sign=None) -> str:
    """Copy to a directory, or push to a hub reference (hf:ORG/NAME, ms:ORG/NAME, local:ORG/NAME, or a plugin's
    hub); returns where it went."""
    from ..adapters import resolve as resolve_adapter
    from ..adapters.store import INSTALL_INFO
    from ..checkpoint import EVAL_RESULTS, walk_files

    ckpt = Path(resolve_adapter(ckpt_dir))  # an installed adapter's name or a hub reference works too
    if not ckpt.is_dir():
        raise SwiftlikeError(f"--ckpt_dir {ckpt}: no such directory")
    if check_target(to):
        from ..adapters.publish import push

        return push(ckpt, to, private=private, message=message, hub_root=hub_root, sign=sign)
    if sign is not None:
        raise SwiftlikeError(f"--sign: signatures travel with a hub push; --to {to} is a directory")
    dest = Path(to)
    if dest.exists() and any(dest.iterdir()):
        raise SwiftlikeError(f"--to {dest}: directory exists and is not empty; choose a new one")
    # the files a push would read, through the same walk: a symlink leaving the checkpoint is refused, not copied
    files = {rel: real for rel, real in walk_files(ckpt).items() if rel != INSTALL_INFO
             and not rel.startswith(EVAL_RESULTS + "/")  # `swiftlike eval` output; its metrics are in the manifest
             and not any(fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pattern) for pattern in TRAINER_STATE)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for rel, real in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(real, tmp / rel)
        os.chmod(tmp, 0o755)
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(dest)


def check_target(to: str) -> bool:
    """True when `to` is a hub reference (its hub registered), False for a directory; an unknown hub prefix is an
    error before anything is merged or copied."""
    from ..hub.refs import looks_like_ref

    if not looks_like_ref(to):
        return False
    prefix = to.split(":", 1)[0]
    hubs = get_registry().hubs
    if prefix not in hubs:
        raise SwiftlikeError(f"--to {to}: {prefix!r} is not a registered hub (hubs: {', '.join(hubs.names())}; see "
                             f"`swiftlike hubs list`); to write a directory of that name, use ./{to}")
    return True
