"""Hub references, and the `hf` and `ms` hubs: the real huggingface_hub client against a local fake Hub for push and
download, and both libraries' offline caches (pre-seeded in their real layouts). Nothing touches the network."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from swiftlike.registry import SwiftlikeError

TOKEN = "hf_fakeWriteToken0123456789abcdef"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """An r8 LoRA adapter dir with a swiftlike manifest (random weights; no training needed for transport)."""
    return _make_adapter(tmp_path_factory.mktemp("adapter") / "nova", seed=0)


def _make_adapter(path: Path, seed: int) -> Path:
    from safetensors.numpy import save_file

    from swiftlike.checkpoint import write_manifest

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
           "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal((8, 64),
                                                                                                     np.float32)},
              str(path / "adapter_model.safetensors"))
    (path / "chat_template.jinja").write_text("{{ messages }}")
    write_manifest(path, {"name": path.name, "base_model_type": "smollm2-135m-instruct",
                          "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "tuner": "lora", "tuner_config": cfg})
    return path


def _artifact(src: Path, dest: Path, name: str) -> Path:
    from swiftlike.adapters.artifact import build

    dest.mkdir(parents=True)
    build(src, dest, name=name)
    return dest


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "swiftlike", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


# ---------------------------------------------------------------- references
@pytest.mark.parametrize("text, hub, repo, rev", [
    ("hf:acme/nova-lora", "hf", "acme/nova-lora", None),
    ("ms:Qwen/Qwen2.5-0.5B@master", "ms", "Qwen/Qwen2.5-0.5B", "master"),
    ("local:team/nova_v2@0123abcd", "local", "team/nova_v2", "0123abcd"),
    ("s3:bucket/adapter@refs/pr/1", "s3", "bucket/adapter", "refs/pr/1"),
])
def test_parse_ref(text, hub, repo, rev):
    from swiftlike.hub.refs import looks_like_ref, parse_ref

    ref = parse_ref(text)
    assert (ref.hub, ref.repo_id, ref.revision, str(ref)) == (hub, repo, rev, text)
    assert looks_like_ref(text)


@pytest.mark.parametrize("text", ["hf:nova", "hf:acme/nova/extra", "hf:../x/y", "local:acme/nova@../../etc",
                                  "hf:acme/nova@"])
def test_parse_ref_rejects(text):
    from swiftlike.hub.refs import parse_ref

    with pytest.raises(SwiftlikeError, match="hub reference|revision"):
        parse_ref(text)


def test_paths_are_not_refs():
    from swiftlike.hub.refs import looks_like_ref

    assert not any(looks_like_ref(p) for p in ["output/v0/checkpoint-5", "./hf:x", "/abs/path", "C:\\x", "nova"])


# ---------------------------------------------------------------- hf: push and install through the real client
@pytest.fixture
def fake_hub():
    from hf_server import FakeHub

    hub = FakeHub().start()
    yield hub
    hub.stop()


def test_hf_push_and_install_with_the_real_client(adapter_dir, fake_hub, tmp_path):
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
           "SWIFTLIKE_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = _cli("adapter", "push", str(adapter_dir), "hf:acme/nova-lora", "--private", "-m", "first", env=env)
    assert proc.returncode == 0, proc.stderr
    repo = fake_hub.repos["acme/nova-lora"]
    head = repo["branches"]["main"]
    assert f"hf:acme/nova-lora@{head}" in proc.stdout
    assert repo["private"] and repo["commits"][head]["message"] == "first"
    files = repo["commits"][head]["files"]
    assert set(files) == {".gitattributes", "README.md", "swiftlike.json", "adapter_config.json",
                          "adapter_model.safetensors", "chat_template.jinja"}
    assert files["README.md"].startswith(b"---\nlibrary_name: peft\nbase_model: \"HuggingFaceTB/SmolLM2-135M-Instruct\"")
    manifest = json.loads(files["swiftlike.json"])
    assert manifest["version"] == "0.1.0" and set(manifest["files"]) == set(files) - {".gitattributes",
                                                                                      "swiftlike.json"}
    paths = [r["path"] for r in fake_hub.requests]
    assert "/api/repos/create" in paths and "/api/models/acme/nova-lora/preupload/main" in paths
    assert "/api/models/acme/nova-lora/commit/main" in paths
    repo_calls = [r for r in fake_hub.requests if r["path"].startswith(("/api/repos/", "/api/models/"))]
    assert repo_calls and all(r["authorization"] == f"Bearer {TOKEN}" for r in repo_calls), repo_calls
    assert TOKEN not in proc.stdout + proc.stderr  # the token is sent, never printed

    proc = _cli("adapter", "install", "hf:acme/nova-lora", env=env)
    assert proc.returncode == 0, proc.stderr
    installed = tmp_path / "home" / "adapters" / "nova-lora"
    for rel, data in files.items():
        assert rel == ".gitattributes" or (installed / rel).read_bytes() == data, rel
    assert not (installed / ".gitattributes").exists() and not (installed / "adapter_model.safetensors").is_symlink()
    assert json.loads((installed / ".swiftlike-install.json").read_text())["revision"] == head

    # a second version on a branch; installing the branch gets its bytes, main keeps the first
    v2 = _make_adapter(tmp_path / "nova-v2", seed=1)
    proc = _cli("adapter", "push", str(v2), "hf:acme/nova-lora@v2", env=env)
    assert proc.returncode == 0, proc.stderr
    assert repo["branches"]["main"] == head and repo["branches"]["v2"] != head
    proc = _cli("adapter", "install", "hf:acme/nova-lora@v2", "--name", "nova-v2", env=env)
    assert proc.returncode == 0, proc.stderr
    weights = "adapter_model.safetensors"
    assert (tmp_path / "home" / "adapters" / "nova-v2" / weights).read_bytes() == (v2 / weights).read_bytes()

    proc = _cli("adapter", "install", "hf:acme/missing", env=env)
    assert proc.returncode == 1 and proc.stderr == (
        "Error: install hf:acme/missing: not found on the Hugging Face Hub (a private repo needs `hf auth login` or "
        "HF_TOKEN); nothing installed\n")
    proc = _cli("adapter", "install", "hf:acme/nova-lora@nope", "--name", "nope", env=env)
    assert proc.returncode == 1 and "hf:acme/nova-lora@nope: no such branch, tag or commit on the Hub" in proc.stderr

    # offline, a pinned revision installs from the HF cache the download left behind
    proc = _cli("adapter", "install", f"hf:acme/nova-lora@{head}", "--name", "again",
                env={**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr
    proc = _cli("adapter", "push", str(v2), "hf:acme/other", env={**env, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and proc.stderr == ("Error: cannot push to hf:acme/other: HF_HUB_OFFLINE=1 is set; "
                                                    "unset it to push\n")


# ---------------------------------------------------------------- hf: the offline cache
def _seed_hf_cache(cache: Path, repo_id: str, artifact: Path, commit: str, branch: str = "main") -> Path:
    """huggingface_hub's real layout: models--ORG--NAME/{blobs/<etag>, snapshots/<commit>/<file> -> blob,
    refs/<branch>}."""
    from swiftlike.checksums import sha256_file

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for path in sorted(artifact.rglob("*")):
        if path.is_file():
            rel = path.relative_to(artifact)
            blob = repo / "blobs" / sha256_file(path)
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, blob)
            link = snapshot / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return snapshot


def test_hf_install_offline_from_a_preseeded_cache(adapter_dir, tmp_path, monkeypatch, swiftlike_home):
    import huggingface_hub.constants as hf_constants

    from swiftlike.adapters.store import install

    cache = tmp_path / "hf-cache"
    commit = "a" * 40
    artifact = _artifact(adapter_dir, tmp_path / "artifact", "nova")
    snapshot = _seed_hf_cache(cache, "acme/nova", artifact, commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)

    installed = install("hf:acme/nova")
    assert installed.install["revision"] == commit
    for path in artifact.iterdir():
        assert (installed.path / path.name).read_bytes() == path.read_bytes()
        assert not (installed.path / path.name).is_symlink()
    with pytest.raises(SwiftlikeError, match=r"hf:acme/nova@v3 is not in the Hugging Face cache"):
        install("hf:acme/nova@v3", name="nova3")

    # a snapshot symlink that leaves the repo's cache dir is refused, even with the right bytes
    outside = tmp_path / "outside.json"
    shutil.copyfile(artifact / "adapter_config.json", outside)
    (snapshot / "adapter_config.json").unlink()
    (snapshot / "adapter_config.json").symlink_to(outside)
    with pytest.raises(SwiftlikeError, match=r"adapter_config.json: symlink pointing outside the repository"):
        install("hf:acme/nova", name="nova-bad")
    assert not (swiftlike_home / "adapters" / "nova-bad").exists()


# ---------------------------------------------------------------- ms: the offline cache and the client calls
def test_ms_install_offline_from_a_preseeded_cache(adapter_dir, tmp_path):
    """modelscope (modelscope_hub) caches at $MODELSCOPE_CACHE/models/ORG--NAME/snapshots/<revision>/ (plain
    files); with local_files_only it answers from there without a request."""
    cache = tmp_path / "ms-cache"
    shutil.copytree(_artifact(adapter_dir, tmp_path / "artifact", "nova"),
                    cache / "models" / "acme--nova" / "snapshots" / "master")
    env = {"MODELSCOPE_CACHE": str(cache), "MODELSCOPE_OFFLINE": "1", "SWIFTLIKE_HOME": str(tmp_path / "home"),
           "MODELSCOPE_ENDPOINT": "http://127.0.0.1:9"}
    proc = _cli("adapter", "install", "ms:acme/nova", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(_cli("adapter", "list", "--json", env=env).stdout)
    assert [(r["name"], r["ref"], r["rank"]) for r in rows] == [("nova", "ms:acme/nova", 8)]
    proc = _cli("adapter", "install", "ms:acme/nova@v9", "--name", "nova9", env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: install ms:acme/nova@v9 could "
                                                           "not be downloaded from ModelScope and is not cached")
    assert proc.stderr.count("\n") == 1


def test_ms_push_uses_the_modelscope_client(adapter_dir, monkeypatch):
    import importlib

    from swiftlike.adapters.publish import push

    calls = []

    class FakeHubApi:
        def __init__(self, token=None, **kw):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, *, repo_id, folder_path, **kw):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kw))
            return {"commit_id": "c0ffee"}

    monkeypatch.setattr(importlib.import_module("modelscope.hub.api"), "HubApi", FakeHubApi)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-secret")
    assert push(adapter_dir, "ms:acme/nova", private=True, message="hi") == "ms:acme/nova@c0ffee"
    assert calls[0] == ("init", "ms-secret")
    assert calls[1] == ("create_repo", "acme/nova", {"visibility": "private", "repo_type": "model", "exist_ok": True})
    assert calls[2] == ("upload_folder", "acme/nova", ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                       "chat_template.jinja", "swiftlike.json"],
                        {"repo_type": "model", "revision": "master", "commit_message": "hi"})
