"""Signed adapters on the local hub: keygen, trusted keys, push --sign, install refusing bad, unsigned and untrusted
signatures (with nothing installed), config.toml's require_signature, and serve's admin load under the same policy.
Adapters here are small real artifacts (PEFT file names, a manifest with every file's sha256); no training."""
import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from swiftlike.registry import SwiftlikeError


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    monkeypatch.setenv("SWIFTLIKE_LOCAL_HUB", str(root))
    return root


def _checkpoint(path, weights=b"\x01" * 4096, license="apache-2.0"):
    """A checkpoint dir as `swiftlike sft` leaves it, as far as publishing reads it."""
    from swiftlike.checkpoint import write_manifest

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                          "target_modules": ["q_proj", "v_proj"]}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    write_manifest(path, {"name": path.name, "kind": "adapter", "base_model_type": "smollm2-135m-instruct",
                          "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct", "tuner": "lora",
                          **({"license": license} if license else {})})
    return path


def _push(tmp_path, hub, name, sign=None):
    """Push a fresh checkpoint to local:acme/NAME; returns the (writable, to tamper with) revision dir."""
    from swiftlike.adapters.publish import push

    rev = push(_checkpoint(tmp_path / f"ckpt-{name}"), f"local:acme/{name}", sign=sign,
               require_manifest=True).rsplit("@", 1)[1]
    path = hub / "acme" / name / rev
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


def _nothing_installed():
    from swiftlike.adapters.store import STAGING, store_root

    root = store_root()
    entries = [p.name for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []
    staged = list((root / STAGING).iterdir()) if (root / STAGING).exists() else []
    versions = list((root / ".versions").iterdir()) if (root / ".versions").exists() else []
    return entries == [] and staged == [] and versions == []


def test_keygen_files_and_modes(swiftlike_home):
    env = {**os.environ, "SWIFTLIKE_HOME": str(swiftlike_home)}
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "adapter", "keygen", "acme"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    keys = swiftlike_home / "keys"
    private, public = keys / "acme.key", keys / "acme.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8 PEM
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    from swiftlike.adapters.signing import key_id, load_public_key

    kid = key_id(load_public_key(public.read_bytes(), public))
    assert f"id {kid}" in proc.stdout and str(public) in proc.stdout and "PRIVATE" not in proc.stdout
    assert sorted(p.name for p in keys.iterdir()) == ["acme.key", "acme.pub"]  # no temp file left

    from swiftlike.adapters.keys import keygen, load_private_key

    before = private.read_bytes()
    with pytest.raises(SwiftlikeError, match="exists.*--force"):
        keygen("acme")
    assert private.read_bytes() == before
    assert keygen("acme", force=True).key_id != kid and private.read_bytes() != before
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    private.chmod(0o644)
    with pytest.raises(SwiftlikeError, match="readable by others"):
        load_private_key("acme")
    with pytest.raises(SwiftlikeError, match="no key .*keygen nobody"):
        load_private_key("nobody")
    with pytest.raises(SwiftlikeError, match="key name '../x'"):
        keygen("../x")


def test_trust_add_list_remove(swiftlike_home, tmp_path):
    from swiftlike.adapters.keys import keygen, trust_add, trust_list, trust_remove
    from swiftlike.adapters.signing import trusted_keys

    acme, other = keygen("acme"), keygen("other")
    added = trust_add(acme.path)
    assert (added.name, added.key_id) == ("acme", acme.key_id)
    assert [(k.name, k.key_id, k.path) for k in trust_list()] == [
        ("acme", acme.key_id, swiftlike_home / "trusted_keys" / "acme.pub")]
    assert trust_add(acme.path) == added  # again: nothing changes
    with pytest.raises(SwiftlikeError, match="already trusted as 'acme'"):
        trust_add(acme.path, name="acme2")
    with pytest.raises(SwiftlikeError, match="different key is already trusted as 'acme'"):
        trust_add(other.path, name="acme")
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key\n")
    with pytest.raises(SwiftlikeError, match="junk.pub: not a PEM or OpenSSH public key"):
        trust_add(junk)
    assert trust_add(other.path, name="bob").name == "bob"
    assert set(trusted_keys()) == {"acme", "bob"}

    env = {**os.environ, "SWIFTLIKE_HOME": str(swiftlike_home)}
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "adapter", "trust", "list"], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.split("\n")[0].split() == ["NAME", "KEY_ID", "PATH"]
    assert f"acme  {acme.key_id}" in proc.stdout and f"bob   {other.key_id}" in proc.stdout

    trust_remove("acme")
    assert [k.name for k in trust_list()] == ["bob"]
    with pytest.raises(SwiftlikeError, match="no trusted key named 'acme' \\(trusted: bob\\)"):
        trust_remove("acme")


