"""Which base model a checkpoint belongs to: a cheap fingerprint of the base weights, and the check that refuses an
adapter on another base."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..registry import SwiftlikeError


def base_fingerprint(model_dir) -> str:
    """A cheap identity of base weights: safetensors headers plus the first/last 64 KiB of each weight file."""
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        size = path.stat().st_size
        with open(path, "rb") as f:
            digest.update(path.name.encode() + str(size).encode())
            head = f.read(8)
            digest.update(head)
            header_len = int.from_bytes(head, "little") if len(head) == 8 else 0
            digest.update(f.read(min(header_len, 1 << 24)))
            digest.update(f.read(1 << 16))
            f.seek(max(0, size - (1 << 16)))
            digest.update(f.read())
    return digest.hexdigest()


def check_base(manifest: dict, *, base_dir=None, base_model_type: str | None = None, fingerprint: str | None = None,
               force: bool = False, where="adapter", force_hint: str = " (or pass --force)") -> None:
    """Refuse an adapter trained on another model type or other base weights. `fingerprint` (of the base) saves
    hashing `base_dir` again when the caller has it; `force_hint` is "" where the command has no --force."""
    if force or not manifest:
        return
    want_type = manifest.get("base_model_type")
    if want_type and base_model_type and want_type != base_model_type:
        raise SwiftlikeError(f"{where} was trained on {want_type!r}, the base model is {base_model_type!r}; "
                             f"load it on {want_type}{force_hint}")
    want_fp = manifest.get("base_fingerprint")
    if want_fp and (fingerprint or base_dir is not None):
        have = fingerprint or base_fingerprint(base_dir)
        if have != want_fp:
            raise SwiftlikeError(f"{where} was trained on other {want_type or 'base'} weights (fingerprint "
                                 f"{want_fp[:12]}…, this base {have[:12]}…); use the same base{force_hint}")
