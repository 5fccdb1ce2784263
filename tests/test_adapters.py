"""The adapter marketplace on the `local` hub, end to end: train, push, install, load; versions, concurrent pushes,
refusals (tampered, missing, pickle, `../`, symlink, wrong base), the CLI, and packaged adapter wheels."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swiftlike.registry import SwiftlikeError
from swiftlike.train.arguments import SftArguments

DATA = Path(__file__).parent / "data" / "identity.jsonl"
IDS = torch.tensor([[1, 520, 3035, 346, 47, 2]])


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """A tiny LoRA run with two checkpoints (two versions of one adapter)."""
    from swiftlike.train.sft import sft

    out = tmp_path_factory.mktemp("adapter-run")
    result = sft(SftArguments(model=str(tiny_model), template="smollm2", dataset=[str(DATA)], output_dir=str(out),
                              max_steps=2, save_steps=1, per_device_train_batch_size=2, learning_rate=5e-3,
                              max_length=64, report_to=["none"], lora_rank=4, lora_alpha=8, logging_steps=1))
    run_dir = result["run_dir"]
    return {"v1": run_dir / "checkpoint-1", "v2": run_dir / "checkpoint-2"}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(root))
    return root


def _logits(ckpt, **kw):
    from swiftlike.infer import load_checkpoint

    loaded = load_checkpoint(ckpt, **kw)
    with torch.no_grad():
        return loaded.model(input_ids=IDS).logits


def _store_is_empty():
    """No adapter and nothing left from the install (the store keeps its lock file and empty work dirs)."""
    from swiftlike.adapters.store import store_root

    root = store_root()
    return not root.exists() or not any(p.name != ".lock" and (not p.is_dir() or any(p.iterdir()))
                                        for p in root.iterdir())


def test_push_install_gives_identical_logits(run, hub, swiftlike_home, tiny_model):
    from swiftlike.adapters import resolve
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install, list_adapters, verify
    from swiftlike.checksums import sha256_file

    pushed = push(run["v2"], "local:acme/nova-lora", message="first")
    rev = pushed.rsplit("@", 1)[1]
    published = hub / "acme" / "nova-lora" / rev
    assert sorted(p.name for p in published.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "args.json", "chat_template.jinja",
        "generation_config.json", "swiftlike.json"]  # trainer state (optimizer.pt, rng_state.pth, training_args.bin) is not published
    assert json.loads((hub / "acme" / "nova-lora" / "refs").read_text()) == {"main": rev}
    manifest = json.loads((published / "swiftlike.json").read_text())
    assert (manifest["name"], manifest["version"], manifest["base_model_type"]) == ("nova-lora", "0.1.0", "tiny-llama")
    for rel, entry in manifest["files"].items():
        assert (sha256_file(published / rel), (published / rel).stat().st_size) == (entry["sha256"], entry["size"])
    card = (published / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\n") and "swiftlike adapter install local:acme/nova-lora" in card

    installed = install("local:acme/nova-lora")
    assert installed.path == swiftlike_home / "adapters" / "nova-lora"
    assert verify("nova-lora").path == installed.path
    row = next(a.row() for a in list_adapters())
    assert {k: row[k] for k in ("name", "ref", "base_model_type", "tuner", "rank")} == {
        "name": "nova-lora", "ref": "local:acme/nova-lora", "base_model_type": "tiny-llama", "tuner": "lora",
        "rank": 4}
    assert row["size"] == sum(e["size"] for e in manifest["files"].values()) and row["installed_at"]

    original = _logits(run["v2"])
    assert torch.equal(_logits("nova-lora"), original)
    # the same reference resolves to the installed copy instead of installing again: the immutable version dir
    # NAME links to (an update swaps the link; a load in progress keeps reading one version)
    assert resolve("local:acme/nova-lora") == installed.path.resolve() != installed.path
    assert torch.equal(_logits("local:acme/nova-lora"), original)
    assert not torch.equal(_logits(None, model=str(tiny_model), template="smollm2"), original)  # it does something


def test_two_versions_of_one_repo(run, hub, swiftlike_home):
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install
    from swiftlike.hub.local import LocalHub

    rev1 = push(run["v1"], "local:acme/nova").rsplit("@", 1)[1]
    rev2 = push(run["v2"], "local:acme/nova", message="step 2").rsplit("@", 1)[1]
    assert rev1 != rev2
    assert push(run["v1"], "local:acme/nova@v1").endswith(rev1)  # same content, same immutable revision
    assert LocalHub().refs("acme/nova") == {"main": rev2, "v1": rev1}
    assert [json.loads(line)["message"] for line in (hub / "acme" / "nova" / "log.jsonl").read_text().splitlines()
            ] == ["", "step 2", ""]

    old = install(f"local:acme/nova@{rev1[:10]}", name="nova-step1")
    new = install("local:acme/nova")
    tagged = install("local:acme/nova@v1", name="nova-v1")
    assert (old.install["revision"], new.install["revision"], tagged.install["revision"]) == (rev1, rev2, rev1)
    weights = "adapter_model.safetensors"
    assert (old.path / weights).read_bytes() == (run["v1"] / weights).read_bytes()
    assert (new.path / weights).read_bytes() == (run["v2"] / weights).read_bytes()
    with pytest.raises(SwiftlikeError, match=r"local:acme/nova@v9: no such branch, tag or revision \(branches and "
                                             r"tags: main, v1\)"):
        install("local:acme/nova@v9", name="nova-v9")


PUSHER = r"""
import sys
from pathlib import Path
from swiftlike.hub.local import LocalHub

