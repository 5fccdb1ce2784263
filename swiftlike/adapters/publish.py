"""Push an adapter (or merged model) directory to a hub reference: validate, build the artifact, upload."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..hub import open_hub
from ..hub.refs import parse_ref
from . import artifact


def push(ckpt, to: str, *, private: bool = False, message: str | None = None, hub_root: str | None = None,
         allow_pickle: bool = False, version: str | None = None, require_manifest: bool = False) -> str:
    """Publish `ckpt` to `to` (hf:ORG/NAME, ms:ORG/NAME, local:ORG/NAME, optionally @BRANCH); returns REF@REVISION."""
    ref = parse_ref(to)
    hub = open_hub(ref.hub, hub_root)
    stage = Path(tempfile.mkdtemp(prefix="swiftlike-push-"))
    try:
        artifact.build(ckpt, stage, name=ref.name, version=version, allow_pickle=allow_pickle,
                       require_manifest=require_manifest, ref=str(ref.at(None)))
        revision = hub.upload(stage, ref.repo_id, revision=ref.revision, private=private, message=message)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return f"{ref.hub}:{ref.repo_id}@{revision}"
