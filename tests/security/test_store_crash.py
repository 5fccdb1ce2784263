"""kill -9 during an adapter install never loses the adapter, and the next store operation cleans what it left.

A real `swiftlike.adapters.store.install` runs in a child process and is killed with SIGKILL: (1) at every step that
changes the store (each mkdir, file creation, rename, symlink, unlink, rmtree under $SWIFTLIKE_HOME), found by a
Python audit hook in the child script — test plumbing outside swiftlike that only watches and kills, it changes no
behaviour; (2) from outside, mid-copy, when polling the filesystem shows the weights half-written. After each kill
the adapter is listed, loads (its seal or a full re-hash passes) and is either the old revision or the new one.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WEIGHTS = "adapter_model.safetensors"

CHILD = r"""
import os, signal, sys

root = os.path.realpath(os.environ["SWIFTLIKE_HOME"])
kill_at = int(sys.argv[2])
steps = []


def watch(event, args):
    if event not in ("os.rename", "os.symlink", "os.remove", "os.rmdir", "os.mkdir", "shutil.rmtree", "open"):
        return
    path = args[1] if event == "os.symlink" else args[0]
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(path))
    if not path.startswith(root):
        return
    if event == "open":
        mode, flags = args[1], args[2] or 0
        if not (isinstance(mode, str) and any(c in mode for c in "wxa+")) and not flags & (os.O_WRONLY | os.O_RDWR):
            return
    steps.append(f"{event} {os.path.relpath(path, root)}")
    if len(steps) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


sys.addaudithook(watch)
from swiftlike.adapters.store import install

