"""The adapter store under concurrent installs of one hub reference (several serve replicas starting together)."""
import json
from pathlib import Path

from test_serve_engine import make_adapter


def test_concurrent_installs_of_one_ref_share_one_copy(tmp_path, monkeypatch, tiny_model):
    """Replicas started together with the same hub reference both install it: the second to finish keeps the
    first's copy instead of trashing the directory the first one already resolved to."""
    from swiftlike.adapters import store
    from swiftlike.adapters.publish import push

    monkeypatch.setenv("SWIFTLIKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(tmp_path / "hub"))
    push(publishable(make_adapter(tiny_model, tmp_path / "a0", seed=10)), "local:acme/a0")
    commit, other = store._commit, {}

    def racing_commit(*args, **kw):  # the other replica's install completes while this one is staged
        if not other:
            other["busy"] = True
            other["path"] = store.resolve("local:acme/a0")
        return commit(*args, **kw)

    monkeypatch.setattr(store, "_commit", racing_commit)
    installed = store.install("local:acme/a0")
    assert other["path"].is_dir() and installed.path.resolve() == other["path"] and not installed.fresh
    assert len(list((tmp_path / "home" / "adapters" / ".versions").iterdir())) == 1


def publishable(adapter: Path) -> Path:
    """make_adapter's dir with the manifest file table `swiftlike adapter push` needs."""
    from swiftlike.checkpoint.manifest import write_manifest

    info = json.loads((adapter / "swiftlike.json").read_text())
    info.pop("format", None)
    write_manifest(adapter, info)
    return adapter