def test_signed_push_installs_with_require_signature(hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.keys import keygen, trust_add
    from swiftlike.adapters.store import check_installed, get, install, verify

    key = keygen("acme")
    published = _push(tmp_path, hub, "nova", sign="acme")
    sig = json.loads((published / "swiftlike.sig").read_text())
    manifest = (published / "swiftlike.json").read_bytes()
    assert (sig["publisher"], sig["key_id"]) == ("acme", key.key_id)
    assert sig["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()  # over the exact bytes uploaded
    assert "swiftlike.sig" not in json.loads(manifest)["files"]
    card = (published / "README.md").read_text()
    assert "\nlicense: apache-2.0\n" in card.split("---")[1] and "| base model licence | `apache-2.0` |" in card

    trust_add(key.path)
    installed = install("local:acme/nova", require_signature=True)
    assert installed.install["signature"] == {"status": "trusted", "publisher": "acme", "key_id": key.key_id}
    assert installed.note is None and installed.manifest["license"] == "apache-2.0"
    vdir = installed.path.resolve()
    assert (vdir / "swiftlike.sig").read_bytes() == (published / "swiftlike.sig").read_bytes()
    assert verify("nova").signature().status == "trusted"
    assert get("nova").details()["signature"] == f"signed by acme (key {key.key_id}), trusted"

    # re-publishing an installed adapter: its old signature (over the old manifest) is not carried along
    from swiftlike.adapters.publish import push

    rev = push(get("nova").path, "local:acme/nova-copy").rsplit("@", 1)[1]
    assert not (hub / "acme" / "nova-copy" / rev / "swiftlike.sig").exists()

    # the stored signature is sealed with the rest: replacing it after install is caught
    os.chmod(vdir, 0o755)
    (vdir / "swiftlike.sig").write_text((vdir / "swiftlike.sig").read_text().replace(sig["signature"][:8], "A" * 8))
    with pytest.raises(SwiftlikeError, match="swiftlike.sig: the signature does not verify"):
        check_installed(get("nova"))


def test_export_and_package_sign_too(hub, swiftlike_home, tmp_path):
    import zipfile

    from swiftlike.adapters.keys import keygen
    from swiftlike.adapters.signing import check_signature
    from swiftlike.adapters.wheel import package
    from swiftlike.export import export

    keygen("acme")
    ckpt = _checkpoint(tmp_path / "nova")
    rev = export(ckpt, "local:acme/exported", sign="acme").rsplit("@", 1)[1]
    published = hub / "acme" / "exported" / rev
    verdict = check_signature((published / "swiftlike.json").read_bytes(), (published / "swiftlike.sig").read_bytes(),
                              {})
    assert (verdict.status, verdict.publisher) == ("untrusted", "acme")  # valid; trusted by nobody yet
    with pytest.raises(SwiftlikeError, match="signatures travel with a hub push"):
        export(ckpt, str(tmp_path / "copy"), sign="acme")
    with pytest.raises(SwiftlikeError, match="--sign nobody: no key"):
        export(ckpt, "local:acme/exported", sign="nobody")

    wheel = package(ckpt, "swiftlike-adapter-nova", output=tmp_path / "dist", sign="acme")
    with zipfile.ZipFile(wheel) as zf:
        data = {n.rsplit("/", 1)[-1]: zf.read(n) for n in zf.namelist() if "/adapter/" in n}
    assert check_signature(data["swiftlike.json"], data["swiftlike.sig"], {}).status == "untrusted"


def test_signature_over_a_tampered_manifest_is_refused(hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.keys import keygen, trust_add
    from swiftlike.adapters.store import install

    trust_add(keygen("acme").path)
    published = _push(tmp_path, hub, "tampered", sign="acme")
    manifest = json.loads((published / "swiftlike.json").read_text())
    manifest["base_model_type"] = "qwen2_5-7b-instruct"  # every file still matches its entry: only the signature tells
    (published / "swiftlike.json").write_text(json.dumps(manifest, indent=2))
    for require in (False, True):  # a bad signature is refused whatever the policy
        with pytest.raises(SwiftlikeError, match=r"^install local:acme/tampered: bad signature \(publisher acme, "
                                                 r"key [0-9a-f]{16}\): the manifest changed after it was signed"):
            install("local:acme/tampered", require_signature=require)
        assert _nothing_installed()


def test_valid_signature_by_an_untrusted_key(hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.keys import keygen, trust_add
    from swiftlike.adapters.store import install

    trust_add(keygen("acme").path)
    # another key under the trusted publisher's name: trust follows the key, not the name it claims
    mallory = keygen("acme", force=True)
    _push(tmp_path, hub, "nova", sign="acme")
    with pytest.raises(SwiftlikeError, match=rf"unknown publisher \(publisher acme, key {mallory.key_id}\).*refused"):
        install("local:acme/nova", require_signature=True)
    assert _nothing_installed()
    installed = install("local:acme/nova")  # without the requirement: installed, with a note
    assert installed.note.startswith(f"note: signed by acme (key {mallory.key_id}), not a trusted publisher")
    assert installed.signature().status == "untrusted"


def test_swapped_weights_with_the_signed_manifest_left_intact(hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.keys import keygen, trust_add
    from swiftlike.adapters.store import install

    trust_add(keygen("acme").path)
    published = _push(tmp_path, hub, "swapped", sign="acme")
    (published / "adapter_model.safetensors").write_bytes(b"\x02" * 4096)  # same size, other weights
    with pytest.raises(SwiftlikeError, match=r"adapter_model.safetensors: sha256 mismatch .*; nothing installed$"):
        install("local:acme/swapped", require_signature=True)
    assert _nothing_installed()


def test_config_require_signature(hub, swiftlike_home, tmp_path):
    from swiftlike.adapters.store import install

    _push(tmp_path, hub, "plain")
    config = swiftlike_home / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("require_signature = true\n")
    with pytest.raises(SwiftlikeError, match=r"^install local:acme/plain: unsigned \(swiftlike.sig missing\) and a "
                                             r"signature is required"):
        install("local:acme/plain")
    assert _nothing_installed()
    env = {**os.environ, "SWIFTLIKE_HOME": str(swiftlike_home), "SWIFTLIKE_LOCAL_HUB": str(hub)}
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "adapter", "install", "local:acme/plain"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "unsigned" in proc.stderr
    config.write_text('require_signature = "yes"\n')
    with pytest.raises(SwiftlikeError, match=r"config.toml: require_signature must be bool"):
        install("local:acme/plain")
    config.write_text("require_signature = false\n")
    assert install("local:acme/plain").install["signature"]["status"] == "unsigned"


def test_hf_signature_is_checked_before_any_weights_are_fetched(swiftlike_home, tmp_path):
    """Through the real huggingface_hub client against the fake Hub: swiftlike.sig is uploaded with the push and
    downloaded with the manifest; a tampered manifest is refused before the weights are requested."""
    from hf_server import FakeHub

    from swiftlike.adapters.keys import keygen, trust_add

    key = keygen("acme")
    trust_add(key.path)
    hub = FakeHub().start()
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_fake0123456789",
               "SWIFTLIKE_HOME": str(swiftlike_home), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}

        def cli(*args, hf_home):
            return subprocess.run([sys.executable, "-m", "swiftlike", "adapter", *args], capture_output=True,
                                  text=True, env={**env, "HF_HOME": str(tmp_path / hf_home)})

        proc = cli("push", str(_checkpoint(tmp_path / "nova")), "hf:acme/nova", "--sign", "acme", hf_home="a")
        assert proc.returncode == 0 and "(signed with key acme)" in proc.stdout, proc.stderr
        repo = hub.repos["acme/nova"]
        files = repo["commits"][repo["branches"]["main"]]["files"]
        sig = json.loads(files["swiftlike.sig"])
        assert sig["manifest_sha256"] == hashlib.sha256(files["swiftlike.json"]).hexdigest()
        proc = cli("install", "hf:acme/nova", "--require-signature", hf_home="a")
        assert proc.returncode == 0 and f"signature: signed by acme (key {key.key_id}), trusted" in proc.stdout, \
            proc.stderr
        assert (swiftlike_home / "adapters" / "nova" / "swiftlike.sig").read_bytes() == files["swiftlike.sig"]

        files["swiftlike.json"] = files["swiftlike.json"].replace(b'"version": "0.1.0"', b'"version": "6.6.6"')
        seen = len(hub.requests)
        proc = cli("install", "hf:acme/nova", "--name", "nova2", hf_home="b")
        assert proc.returncode == 1 and "bad signature (publisher acme" in proc.stderr, proc.stderr
        fetched = [r["path"].rsplit("/", 1)[-1] for r in hub.requests[seen:] if "/resolve/" in r["path"]]
        assert "swiftlike.json" in fetched and "adapter_model.safetensors" not in fetched, fetched
        assert not (swiftlike_home / "adapters" / "nova2").exists()
    finally:
        hub.stop()


def test_serve_admin_load_follows_the_policy(swiftlike_home, tiny_model, tmp_path):
    from test_serve import Server
    from test_serve_engine import make_adapter

    from swiftlike.adapters.keys import keygen, trust_add
    from swiftlike.adapters.signing import sign_directory
    from swiftlike.checkpoint import read_manifest, write_manifest

    def adapter(name, seed):
        path = make_adapter(tiny_model, tmp_path / name, seed=seed)
        write_manifest(path, {k: v for k, v in read_manifest(path).items() if k not in ("format", "files")})
        return path

    plain = adapter("plain", 1)
    signed, forged = shutil.copytree(plain, tmp_path / "signed"), shutil.copytree(plain, tmp_path / "forged")
    trust_add(keygen("acme").path)
    sign_directory(signed, "acme")
    sign_directory(forged, "acme")
    sig = json.loads((forged / "swiftlike.sig").read_text())
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 1
    (forged / "swiftlike.sig").write_text(json.dumps({**sig, "signature": base64.b64encode(bytes(raw)).decode()}))

    server = Server(model=str(tiny_model), template="smollm2")
    try:
        def load(name, path):
            return server.call("POST", "/v1/adapters", json={"name": name, "source": str(path)})

        assert load("plain", plain).status_code == 200  # no policy: an unsigned adapter loads
        r = load("forged", forged)  # a bad signature never does
        assert r.status_code == 400 and "bad signature (publisher acme" in r.json()["error"]["message"]
        (swiftlike_home / "config.toml").write_text("require_signature = true\n")
        r = load("plain2", plain)
        assert r.status_code == 400 and "unsigned" in r.json()["error"]["message"]
        assert load("signed", signed).status_code == 200
        names = [a["name"] for a in server.call("GET", "/v1/adapters").json()["data"]]
        assert sorted(names) == ["plain", "signed"]
    finally:
        server.close()


def test_base_model_licence_in_catalog_manifest_and_card(tmp_path):
    from click.testing import CliRunner

    from swiftlike.adapters.artifact import build
    from swiftlike.checkpoint import check_manifest_fields
    from swiftlike.cli import cli

    def show(name):
        result = CliRunner().invoke(cli, ["models", "show", name, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["license"]

    assert [show(n) for n in ("qwen2_5-7b-instruct", "qwen2_5-3b-instruct", "llama3_1-8b-instruct", "gemma2-9b",
                              "phi3-4b-4k-instruct", "chatglm3-6b")] == [
        "apache-2.0", "qwen-research", "llama3.1", "gemma", "mit", None]  # None: not verified, not guessed

    for model_type, licence, front in (
            ("qwen2_5-7b-instruct", "apache-2.0", "license: apache-2.0\n"),
            ("qwen1half-7b-chat", "tongyi-qianwen", 'license: other\nlicense_name: "tongyi-qianwen"\n')):
        src = tmp_path / model_type  # a PEFT dir from elsewhere: its manifest is generated, licence included
        src.mkdir()
        (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        (src / "adapter_model.safetensors").write_bytes(b"\0" * 64)
        (src / "args.json").write_text(json.dumps({"model_type": model_type}))
        manifest = build(src, tmp_path / f"{model_type}-out", name="x")
        assert manifest["license"] == licence
        assert front in (tmp_path / f"{model_type}-out" / "README.md").read_text().split("---")[1]
    with pytest.raises(SwiftlikeError, match="field 'license'"):
        check_manifest_fields({"license": "apache 2.0\nhidden"}, "swiftlike.json")


def test_training_writes_the_base_licence_into_manifest_and_card(tiny_model, plugins, tmp_path):
    import swiftlike
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.sft import sft

    class Licensed:
        @swiftlike.hookimpl
        def register_models(self, register):
            register("tiny-licensed", hf="acme/Tiny-Licensed", template="smollm2", license="llama3.2")

    plugins.add(Licensed(), "licensed")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    run = sft(SftArguments(model=str(tiny_model), model_type="tiny-licensed", dataset=[str(data)],
                           output_dir=str(tmp_path / "out"), max_steps=1, save_steps=1, per_device_train_batch_size=1,
                           max_length=128, report_to=["none"], lora_rank=2, lora_alpha=4))
    ckpt = run["last_checkpoint"]
    assert json.loads((ckpt / "swiftlike.json").read_text())["license"] == "llama3.2"
    assert "\nlicense: llama3.2\n" in (ckpt / "README.md").read_text().split("---")[1]