root, src, branch = sys.argv[1:4]
hub = LocalHub(root)
for folder in sorted(Path(src).iterdir()):
    print(hub.upload(folder, "team/shared", revision=branch, message=folder.name), flush=True)
"""


def test_concurrent_pushes_never_interleave(tmp_path):
    from swiftlike.hub.local import LocalHub, content_revision
    from swiftlike.checkpoint import file_table

    procs = []
    for p in range(2):
        src = tmp_path / f"src{p}"
        for i in range(6):
            folder = src / f"{i:02d}"
            folder.mkdir(parents=True)
            # every process also pushes the same "common" content once: one revision, however it races
            text = "common" if i == 0 else f"process {p} push {i}"
            (folder / "adapter_model.safetensors").write_bytes(os.urandom(200_000) if i else b"x" * 200_000)
            (folder / "swiftlike.json").write_text(json.dumps({"text": text}))
            (folder / "sub").mkdir()
            (folder / "sub" / "note.txt").write_text(text)
        procs.append(subprocess.Popen([sys.executable, "-c", PUSHER, str(tmp_path / "hub"), str(src), f"p{p}"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outs]
    revs = [out.split() for out, _ in outs]
    repo = tmp_path / "hub" / "team" / "shared"
    assert revs[0][0] == revs[1][0]  # the common content
    published = {p.name for p in repo.iterdir() if len(p.name) == 40}
    assert published == set(revs[0]) | set(revs[1]) and len(published) == 11
    for rev in published:  # every revision is complete and is exactly the content it is named after
        assert content_revision(file_table(repo / rev, skip=())) == rev
    refs = LocalHub(tmp_path / "hub").refs("team/shared")
    assert refs["p0"] == revs[0][-1] and refs["p1"] == revs[1][-1] and refs["main"] in published
    assert len((repo / "log.jsonl").read_text().splitlines()) == 12
    assert sorted(p.name for p in repo.iterdir() if len(p.name) != 40) == ["log.jsonl", "refs"]  # no temp, no lock


def _published(run, hub, name):
    """Push v2 to local:acme/NAME and return its (writable) revision dir, to tamper with."""
    from swiftlike.adapters.publish import push

    rev = push(run["v2"], f"local:acme/{name}").rsplit("@", 1)[1]
    path = hub / "acme" / name / rev
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def _rewrite_manifest(path, mutate):
    manifest = json.loads((path / "swiftlike.json").read_text())
    mutate(manifest["files"])
    (path / "swiftlike.json").write_text(json.dumps(manifest))


def _entry(data: bytes):
    import hashlib

    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_tampered_byte_is_refused(run, hub, swiftlike_home):
    from swiftlike.adapters.store import install

    path = _published(run, hub, "tampered")
    weights = bytearray((path / "adapter_model.safetensors").read_bytes())
    weights[-1] ^= 1
    (path / "adapter_model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(SwiftlikeError, match=r"^install local:acme/tampered: adapter_model.safetensors: sha256 "
                                             r"mismatch .*; nothing installed$"):
        install("local:acme/tampered")
    assert _store_is_empty()


def test_missing_file_is_refused(run, hub, swiftlike_home):
    from swiftlike.adapters.store import install

    path = _published(run, hub, "missing")
    (path / "adapter_config.json").unlink()
    with pytest.raises(SwiftlikeError, match=r"adapter_config.json: missing \(listed in swiftlike.json\); nothing"):
        install("local:acme/missing")
    assert _store_is_empty()


def test_pickle_is_refused_unless_allowed(run, hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install
    from swiftlike.checkpoint import write_manifest

    data = b"\x80\x04K\x01."  # pickle of the int 1
    ckpt = tmp_path / "ckpt"
    shutil.copytree(run["v2"], ckpt)
    (ckpt / "adapter_model.bin").write_bytes(data)
    write_manifest(ckpt, {k: v for k, v in json.loads((ckpt / "swiftlike.json").read_text()).items() if k != "files"})
    # push refuses a pickle, before anything is uploaded
    with pytest.raises(SwiftlikeError, match=r"adapter_model.bin: pickle file"):
        push(ckpt, "local:acme/pickled")
    assert not (hub / "acme" / "pickled").exists()

    push(ckpt, "local:acme/pickled", allow_pickle=True)  # a publisher who means it
    with pytest.raises(SwiftlikeError, match=r"adapter_model.bin: pickle file \(.bin\); .*--allow-pickle"):
        install("local:acme/pickled")
    assert _store_is_empty()
    assert (install("local:acme/pickled", allow_pickle=True).path / "adapter_model.bin").read_bytes() == data


@pytest.mark.parametrize("rel, reason", [("../evil.json", r"path escapes the adapter directory"),
                                         ("/tmp/evil.json", r"absolute path"),
                                         ("sub/../../evil.json", r"path escapes the adapter directory")])
def test_escaping_paths_are_refused(run, hub, swiftlike_home, rel, reason):
    from swiftlike.adapters.store import install

    path = _published(run, hub, "escape")
    (path.parent / "evil.json").write_text("{}")
    _rewrite_manifest(path, lambda files: files.update({rel: _entry(b"{}")}))
    with pytest.raises(SwiftlikeError, match=rf"swiftlike.json: '{re.escape(rel)}': {reason}; refused; nothing installed$"):
        install("local:acme/escape")
    assert _store_is_empty() and not (swiftlike_home / "evil.json").exists()


def test_symlink_out_of_the_repo_is_refused(run, hub, swiftlike_home, tmp_path, monkeypatch):
    from swiftlike.adapters.store import install, remove

    # a hub root reached through a symlinked directory is fine (NFS mounts often are)
    (tmp_path / "hub-link").symlink_to(hub, target_is_directory=True)
    _published(run, hub, "via-link")
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(tmp_path / "hub-link"))
    remove(install("local:acme/via-link").name)

    path = _published(run, hub, "linked")
    outside = tmp_path / "outside.json"
    shutil.copy(path / "adapter_config.json", outside)  # same bytes: only the link gives it away
    (path / "adapter_config.json").unlink()
    (path / "adapter_config.json").symlink_to(outside)
    with pytest.raises(SwiftlikeError, match=r"adapter_config.json: symlink pointing outside the repository"):
        install("local:acme/linked")
    assert _store_is_empty()


def test_wrong_base_is_refused_before_install(run, hub, swiftlike_home, tmp_path, tokenizer_dir):
    from tiny import make_tiny_model

    from swiftlike.adapters.publish import push
    from swiftlike.adapters.store import install
    from swiftlike.infer import load_checkpoint

    push(run["v2"], "local:acme/nova")
    other = make_tiny_model(tmp_path / "other" / "tiny-llama", tokenizer_dir, seed=7)
    with pytest.raises(SwiftlikeError, match=r"adapter was trained on other tiny-llama weights .*; nothing installed"):
        install("local:acme/nova", base=str(other))
    with pytest.raises(SwiftlikeError, match=r"trained on 'tiny-llama', the base model is 'smollm2-135m-instruct'"):
        install("local:acme/nova", base="smollm2-135m-instruct")
    with pytest.raises(SwiftlikeError, match=r"other tiny-llama weights"):
        load_checkpoint("local:acme/nova", model=str(other))  # infer --ckpt_dir REF --model OTHER
    assert _store_is_empty()
    # an installed adapter is still refused on the wrong base when loaded by name
    install("local:acme/nova")
    with pytest.raises(SwiftlikeError, match=r"other tiny-llama weights"):
        load_checkpoint("nova", model=str(other))


def test_export_pushes_adapter_and_merged_model(run, hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.store import get, install
    from swiftlike.export import export
    from swiftlike.merge import merge_lora

    assert export(run["v2"], "local:acme/exported", message="export").startswith("local:acme/exported@")
    install("local:acme/exported")
    merged = merge_lora("exported", tmp_path / "nova-merged")  # merge-lora takes an installed name
    pushed = export(merged, "local:acme/nova-merged")  # no manifest: one is generated
    manifest = json.loads((hub / "acme" / "nova-merged" / pushed.rsplit("@", 1)[1] / "swiftlike.json").read_text())
    assert (manifest["kind"], manifest["base_model_type"], manifest["tuner"]) == ("model", "tiny-llama", "lora")
    assert "model.safetensors" in manifest["files"] and "base_fingerprint" not in manifest
    assert get(install("local:acme/nova-merged").name).manifest["files"] == manifest["files"]
    assert torch.allclose(_logits("nova-merged"), _logits(run["v2"]), atol=1e-5)


def _cli(*args, env=None, python=sys.executable):
    return subprocess.run([python, "-m", "swiftlike", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


CLI_NO_TORCH = r"""
import sys
from swiftlike.cli import main
try:
    main(sys.argv[1:])
