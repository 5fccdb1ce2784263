"""A sha256-pinned `plugin install` pins the dependencies too: real wheels, real pip, a fresh virtualenv, a local
find-links directory as the package index (no network)."""
import hashlib
import site
import subprocess
import sys
from pathlib import Path

import pytest

import swiftlike
from swiftlike.plugins import packs
from swiftlike.registry import SwiftlikeError

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
dependencies = {deps}

[tool.setuptools]
py-modules = ["{module}"]
"""


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _wheel(src: Path, out: Path, name: str, version: str, deps: list, body: str) -> Path:
    module = name.replace("-", "_")
    src.mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT.format(name=name, version=version, deps=deps, module=module))
    (src / f"{module}.py").write_text(body)
    _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-index", "--no-deps", "-q", "-w",
          str(out), str(src)])
    return next(out.glob(f"{module}-{version}-*.whl"))


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """wheels/: slpin-top 1.0 (requires slpin-dep), slpin-dep 1.0, and an impostor slpin-dep built elsewhere."""
    root = tmp_path_factory.mktemp("pins")
    wheels = root / "wheels"
    top = _wheel(root / "src-top", wheels, "slpin-top", "1.0", ["slpin-dep"], "VALUE = 'top'\n")
    dep = _wheel(root / "src-dep", wheels, "slpin-dep", "1.0", [], "VALUE = 'genuine dependency'\n")
    return {"wheels": wheels, "top": top, "dep": dep, "root": root}


@pytest.fixture
def venv(tmp_path, index, monkeypatch):
    """A fresh virtualenv that sees this environment's packages; pip finds packages in wheels/ only."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")])
    python = tmp_path / "venv" / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                   .stdout.strip())
    dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "zz_parent_env.pth").write_text("import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs)
                                               + "\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index["wheels"]))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    return str(python)


def _installed(python) -> dict:
    code = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in "
            "m.distributions() if d.metadata['Name'].startswith('slpin')}))")
    import json

    return json.loads(_run([python, "-c", code]).stdout)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _index(plugins, index, requires=None):
    class Index:
        @swiftlike.hookimpl
        def register_plugin_index(self, register):
            extra = {"requires": requires} if requires is not None else {}
            register("pin-pack", pip=str(index["top"]), sha256=_sha(index["top"]), extra=extra)

    plugins.add(Index(), f"index-{id(requires)}")


def test_unpinned_dependencies_are_refused_up_front(venv, index, plugins):
    _index(plugins, index)
    with pytest.raises(SwiftlikeError, match=r"slpin_top-1.0-py3-none-any.whl is pinned by the index, but pip would "
                                             r"also install slpin-dep 1.0 unverified .*pass --allow-unpinned-deps"):
        packs.install("pin-pack", python=venv)
    assert _installed(venv) == {}  # before: the wheel was verified, its dependency installed unchecked


def test_allowed_unpinned_dependencies_are_named(venv, index, plugins):
    _index(plugins, index)
    warnings = []
    res = packs.install("pin-pack", python=venv, warn=warnings.append, allow_unpinned_deps=True)
    assert res.unpinned == ["slpin-dep 1.0"]
    assert warnings == ["warning: installed unpinned dependencies of slpin-top (not hash-verified): slpin-dep 1.0"]
    assert _installed(venv) == {"slpin-top": "1.0", "slpin-dep": "1.0"}


def test_pinned_dependencies_are_hash_checked(venv, index, plugins, tmp_path, monkeypatch):
    _index(plugins, index, requires=[f"slpin-dep==1.0 --hash=sha256:{_sha(index['dep'])}"])
    res = packs.install("pin-pack", python=venv)
    assert res.unpinned == [] and _installed(venv) == {"slpin-top": "1.0", "slpin-dep": "1.0"}
    _run([venv, "-m", "pip", "uninstall", "-y", "slpin-top", "slpin-dep"])

    # the index serves another slpin-dep 1.0 than the one pinned: pip's hash check refuses the whole install
    impostor_dir = tmp_path / "impostor"
    impostor = _wheel(tmp_path / "src-impostor", impostor_dir, "slpin-dep", "1.0", [], "VALUE = 'impostor'\n")
    assert _sha(impostor) != _sha(index["dep"])
    monkeypatch.setenv("PIP_FIND_LINKS", str(impostor_dir))
    with pytest.raises(SwiftlikeError, match=r"pip install failed: THESE PACKAGES DO NOT MATCH THE HASHES"):
        packs.install("pin-pack", python=venv)
    assert _installed(venv) == {}


def test_malformed_dependency_pins_are_refused(venv, index, plugins):
    _index(plugins, index, requires=["slpin-dep>=1.0"])
    with pytest.raises(SwiftlikeError, match=r"extra.requires 'slpin-dep>=1.0': write each as "
                                             r"'NAME==VERSION --hash=sha256:HEX'"):
        packs.install("pin-pack", python=venv)
