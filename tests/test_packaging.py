"""swiftlike builds as a wheel that carries its catalog, templates and data files, and works from it."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_catalog_templates_and_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                           "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("swiftlike-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "swiftlike/catalog.toml" in names
    assert {"swiftlike/templates/qwen.jinja", "swiftlike/templates/smollm2.jinja"} <= names
    assert "swiftlike/data/self_cognition.jsonl" in names
    # the first-party packs the [plugins] index builds (`pack` paths are relative to the catalog)
    assert {"swiftlike/packs/swiftlike-peft-tuners/pyproject.toml",
            "swiftlike/packs/swiftlike-peft-tuners/swiftlike_peft_tuners/methods.py",
            "swiftlike/packs/swiftlike-llama-pro/swiftlike_llama_pro/expand.py"} <= names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "swiftlike = swiftlike.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # The packaged catalog is the one the installed package reads (not the source checkout's).
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from swiftlike.registry import get_registry; from swiftlike.plugins.catalog import builtin_catalog_path;"
            "r = get_registry(); print(builtin_catalog_path()); print(len(r.models), len(r.templates));"
            "print(r.templates.get('qwen').load_source()[:20])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(site), "SWIFTLIKE_PLUGINS": "", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    path, counts, _ = proc.stdout.splitlines()
    assert path == str(site / "swiftlike" / "catalog.toml")
    n_models, n_templates = map(int, counts.split())
    assert n_models >= 80 and n_templates >= 18
