"""Several replicas of `swiftlike serve` sharing one adapter store and one --shared_state directory: two real serve
processes on 127.0.0.1 (and a third replica started later, in this process) give every tenant the same answers, and
an admin load or unload on one replica is live on the others within --sync_interval plus the adapter's load time."""
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from test_serve import ASK, Server, request
from test_serve_engine import make_adapter

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"admin": "k-admin", "acme": "k-acme"}
SYNC = 0.5  # --sync_interval of the replicas here
SLACK = 15.0  # a loaded 2-core machine may take seconds to load an adapter and answer the first request


# -- the state file alone -------------------------------------------------------------------------------------------
def test_state_file_round_trip_locking_and_refusals(tmp_path):
    from swiftlike.registry import SwiftlikeError
    from swiftlike.serve.shared import SharedState

    state = SharedState(tmp_path / "shared", "tiny-llama")
    assert state.open().adapters == {} and not state.changed()
    assert stat.S_IMODE(os.stat(tmp_path / "shared").st_mode) == 0o700
    state.write("hot", "local:acme/hot")
    assert state.changed()
    assert stat.S_IMODE(os.stat(state.path).st_mode) == 0o600
    # concurrent writers (each write opens the lock afresh, as another replica's would) never lose a change
    threads = [threading.Thread(target=lambda k=k: [state.write(f"n{k}-{i}", f"src{i}") for i in range(15)])
               for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state.write("hot", None)
    got = state.read()
    assert got.generation == 47 and len(got.adapters) == 46
    assert got.adapters["hot"].source is None and got.adapters["hot"].rev == 47
    assert sorted(e.rev for e in got.adapters.values()) == list(range(2, 48))
    assert not list((tmp_path / "shared").glob("*.tmp"))
    # another deployment's directory, a broken file, a file or directory anyone may write: one clear line each
    with pytest.raises(SwiftlikeError, match=r"loaded on base model 'tiny-llama', this server serves 'other'"):
        SharedState(tmp_path / "shared", "other").open()
    data = json.loads(state.path.read_text())
    data["adapters"]["hot"] = {"source": "/x", "removed": True, "rev": 3}
    state.path.write_text(json.dumps(data))
    with pytest.raises(SwiftlikeError, match=r"adapters.hot: must be \{source, rev\} or \{removed: true, rev\}"):
        state.read()
    with pytest.raises(SwiftlikeError, match="not valid JSON"):
        state.path.write_text("{")
        state.write("x", "y")  # nothing is written over a file it cannot read
    assert state.path.read_text() == "{"
    state.path.unlink()
    os.chmod(tmp_path / "shared", 0o777)
    with pytest.raises(SwiftlikeError, match="writable by every user"):
        SharedState(tmp_path / "shared", "tiny-llama").open()
    os.chmod(tmp_path / "shared", 0o700)
    state.write("a", "b")
    os.chmod(state.path, 0o666)
    with pytest.raises(SwiftlikeError, match="writable by every user"):
        state.read()


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


# -- real replicas --------------------------------------------------------------------------------------------------
def publishable(adapter: Path) -> Path:
    """make_adapter's dir with the manifest file table `swiftlike adapter push` needs."""
    from swiftlike.checkpoint.manifest import write_manifest

    info = json.loads((adapter / "swiftlike.json").read_text())
    info.pop("format", None)
    write_manifest(adapter, info)
    return adapter


class Replica:
    """`swiftlike serve` in its own process."""

    def __init__(self, args, env):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(env["SWIFTLIKE_HOME"]).parent / f"replica-{self.port}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "swiftlike", "serve", *args, "--port", str(self.port),
                                         "--log_level", "warning"], stdout=out, stderr=subprocess.STDOUT, env=env)

    def wait_up(self, timeout=240.0):
        deadline = time.time() + timeout
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if request(self.url + "/health", timeout=5).status_code == 200:
                    return
            except OSError:
                pass
            assert time.time() < deadline, self.log.read_text()
            time.sleep(0.2)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def call(self, method, path, key, body=None):
        return request(self.url + path, method, {"Authorization": f"Bearer {key}"}, body)

    def chat(self, model, key=KEYS["acme"]):
        return self.call("POST", "/v1/chat/completions", key,
                         {"model": model, "messages": ASK, "temperature": 0, "max_tokens": 20})


def answer(r):
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def until(condition, what, bound):
    """Seconds until `condition()` is truthy; fails past `bound`."""
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < bound, f"{what}: not within {bound:.1f} s"
        time.sleep(0.05)
    return time.time() - t0


def metric(replica, name):
    for line in replica.call("GET", "/metrics", KEYS["admin"]).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.slow  # two serve processes start (tens of seconds on a loaded 2-core machine)
