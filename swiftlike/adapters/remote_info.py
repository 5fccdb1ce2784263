"""`adapter info REF`: what a published adapter is, without installing it.

Only swiftlike.json, swiftlike.sig and README.md are fetched (into the hub's own cache; a local hub's revision dir is
read in place); nothing is written to the adapter store. The manifest gets the checks an install makes, and the
signature is checked against the trusted keys as an install would.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..checkpoint import MANIFEST, check_manifest, parse_manifest, read_manifest_bytes
from ..hub import open_hub
from ..hub.refs import parse_ref
from ..registry import SwiftlikeError
from .checks import is_housekeeping, source_file
from .signing import MAX_SIGNATURE_BYTES, SIGNATURE, check_signature, trusted_keys

CARD = "README.md"
MAX_CARD_BYTES = 1 << 20
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # card text is the publisher's


def remote_info(ref_text: str, *, hub_root: str | None = None) -> dict:
    """{ref, revision, name, version, kind, base_model_type, base_model, tuner, rank, signature, files, size,
    repository, metrics, evaluations, manifest, card} of hub reference `ref_text`. `repository` compares the hub's
    own listing of the revision with the manifest (a list of problems, [] when every file matches; None when the hub
    gives no listing, e.g. offline or a local hub)."""
    ref = parse_ref(ref_text)
    hub = open_hub(ref.hub, hub_root)  # an unknown hub prefix: one line, before any request
    try:
        src = Path(hub.download(ref.repo_id, revision=ref.revision, allow_patterns=[MANIFEST, SIGNATURE, CARD]))
        storage = hub.storage_root(src) if hasattr(hub, "storage_root") else None
        try:
            manifest_file = source_file(src, MANIFEST, storage_root=storage)
        except SwiftlikeError:
            raise SwiftlikeError(f"no {MANIFEST} in the repository: not a swiftlike adapter") from None
        data = read_manifest_bytes(manifest_file)
        manifest = parse_manifest(data, MANIFEST)
        files = check_manifest(manifest, MANIFEST)
        sig = _optional(src, SIGNATURE, storage, MAX_SIGNATURE_BYTES)
        verdict = check_signature(data, sig, trusted_keys())
        card = _optional(src, CARD, storage, MAX_CARD_BYTES)
        listing = hub.listing(ref.repo_id, revision=src.name) if hasattr(hub, "listing") else None
    except (SwiftlikeError, OSError) as err:
        said = str(err) if isinstance(err, SwiftlikeError) else f"{type(err).__name__}: {err}"
        said = said.strip().splitlines()[0] if said.strip() else type(err).__name__
        prefix = "" if said.startswith(f"{ref.hub}:{ref.repo_id}") else f"{ref}: "  # hub errors name the ref
        raise SwiftlikeError(f"info {prefix}{said}") from None
    cfg = manifest.get("tuner_config") if isinstance(manifest.get("tuner_config"), dict) else {}
    return {"ref": str(ref),
            "revision": src.name, "name": manifest.get("name"), "version": manifest.get("version"),
            "kind": manifest.get("kind", "adapter"), "base_model_type": manifest.get("base_model_type"),
            "base_model": manifest.get("base_model"), "tuner": manifest.get("tuner"), "rank": cfg.get("r"),
            "signature": {"status": verdict.status, "publisher": verdict.publisher, "key_id": verdict.key_id,
                          "reason": verdict.reason or None, "summary": verdict.describe()},
            "files": {rel: {"size": e["size"], "sha256": e["sha256"]} for rel, e in files.items()},
            "size": sum(e["size"] for e in files.values()),
            "repository": _compare(listing[1], files) if listing else None,
            "metrics": manifest.get("metrics") or {}, "evaluations": manifest.get("evaluations") or [],
            "manifest": {k: v for k, v in manifest.items() if k != "files"},
            "card": _CONTROL.sub("?", card[:MAX_CARD_BYTES].decode("utf-8", "replace")) if card is not None else None}


def _compare(sizes: dict, files: dict) -> list[str]:
    """What an install would refuse in the hub's own listing of the revision, said file by file ([] = all match)."""
    out = [f"{rel}: missing from the repository" for rel in files if rel not in sizes]
    out += [f"{rel}: {sizes[rel]} bytes in the repository, the manifest says {e['size']}" for rel, e in files.items()
            if sizes.get(rel) is not None and sizes[rel] != e["size"]]
    out += [f"{rel}: in the repository, not listed in {MANIFEST}" for rel in sizes
            if rel not in files and rel not in (MANIFEST, SIGNATURE) and not is_housekeeping(rel)]
    return out


def _optional(src: Path, rel: str, storage, limit: int) -> bytes | None:
    """At most `limit` + 1 bytes of `rel` when the repository has it, else None (a signature over the limit is then
    judged invalid, a card cut)."""
    if not (src / rel).exists() and not (src / rel).is_symlink():
        return None
    with open(source_file(src, rel, storage_root=storage), "rb") as f:
        return f.read(limit + 1)
