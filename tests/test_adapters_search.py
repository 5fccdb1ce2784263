"""`adapter search` and `adapter info`: adapters pushed with the real client to the fake HF Hub (its /api/models
listing derives tags from the pushed cards, as the Hub does) and to a real local hub; ModelScope unreachable."""
import json
import os
import subprocess
import sys

import pytest

from swiftlike.registry import SwiftlikeError
from test_adapters_hubs import TOKEN, _make_adapter

UNREACHABLE_MS = {"MODELSCOPE_OFFLINE": "0", "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9",
                  "MODELSCOPE_API_MAX_RETRIES": "1"}


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "swiftlike", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def _key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def _trust(home, name, key):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    folder = home / "trusted_keys"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.pub").write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))


def _files(hub, repo_id) -> dict:
    repo = hub.repos[repo_id]
    return repo["commits"][repo["branches"]["main"]]["files"]


def _commit_files(hub, repo_id, files: dict) -> None:
    """A commit on main of the fake HF hub adding or replacing `files`: what `push --sign` or a hand edit does."""
    repo = hub.repos[repo_id]
    head = repo["branches"]["main"]
    repo["branches"]["main"] = hub._commit(repo, head, {**repo["commits"][head]["files"], **files}, "edit")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two adapters pushed with `swiftlike adapter push` to the fake HF hub (nova: smollm2-135m lora, signed by a
    trusted key; orbit: smollm2-360m dora, its card from before cards carried a `swiftlike:` block), the same two on
    a local hub (nova signed by a key nobody trusts)."""
    from hf_server import FakeHub

    from swiftlike.adapters import artifact
    from swiftlike.adapters.signing import SIGNATURE, sign
    from swiftlike.hub.local import LocalHub

    tmp = tmp_path_factory.mktemp("search")
    hub = FakeHub().start()
    home, local_root = tmp / "home", tmp / "local-hub"
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp / "hf"),
           "SWIFTLIKE_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "SWIFTLIKE_LOCAL_HUB": str(local_root),
           **UNREACHABLE_MS}
    nova = _make_adapter(tmp / "nova", seed=0)
    orbit = _make_adapter(tmp / "orbit", seed=1)
    manifest = json.loads((orbit / "swiftlike.json").read_text())
    manifest.update(base_model_type="smollm2-360m-instruct", tuner="dora",
                    tuner_config={**manifest["tuner_config"], "r": 4, "use_dora": True})
    from swiftlike.checkpoint import write_manifest

    write_manifest(orbit, {k: v for k, v in manifest.items() if k not in ("format", "files")})
    for src, ref in ((nova, "hf:acme/nova-lora"), (orbit, "hf:orbit-labs/orbit-dora")):
        proc = _cli("adapter", "push", str(src), ref, env=env)
        assert proc.returncode == 0, proc.stderr
    trusted, stranger = _key(), _key()
    _trust(home, "acme", trusted)
    _commit_files(hub, "acme/nova-lora",
                  {SIGNATURE: sign(_files(hub, "acme/nova-lora")["swiftlike.json"], trusted, "acme")})
    # orbit's card without the `swiftlike:` block: search then reads rank from its swiftlike.json
    import hashlib

    card = _files(hub, "orbit-labs/orbit-dora")["README.md"].decode()
    start = card.index("swiftlike:\n")
    card = (card[:start] + card[card.index("---", start):]).encode()
    manifest = json.loads(_files(hub, "orbit-labs/orbit-dora")["swiftlike.json"])
    manifest["files"]["README.md"] = {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
    _commit_files(hub, "orbit-labs/orbit-dora", {"README.md": card, "swiftlike.json": json.dumps(manifest).encode()})
    hub.repos["acme/nova-lora"]["downloads"], hub.repos["orbit-labs/orbit-dora"]["downloads"] = 5, 9
    hub.repos["acme/nova-lora"]["likes"] = 3

    for src, repo_id, key in ((nova, "team/nova-lora", stranger), (orbit, "team/orbit-dora", None)):
        stage = tmp / f"stage-{src.name}"
        stage.mkdir()
        artifact.build(src, stage, name=src.name)
        if key is not None:
            (stage / SIGNATURE).write_bytes(sign((stage / "swiftlike.json").read_bytes(), key, "stranger"))
        LocalHub(local_root).upload(stage, repo_id)
    yield {"hub": hub, "env": env, "home": home, "local_root": local_root}
    hub.stop()


def test_search_every_hub_says_which_answered(world):
    proc = _cli("adapter", "search", "--json", env=world["env"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    rows = {r["ref"]: {k: v for k, v in r.items() if k not in ("ref", "updated")} for r in data["rows"]}
    assert rows == {
        "hf:orbit-labs/orbit-dora": {"hub": "hf", "base_model_type": "smollm2-360m-instruct", "tuner": "dora",
                                     "rank": 4, "downloads": 9, "likes": 0, "signed": False},
        "hf:acme/nova-lora": {"hub": "hf", "base_model_type": "smollm2-135m-instruct", "tuner": "lora", "rank": 8,
                              "downloads": 5, "likes": 3, "signed": True},
        "local:team/nova-lora": {"hub": "local", "base_model_type": "smollm2-135m-instruct", "tuner": "lora",
                                 "rank": 8, "downloads": None, "likes": None, "signed": True},
        "local:team/orbit-dora": {"hub": "local", "base_model_type": "smollm2-360m-instruct", "tuner": "dora",
                                  "rank": 4, "downloads": None, "likes": None, "signed": False}}
    assert [r["ref"] for r in data["rows"]][:2] == ["hf:orbit-labs/orbit-dora", "hf:acme/nova-lora"]  # downloads
    assert all(r["updated"] and r["updated"].endswith("Z") for r in data["rows"])
    hubs = {h["hub"]: h for h in data["hubs"]}
    assert hubs["hf"] == {"hub": "hf", "answered": True, "rows": 2}
    assert hubs["local"] == {"hub": "local", "answered": True, "rows": 2}
    assert not hubs["ms"]["answered"] and hubs["ms"]["reason"].startswith("cannot be reached (")
    # what the real client sent: one listing request filtered on the card's tags, with siblings and card data
    listing = [r for r in world["hub"].requests if r["path"] == "/api/models"]
    assert listing and dict(listing[-1]["query"]).get("sort") == "downloads"
    assert {v for k, v in listing[-1]["query"] if k == "filter"} == {"peft", "swiftlike"}
    assert {"siblings", "cardData"} <= {v for k, v in listing[-1]["query"] if k == "expand"}

    # the table on stdout, one status line per hub on stderr
    proc = _cli("adapter", "search", "nova", env=world["env"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["REF", "BASE_MODEL_TYPE", "TUNER", "RANK", "DOWNLOADS", "LIKES", "UPDATED",
                                "SIGNED"]
    assert [line.split()[0] for line in lines[1:]] == ["hf:acme/nova-lora", "local:team/nova-lora"]
    assert lines[1].split()[1:6] == ["smollm2-135m-instruct", "lora", "8", "5", "3"] and lines[1].endswith("yes")
    status = proc.stderr.splitlines()
    assert status[:2] == ["hf: 1 adapter", "local: 1 adapter"] and status[2].startswith("ms: cannot be reached (")
    assert len(status) == 3


def test_search_filters_on_the_hub(world):
    proc = _cli("adapter", "search", "--hub", "hf", "--base", "smollm2-360m-instruct", "--tuner", "dora", "--json",
                env=world["env"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [r["ref"] for r in data["rows"]] == ["hf:orbit-labs/orbit-dora"]
    assert data["hubs"] == [{"hub": "hf", "answered": True, "rows": 1}]
    query = [r for r in world["hub"].requests if r["path"] == "/api/models"][-1]["query"]
    assert {v for k, v in query if k == "filter"} == {"peft", "swiftlike", "swiftlike-base:smollm2-360m-instruct",
                                                      "swiftlike-tuner:dora"}


def test_search_offline_says_why_each_hub_did_not_answer(monkeypatch):
    import huggingface_hub.constants as hf_constants

    from swiftlike.adapters.search import search

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MODELSCOPE_OFFLINE", "1")
    monkeypatch.delenv("SWIFTLIKE_LOCAL_HUB", raising=False)
    result = search("nova")
    assert result.rows == [] and result.answered == []
    assert result.status_lines() == [
        "hf: offline (HF_HUB_OFFLINE=1 is set)",
        "local: the local hub has no root directory: pass --hub_root DIR or set SWIFTLIKE_LOCAL_HUB=DIR",
        "ms: offline (MODELSCOPE_OFFLINE/SWIFTLIKE_OFFLINE is set)"]


def test_search_local_hub_and_bad_filters(world, tmp_path):
    from swiftlike.adapters.search import search

    root = str(world["local_root"])
    result = search(hub="local", hub_root=root, base="SmolLM2-135M-Instruct")  # model names are case-insensitive
    assert [r["ref"] for r in result.rows] == ["local:team/nova-lora"] and result.answered == ["local"]
    assert [r["ref"] for r in search("ORBIT", hub="local", hub_root=root).rows] == ["local:team/orbit-dora"]
    assert search(hub="local", hub_root=root, tuner="qlora").rows == []
    assert len(search(hub="local", hub_root=root, limit=1).rows) == 1
    assert search(hub="local", hub_root=str(tmp_path / "none")).hubs == [
        {"hub": "local", "answered": False, "reason": f"{tmp_path / 'none'}: no such directory (the local hub's root)"}]
    with pytest.raises(SwiftlikeError, match=r"^unknown hub 'hff'; did you mean hf\?"):
        search(hub="hff")
    with pytest.raises(SwiftlikeError, match=r"^unknown model 'smollm2-135m'; did you mean smollm2-135m-instruct"):
        search(base="smollm2-135m")
    with pytest.raises(SwiftlikeError, match=r"^unknown tuner 'lorra'; did you mean lora"):
        search(tuner="lorra")
    with pytest.raises(SwiftlikeError, match=r"--limit 0: must be between 1 and 100"):
        search(limit=0)


# ---------------------------------------------------------------- info
def test_info_reads_a_remote_adapter_without_installing_it(world):
    proc = _cli("adapter", "info", "hf:acme/nova-lora", "--json", env=world["env"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    files = _files(world["hub"], "acme/nova-lora")
    assert data["revision"] == world["hub"].repos["acme/nova-lora"]["branches"]["main"] and data["ref"] == "hf:acme/nova-lora"
    assert (data["name"], data["base_model_type"], data["tuner"], data["rank"]) == (
        "nova-lora", "smollm2-135m-instruct", "lora", 8)
    assert data["signature"]["status"] == "trusted" and data["signature"]["publisher"] == "acme"
    assert data["files"]["adapter_model.safetensors"]["size"] == len(files["adapter_model.safetensors"])
    assert data["size"] == sum(len(files[rel]) for rel in data["files"])
    assert data["card"] == files["README.md"].decode() and data["manifest"]["version"] == "0.1.0"
    assert data["repository"] == []  # the Hub's listing of the revision matches the manifest
    assert not (world["home"] / "adapters").exists()  # nothing installed
    weights = [r for r in world["hub"].requests if r["path"].endswith("/adapter_model.safetensors")]
    assert not weights  # only the manifest, the signature and the card were fetched

    # a weights file swapped on the Hub (manifest left as it was): shown before anything is installed
    _commit_files(world["hub"], "orbit-labs/orbit-dora", {"adapter_model.safetensors": b"x" * 10})
    proc = _cli("adapter", "info", "hf:orbit-labs/orbit-dora", env=world["env"])
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(None, 1) for line in proc.stdout.split("\n--- README.md ---")[0].splitlines()
                  if not line.startswith(("base_model ", "base_model_type")))
    assert fields["signature"] == "unsigned" and fields["tuner"] == "dora" and fields["rank"] == "4"
    assert "adapter_model.safetensors (" in fields["files"]
    assert fields["repository"].startswith("adapter_model.safetensors: 10 bytes in the repository, the manifest says ")
    assert fields["repository"].endswith(" (an install refuses it)")
    assert "\n--- README.md ---\n---\nlibrary_name: peft" in proc.stdout


def test_info_signature_status_on_a_local_hub(world, swiftlike_home, tmp_path):
    import shutil

    from swiftlike.adapters.remote_info import remote_info
    from swiftlike.hub.local import LocalHub

    root = str(world["local_root"])
    info = remote_info("local:team/nova-lora", hub_root=root)
    assert info["signature"]["status"] == "untrusted" and info["signature"]["publisher"] == "stranger"
    assert "NOT a trusted publisher" in info["signature"]["summary"]
    assert remote_info("local:team/orbit-dora", hub_root=root)["signature"]["status"] == "unsigned"
    # a manifest changed after signing: invalid, said why
    hub = LocalHub(root)
    stage = tmp_path / "tampered"
    shutil.copytree(hub.download("team/nova-lora"), stage)
    manifest = json.loads((stage / "swiftlike.json").read_text())
    manifest["version"] = "9.9.9"
    (stage / "swiftlike.json").chmod(0o644)
    (stage / "swiftlike.json").write_text(json.dumps(manifest))
    hub.upload(stage, "team/nova-tampered")
    info = remote_info("local:team/nova-tampered", hub_root=root)
    assert info["signature"]["status"] == "invalid" and "manifest changed after it was signed" in \
        info["signature"]["summary"]
    assert not (swiftlike_home / "adapters").exists()


def test_info_bad_input_is_one_line(world, tmp_path):
    from swiftlike.adapters.remote_info import remote_info

    for ref, expected in [("hff:acme/nova-lora", "unknown hub 'hff'; did you mean hf? (see `swiftlike hubs list`)"),
                          ("local:team/missing", f"info local:team/missing: no such repository under "
                                                 f"{world['local_root']}"),
                          ("nova-lora", "'nova-lora' is not a hub reference; write HUB:ORG/NAME[@REVISION]")]:
        with pytest.raises(SwiftlikeError) as err:
            remote_info(ref, hub_root=str(world["local_root"]))
        assert str(err.value).startswith(expected) and "\n" not in str(err.value)
    # a repo the Hub does not have, and an offline Hub without a cached copy
    for ref, env, expected in [
            ("hf:acme/missing", world["env"], "Error: info hf:acme/missing: not found on the Hugging Face Hub (a "
                                              "private repo needs `hf auth login` or HF_TOKEN)\n"),
            ("hf:acme/nova-lora", {**world["env"], "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty")},
             "Error: info hf:acme/nova-lora is not in the Hugging Face cache and the hub cannot be reached")]:
        proc = _cli("adapter", "info", ref, env=env)
        assert proc.returncode == 1 and proc.stderr.startswith(expected) and proc.stderr.count("\n") == 1, \
            proc.stderr


def test_search_waits_for_no_hub_past_the_deadline(plugins, monkeypatch):
    """A plugin hub that never answers is reported after the deadline while the others' rows still come back; a hub
    without `search` is named, not an error."""
    import threading
    import time

    import huggingface_hub.constants as hf_constants

    import swiftlike
    from swiftlike.adapters.search import search

    release = threading.Event()

    class Stuck:
        def search(self, query=None, **kw):
            release.wait(30)
            return []

    class Answers:
        def search(self, query=None, **kw):
            return [{"ref": "quick:acme/nova\x1b[2J", "tuner": "lora", "rank": "8", "downloads": 3,
                     "files": ["swiftlike.json", "swiftlike.sig"]}]

    class Plugin:
        @swiftlike.hookimpl
        def register_hubs(self, register):
            register("stuck", factory=Stuck)
            register("quick", factory=Answers)
            register("plain", factory=object)

    plugins.add(Plugin(), "test-hubs")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("SWIFTLIKE_LOCAL_HUB", raising=False)
    try:
        started = time.monotonic()
        result = search(timeout=0.5)
        assert time.monotonic() - started < 5
    finally:
        release.set()
    hubs = {h["hub"]: h for h in result.hubs}
    assert hubs["stuck"] == {"hub": "stuck", "answered": False, "reason": "no answer within 0.5 s"}
    assert hubs["plain"] == {"hub": "plain", "answered": False, "reason": "does not support search"}
    assert hubs["quick"] == {"hub": "quick", "answered": True, "rows": 1}
    # hub text is cleaned for the terminal; a rank that is not a number is dropped
    assert result.rows == [{"hub": "quick", "ref": "quick:acme/nova?[2J", "base_model_type": None, "tuner": "lora",
                            "rank": None, "downloads": 3, "likes": None, "updated": None, "signed": True}]
    with pytest.raises(SwiftlikeError, match=r"^hub 'plain' cannot search \(hubs that can: hf, local, ms, quick"):
        search(hub="plain")
