"""The layering of the package: data flows one way, so a lower layer never imports a higher one.

Every `import` in every module counts, including the lazy ones inside functions (they are still dependencies).
There is no exceptions list: a new import that runs up the layers fails here.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "swiftlike"

# low -> high; a module may import from its own layer or any lower one
LAYERS = [
    {"swiftlike", "registry", "paths", "checksums", "settings"},
    {"checkpoint", "hub", "templates", "data", "models", "plugins"},
    {"train", "adapters"},
    {"infer", "merge", "combine", "eval", "export", "stages"},
    {"serve"},
    {"webui"},
    {"cli", "__main__"},
]
SIBLINGS_APART = [{"train", "adapters"}]  # same layer, but neither may import the other


def _part(module: str) -> str:
    """swiftlike.train.sft -> train; swiftlike -> swiftlike (the root package, whose eager content is the registry)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(part: str) -> int:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"swiftlike.{part} is in no layer; add it to LAYERS in {__file__}")


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path):
    """(line, absolute module) for every swiftlike import in the file."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "swiftlike":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "swiftlike":
                continue
            if target == "swiftlike":  # `from .. import adapters` names submodules
                for alias in node.names:
                    sub = root / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                    yield node.lineno, f"swiftlike.{alias.name}" if is_module else "swiftlike"
            else:
                yield node.lineno, target


def _violations(root: Path = PACKAGE):
    out = []
    for path in sorted(root.rglob("*.py")):
        here = _part(_module_name(path, root))
        for line, target in _imports(path, root):
            there = _part(target)
            if there == here:
                continue
            if _layer(there) > _layer(here):
                out.append(f"{path.relative_to(root.parent)}:{line}: {here} (layer {_layer(here)}) imports "
                           f"{target} (layer {_layer(there)})")
            elif any({here, there} == pair for pair in SIBLINGS_APART):
                out.append(f"{path.relative_to(root.parent)}:{line}: {here} imports its sibling {target}")
    return out


def test_no_module_imports_a_higher_layer():
    assert _violations() == []


def test_every_top_level_module_has_a_layer():
    for path in PACKAGE.iterdir():
        if path.name.startswith((".", "_")) and path.name not in ("__main__.py",):
            continue
        if path.is_dir() and not (path / "__init__.py").exists():
            continue
        if path.is_file() and path.suffix != ".py":
            continue
        _layer(path.stem if path.is_file() else path.name)


def test_the_check_catches_an_upward_import(tmp_path):
    """The checker itself: a lazy import of serve from inside a hub function is reported."""
    fake = tmp_path / "swiftlike"
    (fake / "hub").mkdir(parents=True)
    (fake / "serve").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "serve" / "__init__.py").write_text("")
    (fake / "hub" / "__init__.py").write_text("def f():\n    from ..serve import app\n")
    (fake / "hub" / "refs.py").write_text("from ..registry import x\nfrom . import local\n")
    found = _violations(fake)
    assert len(found) == 1 and "hub (layer 1) imports swiftlike.serve" in found[0]


@pytest.mark.parametrize("module", ["swiftlike.checkpoint", "swiftlike.hub.local", "swiftlike.adapters.store"])
def test_low_layers_import_without_training(module):
    """The hub, the checkpoint format and the adapter store load without the training code."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(any(m.startswith('swiftlike.train') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
