"""Plugin packs: install/uninstall by catalog name with pip, verifying the wheel's sha256 when the index pins one."""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..checksums import sha256_file
from ..registry import SwiftlikeError, get_registry


@dataclass
class Resolved:
    requirement: str  # what pip gets
    dist: str  # the distribution name, for uninstall
    sha256: str | None
    indexed: bool  # found in the [plugins] index


def _dist_name(requirement: str) -> str:
    req = requirement.strip()
    if req.endswith(".whl"):
        return Path(req.split("/")[-1]).name.split("-")[0].replace("_", "-")
    if "/" in req or req.startswith("."):
        return Path(req.rstrip("/")).name
    return re.split(r"[\s<>=!~;\[@]", req, maxsplit=1)[0]


def resolve(name_or_requirement: str) -> Resolved:
    index = get_registry().plugin_index
    if name_or_requirement in index:
        spec = index.get(name_or_requirement)
        if not spec.pip:
            raise SwiftlikeError(f"plugin index entry {spec.name!r} (plugin {spec.plugin}) has no `pip` requirement")
        return Resolved(spec.pip, _dist_name(spec.pip), spec.sha256, True)
    return Resolved(name_or_requirement, _dist_name(name_or_requirement), None, False)


def _pip(args: list[str], python: str) -> None:
    cmd = [python, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = next((line for line in reversed(tail) if line.startswith("ERROR")), tail[-1] if tail else "")
        raise SwiftlikeError(f"pip {' '.join(args[:1])} failed: {reason.removeprefix('ERROR: ')}")


def install(name_or_requirement: str, upgrade: bool = False, python: str | None = None, warn=print) -> Resolved:
    """Install into the running interpreter's environment (or `python`'s)."""
    python = python or sys.executable
    res = resolve(name_or_requirement)
    if not res.indexed:
        warn(f"warning: {name_or_requirement!r} is not in the swiftlike plugin index; installing it as a raw pip "
             f"requirement, unverified")
    upgrade_flag = ["--upgrade"] if upgrade else []
    if not res.sha256:
        _pip(["install", *upgrade_flag, res.requirement], python)
        return res
    with tempfile.TemporaryDirectory(prefix="swiftlike-plugin-") as tmp:
        req = res.requirement
        if Path(req).is_file():
            wheels = [Path(req)]
        else:
            _pip(["download", "--no-deps", "--only-binary=:all:", "-d", tmp, req], python)
            wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SwiftlikeError(f"expected one wheel for {req!r}, pip gave {len(wheels)}; not installed")
        actual = sha256_file(wheels[0])
        if actual != res.sha256.lower():
            raise SwiftlikeError(f"sha256 mismatch for {wheels[0].name}: index pins {res.sha256}, file has {actual}; "
                                 f"not installed")
        _pip(["install", *upgrade_flag, str(wheels[0])], python)
    return res


def uninstall(name: str, python: str | None = None) -> Resolved:
    res = resolve(name)
    _pip(["uninstall", "-y", res.dist], python or sys.executable)
    return res
