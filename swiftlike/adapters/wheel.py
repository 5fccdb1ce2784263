"""`swiftlike adapter package`: an adapter as a pip-installable plugin wheel (adapters as swappable plugins).

The wheel holds the artifact (PEFT files, swiftlike.json, README.md) as package data and a module whose
`register_adapters` hook registers it under its installed path; its entry point (group `swiftlike`) makes
`pip install` enough for `swiftlike adapter list` and `--ckpt_dir NAME` to find it. Written by hand (zip + RECORD)
so packaging needs no build backend, and byte-reproducible (fixed timestamps).
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from .. import __version__
from ..plugins.wheels import metadata, write_wheel
from ..registry import SwiftlikeError
from . import artifact

PREFIX = "swiftlike-adapter-"
_DIST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?", re.ASCII)

PLUGIN_MODULE = '''"""swiftlike adapter {name!r} {version}, packaged by `swiftlike adapter package`."""
from pathlib import Path

import swiftlike

ADAPTER_DIR = Path(__file__).resolve().with_name("adapter")


@swiftlike.hookimpl
def register_adapters(register):
    register({name!r}, path=str(ADAPTER_DIR), base_model_type={base!r}, summary={summary!r})
'''


def adapter_name_for(dist: str) -> str:
    """swiftlike-adapter-foo registers the adapter `foo`; any other distribution name registers itself."""
    low = dist.lower().replace("_", "-")
    return dist[len(PREFIX):] if low.startswith(PREFIX) and len(dist) > len(PREFIX) else dist


def package(src, dist: str, *, output=".", version: str | None = None, allow_pickle: bool = False,
            sign: str | None = None) -> Path:
    """Build DIST-VERSION-py3-none-any.whl from the adapter dir `src` into `output`; returns the wheel's path.
    `sign` (a key name) puts swiftlike.sig over the packaged manifest beside it."""
    from packaging.version import InvalidVersion, Version

    if not isinstance(dist, str) or not _DIST.fullmatch(dist):
        raise SwiftlikeError(f"--name {dist!r}: not a valid distribution name (letters, digits, '.', '_', '-')")
    name = adapter_name_for(dist)
    module = re.sub(r"[-_.]+", "_", dist).lower()
    stage = Path(tempfile.mkdtemp(prefix="swiftlike-package-"))
    try:
        manifest = artifact.build(src, stage, name=name, version=version, allow_pickle=allow_pickle,
                                  require_manifest=True, pip_name=dist)
        if sign is not None:
            from .signing import sign_directory

            sign_directory(stage, sign)
        try:
            version = str(Version(str(manifest["version"])))
        except InvalidVersion:
            raise SwiftlikeError(f"--version {manifest['version']!r}: not a PEP 440 version (e.g. 1.0.0)") from None
        cfg = manifest.get("tuner_config") or {}
        summary = (f"swiftlike adapter {name}: {manifest.get('tuner') or 'adapter'}"
                   + (f" r={cfg['r']}" if isinstance(cfg, dict) and cfg.get("r") else "")
                   + (f" for {manifest['base_model_type']}" if manifest.get("base_model_type") else ""))
        members = {f"{module}/__init__.py": PLUGIN_MODULE.format(
            name=name, version=version, base=manifest.get("base_model_type"), summary=summary).encode()}
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                members[f"{module}/adapter/{path.relative_to(stage).as_posix()}"] = path
        info = f"{module}-{version}.dist-info"
        readme = (stage / "README.md").read_text(encoding="utf-8")
        members[f"{info}/METADATA"] = metadata(
            [("Metadata-Version", "2.1"), ("Name", dist), ("Version", version), ("Summary", summary),
             ("Requires-Dist", "swiftlike"), ("Description-Content-Type", "text/markdown")], readme)
        members[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: swiftlike {__version__}\n"
                                    f"Root-Is-Purelib: true\nTag: py3-none-any\n").encode()
        members[f"{info}/entry_points.txt"] = f"[swiftlike]\n{name} = {module}\n".encode()
        members[f"{info}/top_level.txt"] = f"{module}\n".encode()
        out_dir = Path(output)
        out_dir.mkdir(parents=True, exist_ok=True)
        wheel = out_dir / f"{module}-{version}-py3-none-any.whl"
        write_wheel(wheel, members, f"{info}/RECORD")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return wheel
