"""Push an adapter (or merged model) directory to a hub reference: validate, build the artifact, sign it (optional),
upload."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..hub import open_hub
from ..hub.refs import parse_ref
from . import artifact


def push(ckpt, to: str, *, private: bool = False, message: str | None = None, hub_root: str | None = None,
         allow_pickle: bool = False, version: str | None = None, require_manifest: bool = False,
         sign: str | None = None) -> str:
    """Publish `ckpt` to `to` (hf:ORG/NAME, ms:ORG/NAME, local:ORG/NAME, optionally @BRANCH); returns REF@REVISION.
    `sign` (a key name from `swiftlike adapter keygen`) adds swiftlike.sig over the manifest bytes uploaded."""
    ref = parse_ref(to)
    if sign is not None:
        from .keys import load_private_key

        load_private_key(sign)  # a missing or unsafe key is refused before anything is built
    hub = open_hub(ref.hub, hub_root)
    stage = Path(tempfile.mkdtemp(prefix="swiftlike-push-"))
    try:
        artifact.build(ckpt, stage, name=ref.name, version=version, allow_pickle=allow_pickle,
                       require_manifest=require_manifest, ref=str(ref.at(None)))
        if sign is not None:
            from .signing import sign_directory

            sign_directory(stage, sign)
        revision = hub.upload(stage, ref.repo_id, revision=ref.revision, private=private, message=message)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return f"{ref.hub}:{ref.repo_id}@{revision}"
