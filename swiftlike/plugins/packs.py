"""Plugin packs: install/uninstall by catalog name with pip, verifying the wheel's sha256 when the index pins one.

A `pack` entry names a first-party pack's source directory (packs/ in the repository, shipped inside swiftlike's
wheel): its wheel is built here, byte-reproducibly (plugins/wheels.py), and must match the entry's sha256 before pip
sees it — no network beyond pip's own package index for dependencies. scripts/pin_packs.py writes the pins.

A pinned entry pins its dependencies too: `extra = {requires = ["NAME==VERSION --hash=sha256:HEX", ...]}`. The whole
install then runs in pip's --require-hashes mode (every wheel pip fetches must match a pinned hash); a dependency pip
would fetch that the entry does not pin is refused up front, unless allowed, and then named in the output.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..checksums import sha256_file
from ..registry import SwiftlikeError, get_registry
from .wheels import build_pack, pack_project


@dataclass
class Resolved:
    requirement: str  # what pip gets
    dist: str  # the distribution name, for uninstall
    sha256: str | None
    indexed: bool  # found in the [plugins] index
    requires: list = field(default_factory=list)  # the index's hash-pinned dependency lines (extra.requires)
    unpinned: list = field(default_factory=list)  # "NAME VERSION" pip installed without a pinned hash
    pack: Path | None = None  # a pack's source dir, built into the wheel that is checked and installed


_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==[A-Za-z0-9][A-Za-z0-9.+!_-]*(\s+--hash=sha256:[0-9a-f]{64})+",
                  re.ASCII)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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
        pack = pack_dir(spec)
        if not spec.pip and pack is None:
            raise SwiftlikeError(f"plugin index entry {spec.name!r} (plugin {spec.plugin}) has neither `pip` nor "
                                 f"`pack`")
        if pack is not None and not spec.sha256:
            raise SwiftlikeError(f"plugin index entry {spec.name!r} (plugin {spec.plugin}): a `pack` entry must pin "
                                 f"its wheel's sha256 (python scripts/pin_packs.py writes it)")
        requires = (spec.extra or {}).get("requires") or []
        bad = [r for r in requires if not isinstance(r, str) or not _PIN.fullmatch(r.strip())] \
            if isinstance(requires, list) else [requires]
        if bad:
            raise SwiftlikeError(f"plugin index entry {spec.name!r} (plugin {spec.plugin}): extra.requires "
                                 f"{str(bad[0])[:80]!r}: write each as 'NAME==VERSION --hash=sha256:HEX'")
        requires = [r.strip() for r in requires]
        if pack is not None:
            return Resolved(str(pack), pack_project(pack)["name"], spec.sha256, True, requires, pack=pack)
        return Resolved(spec.pip, _dist_name(spec.pip), spec.sha256, True, requires)
    return Resolved(name_or_requirement, _dist_name(name_or_requirement), None, False)


def pack_dir(spec) -> Path | None:
    """The source dir of a `pack` entry (relative to the catalog that lists it), checked to exist."""
    if not spec.pack:
        return None
    path = Path(spec.pack)
    if not path.is_absolute() and spec.base_dir is not None:
        path = Path(spec.base_dir) / path
    if not (path / "pyproject.toml").is_file():
        raise SwiftlikeError(f"plugin index entry {spec.name!r} (plugin {spec.plugin}): pack {path} not found "
                             f"(no pyproject.toml); reinstall swiftlike")
    return path


def installed_version(spec) -> str | None:
    """The installed version of an index entry's distribution in this environment, or None."""
    from importlib import metadata

    try:
        dist = pack_project(pack_dir(spec))["name"] if spec.pack else _dist_name(spec.pip or spec.name)
        return metadata.version(dist)
    except (metadata.PackageNotFoundError, SwiftlikeError):
        return None


def _pip(args: list[str], python: str) -> None:
    cmd = [python, "-m", "pip", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = next((line for line in reversed(tail) if line.startswith("ERROR")), tail[-1] if tail else "")
        raise SwiftlikeError(f"pip {' '.join(args[:1])} failed: {reason.removeprefix('ERROR: ')}")


def install(name_or_requirement: str, upgrade: bool = False, python: str | None = None, warn=print,
            allow_unpinned_deps: bool = False) -> Resolved:
    """Install into the running interpreter's environment (or `python`'s). With a pinned index entry every wheel
    is hash-checked; dependencies the entry does not pin are refused unless `allow_unpinned_deps` (then listed in
    `Resolved.unpinned`)."""
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
        if res.pack is not None:
            wheels = [build_pack(res.pack, tmp)]
        elif Path(req).is_file():
            wheels = [Path(req)]
        else:
            _pip(["download", "--no-deps", "--only-binary=:all:", "-d", tmp, req], python)
            wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise SwiftlikeError(f"expected one wheel for {req!r}, pip gave {len(wheels)}; not installed")
        wheel = wheels[0].resolve()
        actual = sha256_file(wheel)
        if actual != res.sha256.lower():
            raise SwiftlikeError(f"sha256 mismatch for {wheel.name}: index pins {res.sha256}, file has {actual}; "
                                 f"not installed")
        # what pip would install, hashes aside: anything beyond the wheel and the pinned dependencies is unpinned
        pinned = {_canonical(_PIN.fullmatch(r)[1]) for r in res.requires}
        plan = Path(tmp) / "plan.json"
        _pip(["install", "--dry-run", "--quiet", "--report", str(plan), *upgrade_flag, str(wheel),
              *(r.split()[0] for r in res.requires)], python)
        top = _canonical(wheel.name.split("-")[0])
        res.unpinned = [f"{item['metadata']['name']} {item['metadata']['version']}"
                        for item in json.loads(plan.read_text()).get("install", [])
                        if _canonical(item["metadata"]["name"]) not in pinned | {top}]
        if res.unpinned and not allow_unpinned_deps:
            raise SwiftlikeError(
                f"{wheel.name} is pinned by the index, but pip would also install {', '.join(res.unpinned)} "
                f"unverified (not pinned by the index entry); not installed — pin them in the entry's "
                f"extra.requires ('NAME==VERSION --hash=sha256:HEX') or pass --allow-unpinned-deps")
        hashed = Path(tmp) / "requirements.txt"
        hashed.write_text("\n".join([f"{wheel} --hash=sha256:{actual}", *res.requires]) + "\n")
        if not res.unpinned:
            _pip(["install", "--require-hashes", *upgrade_flag, "-r", str(hashed)], python)
        else:  # the pinned part verified, then pip adds what is left, unverified, as the caller allowed
            _pip(["install", "--require-hashes", "--no-deps", *upgrade_flag, "-r", str(hashed)], python)
            _pip(["install", str(wheel)], python)
            warn(f"warning: installed unpinned dependencies of {res.dist} (not hash-verified): "
                 f"{', '.join(res.unpinned)}")
    return res


def uninstall(name: str, python: str | None = None) -> Resolved:
    res = resolve(name)
    _pip(["uninstall", "-y", res.dist], python or sys.executable)
    return res
