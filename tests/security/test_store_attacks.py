"""Attacks on the adapter store, the hubs and packaging, each reproduced with real files, real hubs (the local one and
the real huggingface_hub client against tests/hf_server.py) and real processes. Every test here failed before its
fix. Crash safety (kill -9) is in test_store_crash.py, pinned plugin dependencies in test_store_plugin_pins.py."""
import email.parser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from swiftlike.registry import SwiftlikeError

DATA = Path(__file__).resolve().parent.parent / "data" / "identity.jsonl"
TOKEN = "hf_fakeWriteToken0123456789abcdef"
WEIGHTS = "adapter_model.safetensors"


def _make_adapter(path: Path, seed: int = 0) -> Path:
    """An r8 LoRA adapter dir with a swiftlike manifest (random weights: transport and packaging only)."""
    from safetensors.numpy import save_file

    from swiftlike.checkpoint import write_manifest

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
           "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":
               rng.standard_normal((8, 64), np.float32)}, str(path / WEIGHTS))
    (path / "chat_template.jinja").write_text("{{ messages }}")
    write_manifest(path, {"name": path.name, "base_model_type": "smollm2-135m-instruct",
                          "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "tuner": "lora", "tuner_config": cfg})
    return path


@pytest.fixture
def adapter_dir(tmp_path):
    return _make_adapter(tmp_path / "src" / "nova")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(root))
    return root


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A real LoRA checkpoint of the tiny model (one step of `swiftlike sft`): loadable by infer, serve, merge."""
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    out = tmp_path_factory.mktemp("security-run")
    result = sft(SftArguments(model=str(tiny_model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                              max_steps=1, save_steps=1, per_device_train_batch_size=2, learning_rate=5e-3,
                              max_length=64, report_to=["none"], lora_rank=4, lora_alpha=8, logging_steps=1))
    return result["run_dir"] / "checkpoint-1"


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "swiftlike", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _writable(path: Path) -> Path:
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def _entry(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _store_entries(home: Path) -> list[str]:
    root = home / "adapters"
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


# ---------------------------------------------------------------- 6: export publishes what symlinks point to
def test_export_and_push_refuse_symlinks_leaving_the_checkpoint(adapter_dir, hub, tmp_path, swiftlike_home):
    from swiftlike.adapters.publish import push
    from swiftlike.export import export

    secret = tmp_path / "secret.txt"
    secret.write_text("AWS_SECRET_ACCESS_KEY=hunter2\n")
    bare = tmp_path / "bare"  # no manifest: export generates one (the path the review broke)
    shutil.copytree(adapter_dir, bare)
    (bare / "swiftlike.json").unlink()
    (bare / "notes.txt").symlink_to(secret)
    with pytest.raises(SwiftlikeError, match=r"notes.txt: symlink pointing outside the directory .*; refused"):
        export(bare, "local:acme/leak")
    assert not (hub / "acme" / "leak").exists()
    with pytest.raises(SwiftlikeError, match=r"notes.txt: symlink pointing outside the directory"):
        export(bare, str(tmp_path / "copy"))  # the same walk for a directory export
    assert not (tmp_path / "copy").exists()
    proc = _cli("export", "--ckpt_dir", bare, "--to", "local:acme/leak")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "symlink pointing outside" in proc.stderr

    # a symlinked directory leaving it is refused too, and `adapter push` (manifest present) refuses alike
    (bare / "notes.txt").unlink()
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "id_rsa").write_text("PRIVATE KEY")
    (bare / "extra").symlink_to(tmp_path / "outside-dir", target_is_directory=True)
    with pytest.raises(SwiftlikeError, match=r"extra: symlinked directory"):
        export(bare, "local:acme/leak")
    manifested = tmp_path / "manifested"
    shutil.copytree(adapter_dir, manifested)
    (manifested / "notes.txt").symlink_to(secret)
    with pytest.raises(SwiftlikeError, match=r"notes.txt: symlink pointing outside the directory"):
        push(manifested, "local:acme/leak")
    assert not (hub / "acme" / "leak").exists()
    assert all(b"hunter2" not in p.read_bytes() for p in hub.rglob("*") if p.is_file())

    # a link that stays inside is published as the file it points to
    (bare / "extra").unlink()
    (bare / "config_copy.json").symlink_to("adapter_config.json")
    pushed = export(bare, "local:acme/fine")
    published = hub / "acme" / "fine" / pushed.rsplit("@", 1)[1]
    assert not (published / "config_copy.json").is_symlink()
    assert (published / "config_copy.json").read_bytes() == (adapter_dir / "adapter_config.json").read_bytes()


# ---------------------------------------------------------------- 7: manifest text injected into wheel METADATA
EVIL_TUNER = "lora\nRequires-Dist: evil-dependency-xyz"


def test_packaging_refuses_manifest_text_that_would_inject_metadata(adapter_dir, tmp_path):
    from swiftlike.adapters.wheel import metadata, package

    evil = tmp_path / "evil"
    shutil.copytree(adapter_dir, evil)
    manifest = json.loads((evil / "swiftlike.json").read_text())
    manifest["tuner"] = EVIL_TUNER
    (evil / "swiftlike.json").write_text(json.dumps(manifest))  # the file table does not cover the manifest
    with pytest.raises(SwiftlikeError, match=r"field 'tuner' \('lora\\nRequires-Dist: evil-dependency-xyz'\) must "
                                             r"be a name .*; refused"):
        package(evil, "swiftlike-adapter-evil", output=tmp_path / "dist")
    assert not list((tmp_path / "dist").glob("*.whl")) if (tmp_path / "dist").exists() else True

    # the METADATA writer refuses every line break itself (Unicode ones too), whatever validation let through
    for brk in ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"):
        with pytest.raises(SwiftlikeError, match=r"wheel METADATA Summary"):
            metadata([("Summary", f"lora{brk}Requires-Dist: evil-dependency-xyz")], "")

    # a packaged wheel's METADATA, read as pip reads it: swiftlike is its only requirement, the card is the body
    wheel = package(adapter_dir, "swiftlike-adapter-nova", output=tmp_path / "ok")
    meta = zipfile.ZipFile(wheel).read("swiftlike_adapter_nova-0.1.0.dist-info/METADATA")
    msg = email.parser.BytesParser().parsebytes(meta)
    assert msg.get_all("Requires-Dist") == ["swiftlike"] and msg["Name"] == "swiftlike-adapter-nova"
    assert msg.get_payload().startswith("---\nlibrary_name: peft")
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", "--report",
                           str(report), str(wheel)], capture_output=True, text=True,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert proc.returncode == 0, proc.stderr
    assert [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]] == ["swiftlike-adapter-nova"]


@pytest.mark.parametrize("key, value", [
    ("tuner", EVIL_TUNER),
    ("base_model_type", "tiny\nRequires-Dist: evil-dependency-xyz"),
    ("version", "1.0\u2028Requires-Dist: evil"),
    ("name", "nova\x1b]52;c;ZXZpbA==\x07"),  # terminal escape (OSC 52: write the clipboard)
    ("tuner_config", {"r": "4\nRequires-Dist: evil-dependency-xyz"}),
    ("base_fingerprint", "../../etc/passwd"),
    ("datasets", "not-a-list"),
    ("step", True),
])
def test_install_refuses_malformed_manifest_fields(adapter_dir, hub, swiftlike_home, tmp_path, key, value):
    """A malicious publisher writes to the hub directly (no swiftlike push): install validates the fields."""
    from swiftlike.adapters.artifact import build
    from swiftlike.adapters.store import install
    from swiftlike.hub.local import LocalHub

    folder = tmp_path / "artifact"
    folder.mkdir()
    build(adapter_dir, folder, name="evil")
    manifest = json.loads((folder / "swiftlike.json").read_text())
    manifest[key] = value
    (folder / "swiftlike.json").write_text(json.dumps(manifest))
    LocalHub().upload(folder, "acme/evil")
    with pytest.raises(SwiftlikeError, match=rf"^install local:acme/evil: swiftlike.json: field '{key}' .*; refused; "
                                             rf"nothing installed$"):
        install("local:acme/evil")
    assert _store_entries(swiftlike_home) == []


# ---------------------------------------------------------------- 8: a pinned local revision pins its content
def test_pinned_local_revision_is_checked_against_its_content(adapter_dir, hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install

    rev = push(adapter_dir, "local:acme/nova").rsplit("@", 1)[1]
    path = _writable(hub / "acme" / "nova" / rev)
    other = _make_adapter(tmp_path / "other", seed=1)
    data = (other / WEIGHTS).read_bytes()  # new weights, and a manifest that agrees with them
    (path / WEIGHTS).write_bytes(data)
    manifest = json.loads((path / "swiftlike.json").read_text())
    manifest["files"][WEIGHTS] = _entry(data)
    (path / "swiftlike.json").write_text(json.dumps(manifest, indent=2))
    for ref in (f"local:acme/nova@{rev[:8]}", f"local:acme/nova@{rev}", "local:acme/nova"):
        with pytest.raises(SwiftlikeError, match=rf"local:acme/nova@{rev[:12]}: its files hash to [0-9a-f]{{12}}…, not "
                                                 rf"to the revision's name: changed after it was pushed"):
            install(ref)
    assert _store_entries(swiftlike_home) == []


def test_refs_resolve_only_to_revisions_inside_the_repo(adapter_dir, hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install

    rev = push(adapter_dir, "local:acme/nova").rsplit("@", 1)[1]
    repo = hub / "acme" / "nova"
    outside = repo / ".." / ".." / ".." / "outside-rev"  # what a refs entry "../../../outside-rev" names
    shutil.copytree(repo / rev, outside)
    (repo / "refs").write_text(json.dumps({"main": "../../../outside-rev", "v1": rev}))
    with pytest.raises(SwiftlikeError, match=r"local:acme/nova@main: .*refs points it at '../../../outside-rev', "
                                             r"which is not a revision of this repo; refused"):
        install("local:acme/nova")
    # a revision-named symlink to a directory elsewhere is no revision of this repo either
    fake = "f" * 40
    (repo / fake).symlink_to(outside.resolve(), target_is_directory=True)
    (repo / "refs").write_text(json.dumps({"main": fake}))
    with pytest.raises(SwiftlikeError, match=rf"revision {fake[:12]}… is not a directory of .*; refused"):
        install("local:acme/nova")
    with pytest.raises(SwiftlikeError, match=r"is not a directory of"):
        install(f"local:acme/nova@{fake[:10]}")
    assert _store_entries(swiftlike_home) == []


# ---------------------------------------------------------------- 9: the store copy is checked before every load
def test_tampered_store_copy_is_refused_by_infer_merge_and_serve(trained, hub, swiftlike_home, tmp_path):
    from swiftlike.adapters import resolve
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install, verify
    from swiftlike.infer import load_checkpoint
    from swiftlike.merge import merge_lora
    from swiftlike.serve.runtime import resolve_source

    push(trained, "local:acme/nova")
    installed = install("local:acme/nova")
    version = resolve("nova")
    assert version == installed.path.resolve()
    weights = version / WEIGHTS
    original = weights.read_bytes()
    st = weights.stat()

    # same size, same mtime (utime restores it): only the content changed, and `adapter verify` would say so
    flipped = bytearray(original)
    flipped[-1] ^= 1
    weights.write_bytes(bytes(flipped))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    refused = r"^adapter nova \(.*\): adapter_model.safetensors: sha256 mismatch .*; refused to use it — reinstall it"
    with pytest.raises(SwiftlikeError, match=refused):
        load_checkpoint("nova")  # infer --ckpt_dir nova
    with pytest.raises(SwiftlikeError, match=refused):
        merge_lora("nova", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    with pytest.raises(SwiftlikeError, match=refused):
        resolve_source("nova")  # serve: POST /v1/adapters {"source": "nova"} and --adapters nova=nova
    with pytest.raises(SwiftlikeError, match=refused):
        load_checkpoint("local:acme/nova")  # the reference resolves to the same store copy
    with pytest.raises(SwiftlikeError, match=refused):
        load_checkpoint(str(version))  # and so does its path
    with pytest.raises(SwiftlikeError, match=r"sha256 mismatch"):
        verify("nova")

    # the right bytes back (new ctime: the seal no longer matches): one full re-hash, then loaded and resealed
    weights.write_bytes(original)
    assert resolve("nova") == version and resolve_source("nova") == version
    assert load_checkpoint("nova").ckpt_dir == version

    # weights and manifest rewritten to agree with each other: the manifest is not the installed one
    manifest = json.loads((version / "swiftlike.json").read_text())
    manifest["files"][WEIGHTS] = _entry(bytes(flipped))
    weights.write_bytes(bytes(flipped))
    (version / "swiftlike.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(SwiftlikeError, match=r"swiftlike.json: changed since it was installed"):
        resolve_source("nova")
    with pytest.raises(SwiftlikeError, match=r"swiftlike.json: changed since it was installed"):
        verify("nova")

    # a reinstall replaces the tampered copy (the same revision is not "already installed" any more)
    again = install("local:acme/nova")
    assert again.fresh and (resolve("nova") / WEIGHTS).read_bytes() == original
    (resolve("nova") / "extra.py").write_text("import os\n")  # a file added after install
    with pytest.raises(SwiftlikeError, match=r"extra.py: not listed in swiftlike.json \(added after install\)"):
        load_checkpoint("nova")


# ---------------------------------------------------------------- 13: merge-lora --output_dir deletes a directory
def test_merge_lora_refuses_a_non_empty_output_dir(trained, tmp_path):
    from swiftlike.merge import merge_lora

    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    with pytest.raises(SwiftlikeError, match=r"--output_dir .*precious: exists and is not empty; choose a new one, "
                                             r"or pass --overwrite"):
        merge_lora(trained, out)
    proc = _cli("merge-lora", "--ckpt_dir", trained, "--output_dir", out)
    assert proc.returncode == 1 and "exists and is not empty" in proc.stderr, proc.stderr
    assert (out / "thesis.tex").read_text() == "three years of work"
    with pytest.raises(SwiftlikeError, match=r"would replace the checkpoint being merged"):
        merge_lora(trained, trained.parent, overwrite=True)
    assert trained.is_dir()

    proc = _cli("merge-lora", "--ckpt_dir", trained, "--output_dir", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").is_file() and not (out / "thesis.tex").exists()
    # the default output, written by an earlier merge of the same checkpoint, is replaced without asking
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained, ckpt)
    assert merge_lora(ckpt) == merge_lora(ckpt) == tmp_path / "ckpt-merged"


# ---------------------------------------------------------------- 16: `$` matches before a trailing newline
def test_names_must_match_whole(adapter_dir, hub, swiftlike_home, tmp_path):
    from swiftlike.adapters import resolve
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install
    from swiftlike.adapters.wheel import package
    from swiftlike.hub.local import LocalHub
    from swiftlike.hub.refs import parse_ref

    push(adapter_dir, "local:acme/nova")
    proc = _cli("adapter", "install", "local:acme/nova", "--name", "nova\n", env={"SWIFTLIKE_HOME": str(swiftlike_home)})
    assert proc.returncode == 1 and proc.stderr.startswith("Error: --name 'nova\\n': use letters"), proc.stderr
    for bad in ("nova\n", "nová", "../nova", ".nova", "n" * 101):
        with pytest.raises(SwiftlikeError, match=r"--name"):
            install("local:acme/nova", name=bad)
    assert _store_entries(swiftlike_home) == []
    install("local:acme/nova")
    with pytest.raises(SwiftlikeError, match=r"no such directory, installed adapter"):
        resolve("nova\n")
    with pytest.raises(SwiftlikeError, match=r"a repository is ORG/NAME"):
        LocalHub().repo_dir("acme/nova\n")
    for ref in ("local:acme/nova\n@main", "hf:acme/nová", "hf:acme/nova@v1\nx"):
        with pytest.raises(SwiftlikeError, match=r"not a hub reference"):
            parse_ref(ref)
    with pytest.raises(SwiftlikeError, match=r"not a valid distribution name"):
        package(adapter_dir, "swiftlike-adapter-nova\n", output=tmp_path / "dist")
    assert not any("\n" in p.name for p in [*swiftlike_home.rglob("*"), *tmp_path.rglob("*")])


# ---------------------------------------------------------------- 18: sizes checked before bytes are fetched
@pytest.fixture
def fake_hub():
    from hf_server import FakeHub

    hub = FakeHub().start()
    yield hub
    hub.stop()


def test_hf_install_checks_sizes_before_downloading(adapter_dir, fake_hub, tmp_path):
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
           "SWIFTLIKE_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    assert _cli("adapter", "push", adapter_dir, "hf:acme/nova", env=env).returncode == 0
    repo = fake_hub.repos["acme/nova"]
    files = repo["commits"][repo["branches"]["main"]]["files"]
    declared = json.loads(files["swiftlike.json"])["files"][WEIGHTS]["size"]

    def fetched(start):
        return {r["path"].rsplit("/", 1)[-1] for r in fake_hub.requests[start:]
                if r["method"] == "GET" and "/resolve/" in r["path"]}

    files[WEIGHTS] = os.urandom(4 << 20)  # the repo now serves 4 MiB where the manifest declares a few KB
    start = len(fake_hub.requests)
    proc = _cli("adapter", "install", "hf:acme/nova", env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"{WEIGHTS}: {4 << 20} bytes in the repository, the manifest says {declared} (damaged or tampered); " \
           f"refused before downloading it" in proc.stderr, proc.stderr
    assert fetched(start) == {"swiftlike.json"}  # the manifest, and nothing it did not vouch for

    files[WEIGHTS] = (adapter_dir / WEIGHTS).read_bytes()
    files["extra.bin"] = os.urandom(4 << 20)  # big and unlisted
    start = len(fake_hub.requests)
    proc = _cli("adapter", "install", "hf:acme/nova", env=env)
    assert proc.returncode == 1 and "extra.bin: not listed in swiftlike.json" in proc.stderr, proc.stderr
    assert fetched(start) <= {"swiftlike.json"}  # (the manifest of that commit is in the HF cache by now)

    del files["extra.bin"]  # the honest repo installs, fetching exactly the listed files
    start = len(fake_hub.requests)
    proc = _cli("adapter", "install", "hf:acme/nova", env=env)
    assert proc.returncode == 0, proc.stderr
    assert fetched(start) - {"swiftlike.json"} == {WEIGHTS, "adapter_config.json", "chat_template.jinja", "README.md"}


def test_copy_stops_at_the_declared_size(tmp_path, adapter_dir, hub, swiftlike_home):
    from swiftlike.adapters.checks import copy_verified
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install

    # /proc files say st_size 0 and then yield bytes: the one real file whose size lies the way a file grown
    # between stat and read does
    dest = tmp_path / "copy"
    with pytest.raises(SwiftlikeError, match=r"status: more than the 0 bytes the manifest says .*stopped copying"):
        copy_verified(Path("/proc/self/status"), dest, "status", {"size": 0, "sha256": "0" * 64})
    assert dest.stat().st_size == 0

    # a revision whose weights are 16 MiB where the manifest says a few KB: refused by size, before copying
    rev = push(adapter_dir, "local:acme/nova").rsplit("@", 1)[1]
    path = _writable(hub / "acme" / "nova" / rev)
    declared = (path / WEIGHTS).stat().st_size
    with open(path / WEIGHTS, "r+b") as f:
        f.truncate(16 << 20)
    with pytest.raises(SwiftlikeError, match=rf"{WEIGHTS}: size {16 << 20} bytes, the manifest says {declared}"):
        install("local:acme/nova")
    assert not any(p.is_file() and p.stat().st_size > declared for p in (swiftlike_home / "adapters").rglob("*"))


# ---------------------------------------------------------------- 19: --private on an existing repo
def test_private_push_makes_an_existing_local_repo_private(adapter_dir, hub, tmp_path):
    from swiftlike.adapters.publish import push

    push(adapter_dir, "local:acme/nova")
    repo = hub / "acme" / "nova"
    assert repo.stat().st_mode & 0o077  # public: readable by the group and others
    push(_make_adapter(tmp_path / "v2", seed=1), "local:acme/nova", private=True)
    assert repo.stat().st_mode & 0o777 == 0o700
    push(adapter_dir, "local:acme/nova@v1")  # a push without --private never widens it again
    assert repo.stat().st_mode & 0o777 == 0o700


def test_private_push_to_an_existing_public_hf_repo_is_refused(adapter_dir, fake_hub, tmp_path):
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    assert _cli("adapter", "push", adapter_dir, "hf:acme/nova", env=env).returncode == 0
    commits = dict(fake_hub.repos["acme/nova"]["commits"])
    proc = _cli("adapter", "push", _make_adapter(tmp_path / "v2", seed=1), "hf:acme/nova", "--private", env=env)
    assert proc.returncode == 1 and proc.stderr == (
        "Error: cannot push to hf:acme/nova with --private: the repo exists and is public; make it private on the "
        "Hub (Settings) first, or push without --private\n")
    assert fake_hub.repos["acme/nova"]["commits"] == commits and not fake_hub.repos["acme/nova"]["private"]
