"""The first-party plugin packs of the catalog's [plugins] index: pinned to reproducible wheels, and installable by
name with real pip into a fresh virtualenv (no network: dependencies are already in the parent environment)."""
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import swiftlike
from swiftlike.checksums import sha256_file
from swiftlike.plugins import packs
from swiftlike.plugins.wheels import build_pack
from swiftlike.registry import SwiftlikeError

ROOT = Path(__file__).resolve().parent.parent
INDEX = tomllib.loads((ROOT / "catalog.toml").read_text())["plugins"]
PACK_TUNERS = {"adalora", "ia3", "vera", "loha", "lokr", "boft", "oft", "prompt_tuning", "prefix_tuning", "p_tuning"}


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_pins_are_current_and_the_wheels_reproducible(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "pin_packs.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entries = {name: e for name, e in INDEX.items() if e.get("pack")}
    assert {"peft-tuners", "llama-pro", "galore", "badam"} <= set(entries)
    for name, entry in entries.items():
        # the same files elsewhere, with other timestamps and stray build output: the same bytes
        copy = tmp_path / name
        shutil.copytree(ROOT / entry["pack"], copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                                   "build"))
        for path in copy.rglob("*"):
            os.utime(path, (1_000_000_000, 1_000_000_000))
        package = next(p for p in copy.iterdir() if p.is_dir())
        (package / "__pycache__").mkdir(exist_ok=True)
        (package / "__pycache__" / "junk.pyc").write_bytes(b"junk")
        assert sha256_file(build_pack(copy, tmp_path / "out")) == entry["sha256"]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtualenv that sees this environment's packages (torch, peft, swiftlike) but installs into its own
    site-packages."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")])
    python = root / "venv" / "bin" / "python"
    target = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (target / "zz_parent_env.pth").write_text("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs)
                                              + "\n")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("SWIFTLIKE_PLUGINS", None)
    return {"python": str(python), "env": env, "site": target}


def _cli(venv, *args):
    return _run([venv["python"], "-m", "swiftlike", *args], env=venv["env"])


def _available(venv) -> dict:
    return {row["name"]: row for row in json.loads(_cli(venv, "plugin", "available", "--json").stdout)}


def _tuners(venv) -> dict:
    return {row["name"]: row for row in json.loads(_cli(venv, "tuners", "list", "--json").stdout)}


def test_install_by_name_then_the_tuners_are_there(venv, plugins, tmp_path):
    row = _available(venv)["peft-tuners"]
    assert row["installed"] is None and row["pinned"] and "adalora" in row["summary"]
    assert not PACK_TUNERS & set(_tuners(venv))

    # a pack whose files differ from what the pin was made from is refused before pip sees it
    tampered = tmp_path / "tampered"
    shutil.copytree(ROOT / INDEX["peft-tuners"]["pack"], tampered)
    with open(tampered / "swiftlike_peft_tuners" / "__init__.py", "a") as f:
        f.write("\nimport os  # changed after pinning\n")

    class Index:
        @swiftlike.hookimpl
        def register_plugin_index(self, register):
            register("tampered", pack=str(tampered), sha256=INDEX["peft-tuners"]["sha256"])

    plugins.add(Index(), "tampered-index")
    with pytest.raises(SwiftlikeError, match=r"sha256 mismatch for swiftlike_peft_tuners-0.1.0-py3-none-any.whl"):
        packs.install("tampered", python=venv["python"])
    assert not list(venv["site"].glob("swiftlike_peft_tuners*"))  # nothing installed

    out = _cli(venv, "plugin", "install", "peft-tuners").stdout
    assert "installed swiftlike-peft-tuners (sha256 verified)" in out
    tuners = _tuners(venv)
    assert PACK_TUNERS <= set(tuners)
    assert {tuners[t]["plugin"] for t in PACK_TUNERS} == {"swiftlike-peft-tuners"}
    row = next(line.split() for line in _cli(venv, "plugin", "available").stdout.splitlines()
               if line.startswith("peft-tuners"))
    assert row[:3] == ["peft-tuners", "0.1.0", "True"]

    _cli(venv, "plugin", "uninstall", "peft-tuners")
    assert not PACK_TUNERS & set(_tuners(venv))