def test_two_replicas_share_tenants_refs_and_admin_changes(tiny_model, tmp_path, monkeypatch):
    from swiftlike.adapters.publish import push
    from swiftlike.serve.auth import key_hash
    from swiftlike.serve.shared import SharedState

    home, hub, shared = tmp_path / "home", tmp_path / "hub", tmp_path / "shared"
    for var, value in (("SWIFTLIKE_HOME", home), ("SWIFTLIKE_LOCAL_HUB", hub)):
        monkeypatch.setenv(var, str(value))
    made = {name: publishable(make_adapter(tiny_model, tmp_path / name, seed=seed))
            for name, seed in (("a0", 10), ("a1", 11), ("a2", 12))}
    for name in ("a0", "a2"):
        push(made[name], f"local:acme/{name}")
    tenants = tmp_path / "tenants.toml"
    tenants.write_text(f'[admin]\nkey_sha256 = "{key_hash(KEYS["admin"])}"\n'
                       f'[tenants.acme]\nkey_sha256 = "{key_hash(KEYS["acme"])}"\n'
                       f'adapters = ["a0", "hot", "late", "evil"]\n')
    flags = dict(model=str(tiny_model), template="smollm2", tenants=str(tenants), adapters=["a0=local:acme/a0"],
                 shared_state=str(shared), sync_interval=SYNC, max_tokens=64, num_threads=1)
    args = [x for k, v in flags.items() for x in ([f"--{k}", *v] if isinstance(v, list) else [f"--{k}", str(v)])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    a, b = Replica(args, env), Replica(args, env)  # started together: both resolve the hub ref at once
    t0 = time.time()
    late = None
    try:
        a.wait_up()
        b.wait_up()
        print(f"two replicas up after {time.time() - t0:.1f} s")
        # tenants.toml + a hub reference: the same view and the same answers on both (that one server's answers
        # equal `swiftlike infer`'s is test_serve's; here: every replica gives the same greedy answer)
        want = {"a0": answer(a.chat("a0"))}
        for r in (a, b):
            assert [m["id"] for m in r.call("GET", "/v1/models", KEYS["acme"]).json()["data"]] == ["tiny-llama", "a0"]
            assert answer(r.chat("a0")) == want["a0"]
        assert len(list((home / "adapters" / ".versions").iterdir())) == 1  # one store copy of local:acme/a0

        # an admin load on A (a hub reference, installed into the shared store) is live on B within the bound
        assert b.chat("hot").status_code == 404
        r = a.call("POST", "/v1/adapters", KEYS["admin"], {"name": "hot", "source": "local:acme/a2"})
        assert r.status_code == 200, r.text
        want["a2"] = answer(a.chat("hot"))
        took = until(lambda: b.chat("hot").status_code == 200, "A's load seen on B", SYNC + SLACK)
        assert answer(b.chat("hot")) == want["a2"]
        assert metric(b, "swiftlike_shared_state_syncs_total") >= 1
        assert metric(b, "swiftlike_shared_state_adapter_changes_total") == 1
        print(f"load on A -> served by B after {took:.2f} s")

        # an unload on B: A refuses it within the bound, with the very answer B gives
        assert b.call("DELETE", "/v1/adapters/hot", KEYS["admin"]).json() == {"name": "hot", "deleted": True}
        gone_b = b.chat("hot")
        assert gone_b.status_code == 404 and gone_b.json()["error"]["code"] == "model_not_found"
        took = until(lambda: a.chat("hot").status_code == 404, "B's unload seen on A", SYNC + SLACK)
        assert a.chat("hot").text == gone_b.text
        assert a.call("DELETE", "/v1/adapters/hot", KEYS["admin"]).status_code == 404  # gone everywhere
        print(f"unload on B -> refused by A after {took:.2f} s")

        # a local directory and the removal of an --adapters one, then a replica started later sees the same set
        assert a.call("POST", "/v1/adapters", KEYS["admin"], {"name": "late", "source": str(made["a1"])}) \
            .status_code == 200
        assert a.call("DELETE", "/v1/adapters/a0", KEYS["admin"]).status_code == 200
        until(lambda: b.chat("a0").status_code == 404 and b.chat("late").status_code == 200, "B follows",
              SYNC + SLACK)
        want["a1"] = answer(a.chat("late"))
        assert len(set(want.values())) == 3, "the adapters should answer differently"
        # the file names adapters, it is not trusted as a path: a store copy changed after install is refused on
        # every replica that picks it up, exactly as an admin load of it is
        version = next(p for p in (home / "adapters" / ".versions").iterdir() if p.name.startswith("a2-"))
        with open(version / "adapter_model.safetensors", "ab") as f:
            f.write(b"\0")
        errors = metric(b, "swiftlike_shared_state_errors_total")
        SharedState(shared, "tiny-llama").write("evil", str(version))  # a writer that went around the admin API
        until(lambda: metric(b, "swiftlike_shared_state_errors_total") > errors, "B refuses it", SYNC + SLACK)
        assert b.chat("evil").status_code == 404 and b.call("GET", "/health", KEYS["acme"]).status_code == 200
        refused = a.call("POST", "/v1/adapters", KEYS["admin"], {"name": "evil", "source": str(version)})
        assert refused.status_code == 400 and "refused to use it" in refused.json()["error"]["message"]

        t1 = time.time()
        late = Server(**flags)  # a third replica, in this process: it refuses `evil` at start-up too
        print(f"third replica up after {time.time() - t1:.1f} s")
        for r in (a, b, late):
            assert [m["id"] for m in r.call("GET", "/v1/models", KEYS["acme"]).json()["data"]] == \
                ["tiny-llama", "late"]
        assert answer(late.chat("late", KEYS["acme"])) == answer(b.chat("late")) == want["a1"]
        assert late.chat("a0", KEYS["acme"]).text == a.chat("a0").text
        assert late.rt.shared.refused == {"evil"} and late.chat("evil", KEYS["acme"]).status_code == 404
    finally:
        for r in (a, b):
            r.close()
        if late is not None:
            late.close()
