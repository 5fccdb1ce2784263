"""Pure-Python wheels written by hand (zip + RECORD), byte-reproducible: the same input gives the same bytes, so a
wheel's sha256 can be pinned. Packaged adapters (`swiftlike adapter package`) and the first-party plugin packs
(`packs/`, built for `swiftlike plugin install`) are written here; neither needs a build backend.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import tomllib
import zipfile
from pathlib import Path

from ..registry import SwiftlikeError

# no version in the Generator line: a pack's pinned sha256 must not change with swiftlike's version
PACK_GENERATOR = "swiftlike pack builder"


def metadata(headers: list[tuple[str, str]], description: str) -> bytes:
    """Core metadata (METADATA) written by the email library, which refuses a value that would start another
    header (any line break, Unicode ones included); the description is the body after the blank line."""
    from email.message import EmailMessage
    from email.policy import EmailPolicy

    msg = EmailMessage(policy=EmailPolicy(utf8=True, max_line_length=0, linesep="\n"))
    for key, value in headers:
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise SwiftlikeError(f"wheel METADATA {key}: {value!r} has a control character; refused")
        try:
            msg[key] = value
        except ValueError:
            raise SwiftlikeError(f"wheel METADATA {key}: {value!r} has a line break; refused") from None
    return (msg.as_string() + description).encode("utf-8")


def write_wheel(wheel: Path, members: dict, record_name: str, *, compress: bool = True) -> None:
    """`members`: {arcname: bytes or a file path}, written in the given order, then RECORD; staged and renamed.
    compress=False stores the files: deflate's bytes depend on the zlib build, stored bytes do not."""
    record = []
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    tmp = wheel.with_name(f".{wheel.name}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", method) as zf:
            for arcname, content in members.items():
                data = content if isinstance(content, bytes) else Path(content).read_bytes()
                _add(zf, arcname, data, method)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                record.append(f"{arcname},sha256={digest},{len(data)}")
            record.append(f"{record_name},,")
            _add(zf, record_name, ("\n".join(record) + "\n").encode(), method)
        os.replace(tmp, wheel)
    finally:
        tmp.unlink(missing_ok=True)


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes, method=zipfile.ZIP_DEFLATED) -> None:
    info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible: same input, same bytes
    info.external_attr = 0o644 << 16
    info.compress_type = method
    zf.writestr(info, data)


def pack_project(src) -> dict:
    """The [project] table of a pack's pyproject.toml, with the packages it ships ([tool.setuptools] packages)."""
    file = Path(src) / "pyproject.toml"
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SwiftlikeError(f"{file}: not found — not a plugin pack directory") from None
    except tomllib.TOMLDecodeError as err:
        raise SwiftlikeError(f"{file}: invalid TOML: {err}") from None
    project = dict(data.get("project") or {})
    packages = ((data.get("tool") or {}).get("setuptools") or {}).get("packages")
    if not project.get("name") or not project.get("version") or not packages:
        raise SwiftlikeError(f"{file}: a pack needs [project] name and version and [tool.setuptools] packages")
    project["packages"] = list(packages)
    return project


def build_pack(src, output) -> Path:
    """The wheel of the pack at `src` (its pyproject's name, version, dependencies, entry points and packages'
    .py files) written into `output`; the bytes depend on those files alone."""
    src = Path(src)
    project = pack_project(src)
    dist, version = project["name"], str(project["version"])
    norm = re.sub(r"[-_.]+", "_", dist).lower()
    members = {}
    for package in project["packages"]:
        root = src / package.replace(".", "/")
        files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
        if not files:
            raise SwiftlikeError(f"{src}: package {package!r} has no .py files")
        for path in files:
            members[path.relative_to(src).as_posix()] = path.read_bytes()
    info = f"{norm}-{version}.dist-info"
    headers = [("Metadata-Version", "2.1"), ("Name", dist), ("Version", version)]
    headers += [(key, str(project[field])) for key, field in (("Summary", "description"),
                                                             ("Requires-Python", "requires-python"))
                if project.get(field)]
    headers += [("Requires-Dist", str(req)) for req in project.get("dependencies") or []]
    members[f"{info}/METADATA"] = metadata(headers, "")
    members[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: {PACK_GENERATOR}\nRoot-Is-Purelib: true\n"
                                f"Tag: py3-none-any\n").encode()
    groups = project.get("entry-points") or {}
    members[f"{info}/entry_points.txt"] = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(eps.items())) + "\n"
        for group, eps in sorted(groups.items())).encode()
    members[f"{info}/top_level.txt"] = "".join(f"{p.split('.')[0]}\n" for p in sorted(project["packages"])).encode()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"{norm}-{version}-py3-none-any.whl"
    write_wheel(wheel, members, f"{info}/RECORD", compress=False)
    return wheel
