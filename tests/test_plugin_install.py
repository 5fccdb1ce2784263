"""A real third-party plugin package, pip-installed into a temporary virtualenv (no network: local wheels only)."""
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

import swiftlike
from swiftlike.plugins import packs
from swiftlike.registry import SwiftlikeError

HERE = Path(__file__).resolve().parent


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh virtualenv that sees this environment's packages (torch etc.) but has its own site-packages."""
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")])
    python = root / "venv" / "bin" / "python"
    target_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                       .stdout.strip())
    dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # `import` lines in a .pth run at start-up; addsitedir also processes the editable-install .pth files there.
    (target_site / "zz_parent_env.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")
    wheels = root / "wheels"
    for pkg in ("swiftlike-hello", "swiftlike-broken"):
        _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-index", "--no-deps", "-q",
              "-w", str(wheels), str(HERE / "plugins" / pkg)])
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("SWIFTLIKE_PLUGINS", None)
    return {"python": str(python), "wheels": wheels, "env": env}


def _models(venv, **env):
    proc = _run([venv["python"], "-m", "swiftlike", "models", "list", "--json"], env={**venv["env"], **env})
    return {r["name"]: r for r in json.loads(proc.stdout)}, proc.stderr


def _hello_wheel(venv):
    return next(venv["wheels"].glob("swiftlike_hello-*.whl"))


def test_index_install_verifies_sha256(venv, plugins):
    wheel = _hello_wheel(venv)

    class Index:
        def __init__(self, sha):
            self.sha = sha

        @swiftlike.hookimpl
        def register_plugin_index(self, register):
            register("hello-pack", pip=str(wheel), sha256=self.sha, summary="hello")

    plugins.add(Index("0" * 64), "bad-index")
    with pytest.raises(SwiftlikeError, match=r"sha256 mismatch for swiftlike_hello-0.2.0-py3-none-any.whl"):
        packs.install("hello-pack", python=venv["python"])
    assert "hello-tiny-chat" not in _models(venv)[0]  # nothing installed

    from swiftlike.registry import get_plugin_manager
    get_plugin_manager().unregister(name="bad-index")
    plugins.add(Index(packs.sha256_file(wheel)), "good-index")
    res = packs.install("hello-pack", python=venv["python"])
    assert (res.dist, res.indexed) == ("swiftlike-hello", True)

    models, _ = _models(venv)
    assert models["hello-tiny-chat"]["hf"] == "hello-org/Hello-Tiny-Chat"
    assert models["hello-tiny-chat"]["plugin"] == "swiftlike-hello"
    # its command is there too
    out = _run([venv["python"], "-m", "swiftlike", "hello"], env=venv["env"]).stdout
    assert out.strip() == "hello from swiftlike-hello"
    plugins_json = json.loads(_run([venv["python"], "-m", "swiftlike", "plugins", "list", "--json"],
                                   env=venv["env"]).stdout)
    hello = next(p for p in plugins_json if p["name"] == "swiftlike-hello")
    assert hello["version"] == "0.2.0" and hello["registers"] == {"models": 1, "templates": 1, "rewards": 1}
    rewards = json.loads(_run([venv["python"], "-m", "swiftlike", "rewards", "list", "--json"], env=venv["env"]).stdout)
    polite = next(r for r in rewards if r["name"] == "hello-polite")
    assert polite["plugin"] == "swiftlike-hello" and polite["func"] == "swiftlike_hello:polite"


def test_cli_install_raw_requirement_and_broken_plugin(venv):
    broken = next(venv["wheels"].glob("swiftlike_broken-*.whl"))
    proc = _run([venv["python"], "-m", "swiftlike", "plugin", "install", str(broken)], env=venv["env"])
    assert "is not in the swiftlike plugin index" in proc.stderr
    models, err = _models(venv)
    assert "smollm2-135m-instruct" in models  # everything else keeps working
    assert err.count("plugin swiftlike-broken failed to load: RuntimeError: this plugin is broken on purpose") == 1

    models, err = _models(venv, SWIFTLIKE_PLUGINS="swiftlike-hello")
    assert "broken" not in err and "hello-tiny-chat" in models
    models, err = _models(venv, SWIFTLIKE_PLUGINS="")
    assert "hello-tiny-chat" not in models and "smollm2-135m-instruct" in models and err == ""

    _run([venv["python"], "-m", "swiftlike", "plugin", "uninstall", "swiftlike-broken"], env=venv["env"])
    assert "broken" not in _models(venv)[1]


def test_uninstall_by_index_name(venv, plugins):
    wheel = _hello_wheel(venv)

    class Index:
        @swiftlike.hookimpl
        def register_plugin_index(self, register):
            register("hello-pack", pip=str(wheel), sha256=packs.sha256_file(wheel))

    plugins.add(Index(), "index")
    packs.install("hello-pack", python=venv["python"])
    assert "hello-tiny-chat" in _models(venv)[0]
    packs.uninstall("hello-pack", python=venv["python"])
    assert "hello-tiny-chat" not in _models(venv)[0]
