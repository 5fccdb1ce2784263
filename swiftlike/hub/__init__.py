"""Hubs: where models, datasets and adapters are downloaded from and pushed to.

Each hub is a registry entry whose factory builds an object with
`download(repo_id, *, repo_type="model", revision=None, cache_dir=None, allow_patterns=None) -> Path` and
`upload(folder, repo_id, *, revision=None, private=False, message=None) -> revision`, and, for hubs that can list
adapters, `search(query=None, *, base_model_type=None, tuner=None, limit=20) -> [row]` (row: ref, base_model_type,
tuner, rank, downloads, likes, updated, files — None where the hub does not say). References to a repo on a hub
(`hf:ORG/NAME@REV`) are parsed by `swiftlike.hub.refs`.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..registry import SwiftlikeError, get_registry, resolve_callable


def default_hub() -> str:
    """SWIFTLIKE_HUB wins; else ms-swift's USE_HF (1 = hf, 0 = ms); else hf."""
    hub = os.environ.get("SWIFTLIKE_HUB")
    if hub:
        return hub
    use_hf = os.environ.get("USE_HF")
    if use_hf is not None and use_hf.strip().lower() in ("0", "false", "no"):
        return "ms"
    return "hf"


_instances: dict = {}


def get_hub(name: str | None = None):
    name = name or default_hub()
    spec = get_registry().hubs.get(name)
    key = (name, spec.plugin)
    if key not in _instances:
        _instances[key] = resolve_callable(spec.factory)()
    return _instances[key]


def open_hub(name: str, hub_root: str | None = None):
    """The hub named `name`; with hub_root, a fresh one rooted there (`--hub_root`, for directory hubs)."""
    if hub_root is None:
        return get_hub(name)
    import inspect

    factory = resolve_callable(get_registry().hubs.get(name).factory)
    try:
        inspect.signature(factory).bind(root=hub_root)
    except TypeError:
        raise SwiftlikeError(f"hub {name!r} takes no --hub_root (only directory hubs such as local do)") from None
    return factory(root=hub_root)


def snapshot_download(repo_id: str, *, hub: str | None = None, repo_type: str = "model", revision: str | None = None,
                      cache_dir: str | None = None, allow_patterns=None) -> Path:
    return Path(get_hub(hub).download(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=allow_patterns))


def tag_value(tags, prefix: str) -> str | None:
    """'lora' from ['swiftlike', 'swiftlike-tuner:lora'] and 'swiftlike-tuner:' (the card tags a search filters on)."""
    return next((t[len(prefix):] for t in tags or () if isinstance(t, str) and t.startswith(prefix)), None)


class OfflineError(SwiftlikeError):
    pass