finally:
    print("torch imported" if "torch" in sys.modules else "no torch", file=sys.stderr)
"""


def test_cli(run, tmp_path):
    env = {"SWIFTLIKE_HOME": str(tmp_path / "home"), "SWIFTLIKE_LOCAL_HUB": str(tmp_path / "hub")}
    bare = tmp_path / "bare"
    shutil.copytree(run["v2"], bare)
    (bare / "swiftlike.json").unlink()
    proc = _cli("adapter", "push", str(bare), "local:acme/nova", env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no swiftlike.json" in proc.stderr

    def cli(*args, code=0):
        proc = subprocess.run([sys.executable, "-c", CLI_NO_TORCH, *args], capture_output=True, text=True,
                              env={**os.environ, **env})
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.endswith("no torch\n"), proc.stderr  # the adapter commands never import torch
        return proc

    hub_root = str(tmp_path / "other-hub")
    out = cli("adapter", "push", str(run["v2"]), "local:acme/nova", "--hub_root", hub_root, "-m", "hi").stdout
    assert "pushed" in out and (tmp_path / "other-hub" / "acme" / "nova" / "refs").exists()
    cli("adapter", "install", "local:acme/nova", "--name", "nova", "--hub_root", hub_root)
    rows = json.loads(cli("adapter", "list", "--json").stdout)
    assert [(r["name"], r["ref"], r["tuner"], r["rank"]) for r in rows] == [("nova", "local:acme/nova", "lora", 4)]
    table = cli("adapter", "list").stdout
    assert table.splitlines()[0].split() == ["NAME", "REF", "BASE_MODEL_TYPE", "TUNER", "RANK", "SIZE", "INSTALLED_AT"]
    shown = json.loads(cli("adapter", "show", "nova", "--json").stdout)
    assert shown["path"] == str(tmp_path / "home" / "adapters" / "nova") and shown["tuner_config"]["r"] == 4
    assert "ok: nova" in cli("adapter", "verify", "nova").stdout
    config = Path(shown["path"]) / "adapter_config.json"
    config.write_text(config.read_text().replace('"r": 4', '"r": 5'))
    err = cli("adapter", "verify", "nova", code=1).stderr
    assert err.startswith("Error: adapter nova (") and "adapter_config.json: sha256 mismatch" in err
    cli("adapter", "remove", "nova")
    assert json.loads(cli("adapter", "list", "--json").stdout) == []
    assert "no adapter named 'nova'" in cli("adapter", "show", "nova", code=1).stderr


def test_packaged_wheel_installs_as_a_plugin(run, tmp_path):
    """`adapter package` -> real `pip install` into a fresh venv -> listed and loadable by name there."""
    import site
    import zipfile

    from swiftlike.adapters.wheel import package

    wheel = package(run["v2"], "swiftlike-adapter-nova", output=tmp_path / "dist", version="1.2.0")
    assert wheel.name == "swiftlike_adapter_nova-1.2.0-py3-none-any.whl"
    assert package(run["v2"], "swiftlike-adapter-nova", output=tmp_path / "again", version="1.2.0"
                   ).read_bytes() == wheel.read_bytes()  # reproducible
    names = zipfile.ZipFile(wheel).namelist()
    assert "swiftlike_adapter_nova/adapter/adapter_model.safetensors" in names
    assert "swiftlike_adapter_nova-1.2.0.dist-info/RECORD" in names

    root = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = str(root / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "zz_parent_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "SWIFTLIKE_HOME": str(tmp_path / "home")}
    env.pop("SWIFTLIKE_PLUGINS", None)
    pip = subprocess.run([python, "-m", "pip", "install", "--no-index", "-q", str(wheel)], capture_output=True,
                         text=True, env=env)
    assert pip.returncode == 0, pip.stderr
    rows = json.loads(_cli("adapter", "list", "--json", python=python, env=env).stdout)
    assert [(r["name"], r["ref"], r["version"]) for r in rows] == [("nova", "plugin:swiftlike-adapter-nova", "1.2.0")]
    assert "ok: nova" in _cli("adapter", "verify", "nova", python=python, env=env).stdout
    out = tmp_path / "logits.pt"
    code = ("import torch, sys; from swiftlike.infer import load_checkpoint; m = load_checkpoint('nova').model; "
            f"torch.save(m(input_ids=torch.tensor({IDS.tolist()})).logits.detach(), sys.argv[1])")
    proc = subprocess.run([python, "-c", code, str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert torch.equal(torch.load(out), _logits(run["v2"]))
    assert _cli("adapter", "list", "--json", env=env).stdout.strip() == "[]"  # this env doesn't have the wheel