install(sys.argv[1], name="nova")
print("\n".join(steps))
"""


def _make_adapter(path: Path, seed: int, size: int = 64 * 64) -> Path:
    from safetensors.numpy import save_file

    from swiftlike.checkpoint import write_manifest

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    cfg = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({"lora_A.weight": rng.standard_normal((size // 64, 64), np.float32)}, str(path / WEIGHTS))
    write_manifest(path, {"name": path.name, "base_model_type": "smollm2-135m-instruct", "tuner": "lora",
                          "tuner_config": cfg})
    return path


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A local hub with acme/nova@v1 and @v2, and a store (template) with v1 installed as `nova`."""
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install

    base = tmp_path_factory.mktemp("crash")
    hub = base / "hub"
    env = {"SWIFTLIKE_LOCAL_HUB": str(hub), "SWIFTLIKE_HOME": str(base / "template")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        revs = {}
        for tag, seed in (("v1", 0), ("v2", 1)):
            revs[tag] = push(_make_adapter(base / tag, seed), f"local:acme/nova@{tag}").rsplit("@", 1)[1]
        big = _make_adapter(base / "big", 2, size=16 << 20)  # 64 MiB of float32: a copy long enough to catch
        revs["big"] = push(big, "local:acme/nova@big").rsplit("@", 1)[1]
        install("local:acme/nova@v1", name="nova")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return {"hub": hub, "template": base / "template", "revs": revs, "base": base}


def _fresh_home(published, tmp_path, legacy: bool) -> Path:
    """A copy of the template store; `legacy`: `nova` a plain directory, as swiftlike wrote it before versions."""
    home = tmp_path / f"home-{time.monotonic_ns()}"
    shutil.copytree(published["template"], home, symlinks=True)
    root = home / "adapters"
    if legacy and (root / "nova").is_symlink():
        version = (root / "nova").resolve()
        (root / "nova").unlink()
        os.rename(version, root / "nova")
    return home


def _partial_weights(home: Path) -> list:
    """Weights files of the 64 MiB revision caught half-copied anywhere in the store."""
    return [p for p in (home / "adapters").rglob(WEIGHTS) if (1 << 20) <= p.stat().st_size < (64 << 20)]


def _child(published, home: Path, ref: str, kill_at: int) -> subprocess.Popen:
    env = {**os.environ, "SWIFTLIKE_HOME": str(home), "SWIFTLIKE_LOCAL_HUB": str(published["hub"])}
    return subprocess.Popen([sys.executable, "-c", CHILD, ref, str(kill_at)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_store(home: Path, published, monkeypatch, allowed: set) -> str:
    """The next store operation recovers: `nova` listed, loadable, one of `allowed` revisions; nothing left over."""
    from swiftlike.adapters import resolve
    from swiftlike.adapters.store import list_adapters, verify

    monkeypatch.setenv("SWIFTLIKE_HOME", str(home))
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(published["hub"]))
    root = home / "adapters"
    rows = [(a.name, a.install.get("revision")) for a in list_adapters()]
    assert len(rows) == 1 and rows[0][0] == "nova", rows
    revision = rows[0][1]
    assert revision in {published["revs"][tag] for tag in allowed}, rows
    tag = next(t for t in allowed if published["revs"][t] == revision)
    path = resolve("nova")
    assert (path / WEIGHTS).read_bytes() == (published["base"] / tag / WEIGHTS).read_bytes()
    verify("nova")
    versions = sorted(p.name for p in (root / ".versions").iterdir()) if (root / ".versions").is_dir() else []
    if (root / "nova").is_symlink():
        assert versions == [path.name]
    else:  # a legacy plain directory (as long as no update of it got as far as its swap)
        assert path == root / "nova" and versions == []
    for work in (".staging", ".trash"):  # nothing half-done is left once the next store operation has run
        assert not (root / work).exists() or not any((root / work).iterdir()), list((root / work).iterdir())
    assert {p.name for p in root.iterdir()} <= {".lock", ".staging", ".trash", ".versions", "nova"}
    return tag


@pytest.mark.parametrize("legacy", [False, True], ids=["versioned", "legacy-dir"])
def test_kill_at_every_step_of_an_update(published, tmp_path, monkeypatch, legacy):
    from swiftlike.adapters.store import install

    dry = _child(published, _fresh_home(published, tmp_path, legacy), "local:acme/nova@v2", 0)
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    steps = out.split("\n")[:-1]
    assert any(s.startswith("os.rename") for s in steps), steps
    seen = set()
    for k in range(1, len(steps) + 1):
        home = _fresh_home(published, tmp_path, legacy)
        proc = _child(published, home, "local:acme/nova@v2", k)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, f"step {k} ({steps[k - 1]}): {err}"
        seen.add(_check_store(home, published, monkeypatch, {"v1", "v2"}))
        if k == len(steps):  # the update done but for its cleanup
            assert seen == {"v1", "v2"}
        installed = install("local:acme/nova@v2", name="nova")  # and the update can simply be run again
        assert installed.install["revision"] == published["revs"]["v2"]
        _check_store(home, published, monkeypatch, {"v2"})


def test_kill_mid_copy_leaves_the_old_version_and_is_cleaned_next_time(published, tmp_path, monkeypatch):
    from swiftlike.adapters.store import install, list_adapters

    home = _fresh_home(published, tmp_path, legacy=False)
    proc = _child(published, home, "local:acme/nova@big", 0)
    deadline = time.monotonic() + 60
    caught = None
    while proc.poll() is None and time.monotonic() < deadline:
        partial = _partial_weights(home)
        if partial:
            os.kill(proc.pid, signal.SIGKILL)
            caught = partial[0]
            break
        time.sleep(0.001)
    proc.communicate(timeout=60)
    assert caught is not None and proc.returncode == -signal.SIGKILL, "the copy finished before it was caught"
    leftover = caught.parent
    assert leftover.is_dir()  # what the kill left: a half-written copy
    staging = home / "adapters" / ".staging"

    monkeypatch.setenv("SWIFTLIKE_HOME", str(home))
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(published["hub"]))
    assert [a.name for a in list_adapters()] == ["nova"]  # the next operation, whatever it is, cleans it
    assert not leftover.exists() and not any(staging.iterdir())
    _check_store(home, published, monkeypatch, {"v1"})
    assert install("local:acme/nova@big", name="nova").install["revision"] == published["revs"]["big"]
    _check_store(home, published, monkeypatch, {"big"})


def test_a_live_install_is_never_swept(published, tmp_path, monkeypatch):
    """The sweep removes only staging dirs whose installer is dead (its flock released), never a running one."""
    from swiftlike.adapters.store import list_adapters

    home = _fresh_home(published, tmp_path, legacy=False)
    proc = _child(published, home, "local:acme/nova@big", 0)
    monkeypatch.setenv("SWIFTLIKE_HOME", str(home))
    swept_while_running = 0
    while proc.poll() is None:
        if _partial_weights(home):
            list_adapters()  # a concurrent store operation runs its recovery
            swept_while_running += 1
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert swept_while_running
    _check_store(home, published, monkeypatch, {"big"})
