"""The adapter store ($SWIFTLIKE_HOME/adapters/NAME/): install from a hub reference, list, show, verify, remove.

An install downloads through the hub, checks every path and the sha256 and size of every file against the
manifest while copying into a temp dir beside the store, then renames it into place: a failed install leaves
nothing behind. Adapters registered by plugins (`register_adapters`, e.g. packaged adapter wheels) are listed and
resolved by name too.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..hub import open_hub
from ..hub.refs import HubRef, looks_like_ref, parse_ref
from ..registry import SwiftlikeError, get_registry
from ..checkpoint import MANIFEST, check_base, check_manifest_files, read_manifest, unsafe_path_reason
from .checks import copy_verified, is_pickle, source_file, unlisted_files, verify_file

INSTALL_INFO = ".swiftlike-install.json"  # inside NAME/: where it came from and when (not part of the manifest)
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


def store_root() -> Path:
    from ..paths import swiftlike_home

    return swiftlike_home() / "adapters"


@dataclass
class InstalledAdapter:
    name: str
    path: Path
    manifest: dict
    install: dict = field(default_factory=dict)  # ref, repo, revision, installed_at (store entries)
    plugin: str | None = None  # the plugin that registered it (registry entries)
    fresh: bool = False  # install() just wrote it (False: that revision was already installed)

    @property
    def ref(self) -> str | None:
        return self.install.get("ref") or (f"plugin:{self.plugin}" if self.plugin else None)

    def row(self) -> dict:
        files = self.manifest.get("files") or {}
        cfg = self.manifest.get("tuner_config") or {}
        return {"name": self.name, "ref": self.ref, "base_model_type": self.manifest.get("base_model_type"),
                "tuner": self.manifest.get("tuner"), "rank": cfg.get("r") if isinstance(cfg, dict) else None,
                "size": sum(e.get("size", 0) for e in files.values() if isinstance(e, dict)),
                "installed_at": self.install.get("installed_at"), "version": self.manifest.get("version")}

    def details(self) -> dict:
        return {**self.manifest, "path": str(self.path), **({"install": self.install} if self.install else {}),
                **({"plugin": self.plugin} if self.plugin else {})}


def _stored(path: Path) -> InstalledAdapter | None:
    if not (path / MANIFEST).is_file():
        return None
    try:
        info = json.loads((path / INSTALL_INFO).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        info = {}
    return InstalledAdapter(path.name, path, read_manifest(path), info)


def _registered() -> list[InstalledAdapter]:
    out = []
    for spec in get_registry().adapters:
        if not spec.path:
            continue
        path = Path(spec.path)
        if not path.is_absolute() and spec.base_dir is not None:
            path = Path(spec.base_dir) / path
        manifest = read_manifest(path) if path.is_dir() else {}
        if spec.base_model_type and not manifest.get("base_model_type"):
            manifest = {**manifest, "base_model_type": spec.base_model_type}
        out.append(InstalledAdapter(spec.name, path, manifest, plugin=spec.plugin))
    return out


def list_adapters() -> list[InstalledAdapter]:
    """Installed adapters, then those registered by plugins (a store name shadows a plugin's)."""
    root = store_root()
    stored = [a for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
              and (a := _stored(p))] if root.is_dir() else []
    names = {a.name for a in stored}
    return stored + [a for a in _registered() if a.name not in names]


def get(name: str) -> InstalledAdapter:
    if _NAME.match(name):
        found = _stored(store_root() / name)
        if found:
            return found
    for adapter in _registered():
        if adapter.name == name:
            return adapter
    raise SwiftlikeError(f"no adapter named {name!r}{_did_you_mean(name)} (see `swiftlike adapter list`)")


def _did_you_mean(name: str) -> str:
    hint = difflib.get_close_matches(name, [a.name for a in list_adapters()], n=3, cutoff=0.5)
    return f"; did you mean {', '.join(hint)}?" if hint else ""


def find_installed(ref: HubRef) -> InstalledAdapter | None:
    """An installed copy of `ref`: same hub and repo, and the same revision when one is pinned."""
    for adapter in list_adapters():
        info = adapter.install
        if info.get("repo") != f"{ref.hub}:{ref.repo_id}":
            continue
        if ref.revision is None and info.get("requested_revision") is None:
            return adapter
        if ref.revision is not None and ref.revision in (info.get("requested_revision"), info.get("revision")):
            return adapter
    return None


def install(ref_text: str, *, name: str | None = None, allow_pickle: bool = False, hub_root: str | None = None,
            base=None, force: bool = False) -> InstalledAdapter:
    """Install `ref_text` (HUB:ORG/NAME[@REV]) as NAME (default: the repo's name); returns the installed adapter."""
    ref = parse_ref(ref_text)
    name = name or ref.name
    if not _NAME.match(name):
        raise SwiftlikeError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (no '/')")
    root = store_root()
    final = root / name
    existing = _stored(final)
    if existing and existing.install.get("repo") != f"{ref.hub}:{ref.repo_id}":
        raise SwiftlikeError(f"an adapter named {name!r} is already installed (from {existing.ref or final}); "
                             f"pass --name ALIAS or run `swiftlike adapter remove {name}` first")
    try:
        hub = open_hub(ref.hub, hub_root)
        src = Path(hub.download(ref.repo_id, revision=ref.revision))
        storage = hub.storage_root(src) if hasattr(hub, "storage_root") else None
        if existing and existing.install.get("revision") == src.name:
            return existing  # revisions are immutable: nothing to do
        root.mkdir(parents=True, exist_ok=True)
        _sweep(root)
        stage = Path(tempfile.mkdtemp(prefix=f".install-{name}-", dir=root))
        try:
            manifest = _copy_checked(src, stage, storage=storage, allow_pickle=allow_pickle, base=base, force=force)
            info = {"name": name, "ref": str(ref), "repo": f"{ref.hub}:{ref.repo_id}",
                    "requested_revision": ref.revision, "revision": src.name,
                    "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "allow_pickle": allow_pickle}
            (stage / INSTALL_INFO).write_text(json.dumps(info, indent=2) + "\n")
            os.chmod(stage, 0o755)
            _swap_into_place(stage, final)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    except (SwiftlikeError, OSError) as err:
        said = str(err) if isinstance(err, SwiftlikeError) else f"{type(err).__name__}: {_first_line(err)}"
        prefix = "" if said.startswith(f"{ref.hub}:{ref.repo_id}") else f"{ref}: "  # hub errors name the ref
        raise SwiftlikeError(f"install {prefix}{said}; nothing installed") from None
    return InstalledAdapter(name, final, manifest, info, fresh=True)


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _copy_checked(src: Path, stage: Path, *, storage, allow_pickle, base, force) -> dict:
    try:
        manifest_file = source_file(src, MANIFEST, storage_root=storage)
    except SwiftlikeError:
        raise SwiftlikeError(f"no {MANIFEST} in the repository: not a swiftlike adapter (push it with "
                             f"`swiftlike adapter push`)") from None
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SwiftlikeError(f"{MANIFEST}: invalid JSON ({err})") from None
    files = check_manifest_files(manifest, MANIFEST)
    stray = unlisted_files(src, files)
    if stray:
        reason = unsafe_path_reason(stray[0])
        raise SwiftlikeError(f"{stray[0]}: {reason or 'not listed in ' + MANIFEST}")
    if not allow_pickle:
        for rel in files:
            if is_pickle(rel):
                raise SwiftlikeError(f"{rel}: pickle file ({Path(rel).suffix}); loading it can run arbitrary code "
                                     f"(pass --allow-pickle if you trust the publisher)")
    _check_base(manifest, base, force)
    for rel, entry in files.items():
        copy_verified(source_file(src, rel, storage_root=storage), stage / rel, rel, entry)
    shutil.copyfile(manifest_file, stage / MANIFEST)
    return manifest


def _check_base(manifest: dict, base, force: bool) -> None:
    """Refuse before installing when the caller names the base it will load onto (a model dir or model type)."""
    if force or not base:
        return
    path = Path(str(base)).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        from ..models.resolve import infer_spec

        check_base(manifest, base_dir=path, base_model_type=infer_spec(path).name)
    elif str(base) in get_registry().models:
        check_base(manifest, base_model_type=get_registry().models.get(str(base)).name)


def _sweep(root: Path, max_age_s: float = 86400) -> None:
    """Remove temp dirs a killed install or remove left behind (old enough that no live process owns them)."""
    for path in root.glob(".install-*"):
        _remove_if_older(path, max_age_s)
    for path in root.glob(".trash-*"):
        _remove_if_older(path, max_age_s)


def _remove_if_older(path: Path, max_age_s: float) -> None:
    try:
        if time.time() - path.stat().st_mtime > max_age_s:
            shutil.rmtree(path, ignore_errors=True)
    except FileNotFoundError:
        pass


def _swap_into_place(stage: Path, final: Path) -> None:
    """Rename stage to final; an existing final (an older revision) is moved aside first and restored on failure."""
    trash = None
    if final.exists():
        trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, trash)
    try:
        os.rename(stage, final)
    except OSError:
        if trash is not None:
            os.rename(trash, final)
        raise SwiftlikeError(f"{final}: appeared while installing (another install?); try again") from None
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def remove(name: str) -> Path:
    adapter = get(name)
    if adapter.plugin:
        raise SwiftlikeError(f"adapter {name!r} comes from the installed plugin {adapter.plugin}; "
                             f"remove it with `pip uninstall {adapter.plugin}`")
    trash = adapter.path.with_name(f".trash-{adapter.path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(adapter.path, trash)  # gone from the store at once, even if deleting takes a while
    shutil.rmtree(trash)
    return adapter.path


def verify(name: str) -> InstalledAdapter:
    """Re-hash every file of an installed (or plugin) adapter against its manifest."""
    adapter = get(name)
    try:
        if not adapter.manifest:
            raise SwiftlikeError(f"no {MANIFEST}: nothing to verify against")
        files = check_manifest_files(adapter.manifest, MANIFEST)
        for rel, entry in files.items():
            verify_file(source_file(adapter.path, rel), rel, entry)
        stray = unlisted_files(adapter.path, files, ignore=(INSTALL_INFO,))
        if stray:
            raise SwiftlikeError(f"{stray[0]}: not listed in {MANIFEST} (added after install)")
    except SwiftlikeError as err:
        raise SwiftlikeError(f"adapter {name} ({adapter.path}): {err}") from None
    return adapter


def resolve(value, *, hub_root: str | None = None, base=None, force: bool = False) -> Path:
    """A directory -> itself; an installed or plugin adapter name -> its path; a hub reference -> the installed copy
    of it, installing it first when there is none."""
    text = str(value)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if looks_like_ref(text):
        ref = parse_ref(text)
        found = find_installed(ref)
        if found:
            return found.path
        flat = ref.repo_id.replace("/", "--")
        candidates = [ref.name, flat, f"{flat}--{ref.revision or 'main'}".replace("/", "-")]
        name = next((c for c in candidates if _stored(store_root() / c) is None), candidates[-1])
        print(f"swiftlike: installing {ref} into {store_root() / name}", file=sys.stderr)
        return install(text, name=name, hub_root=hub_root, base=base, force=force).path
    if _NAME.match(text):
        try:
            return get(text).path
        except SwiftlikeError:
            pass
    raise SwiftlikeError(f"{text}: no such directory, installed adapter (`swiftlike adapter list`) or hub reference "
                         f"(hf:ORG/NAME[@REV], ms:…, local:…){_did_you_mean(text)}")
