"""The adapter store ($SWIFTLIKE_HOME/adapters/): install from a hub reference, list, show, verify, remove.

Layout: `NAME` is a symlink to `.versions/NAME-<token>/`, a complete, verified copy that is never written again.
An install reads the manifest first, checks every path, field and declared size, then copies the listed files
(each stopped at its declared size, sha256 checked) into `.staging/NAME-<token>/` (flock-ed by its installer through
`NAME-<token>.lock`), records a seal (the manifest's sha256 and each file's size, mtime, ctime and inode) and, under
the store lock `.lock`, renames it into `.versions/` and swaps the `NAME` symlink with one rename. A `kill -9` at any
point leaves the old version or the new one, never neither; the next store operation (list, get, install, remove,
resolve) removes staging dirs whose installer is dead and versions nothing points to. `resolve` checks the seal
before handing out a store path (a full re-hash when the seal does not match). Adapters registered by plugins
(`register_adapters`, e.g. packaged adapter wheels) are listed and resolved by name too.
"""
from __future__ import annotations

import contextlib
import difflib
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import MANIFEST, MAX_MANIFEST_BYTES, check_base, check_manifest, parse_manifest, read_manifest, \
    read_manifest_bytes, unsafe_path_reason
from ..hub import open_hub
from ..hub.refs import HubRef, looks_like_ref, parse_ref
from ..registry import SwiftlikeError, get_registry
from .checks import copy_verified, is_housekeeping, is_pickle, source_file, unlisted_files, verify_file
from .signing import MAX_SIGNATURE_BYTES, SIGNATURE, Verdict, check_directory, check_signature, enforce, \
    read_signature, trusted_keys

try:
    import fcntl
except ImportError:  # no flock (Windows): staging dirs are then cleaned by age only
    fcntl = None

INSTALL_INFO = ".swiftlike-install.json"  # inside the version dir: where it came from, when, and its seal
STAGING, VERSIONS, TRASH, LOCK = ".staging", ".versions", ".trash", ".lock"
LOCK_WAIT_S = 60.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", re.ASCII)
_TOKEN = re.compile(r"[0-9a-f]{32}")


def store_root() -> Path:
    from ..paths import swiftlike_home

    return swiftlike_home() / "adapters"


def check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SwiftlikeError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (no '/', at most 100, "
                             f"starting with a letter or digit)")
    return name


@dataclass
class InstalledAdapter:
    name: str
    path: Path  # store entries: $SWIFTLIKE_HOME/adapters/NAME (the symlink); resolve() hands out its target
    manifest: dict
    install: dict = field(default_factory=dict)  # ref, repo, revision, installed_at (store entries)
    plugin: str | None = None  # the plugin that registered it (registry entries)
    fresh: bool = False  # install() just wrote it (False: that revision was already installed)
    note: str | None = None  # install(): a one-line caveat to show (a valid signature by an untrusted publisher)

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
        info = {k: v for k, v in self.install.items() if k != "seal"}
        return {**self.manifest, "path": str(self.path), "signature": self.signature().describe(),
                **({"install": info} if info else {}), **({"plugin": self.plugin} if self.plugin else {})}

    def signature(self) -> Verdict:
        """The signature status now: swiftlike.sig over the manifest, against today's trusted keys."""
        try:
            return check_directory(self.path)
        except (SwiftlikeError, OSError) as err:
            return Verdict("invalid", reason=str(err))


def _stored(path: Path) -> InstalledAdapter | None:
    if not (path / MANIFEST).is_file():
        return None
    try:
        info = json.loads((path / INSTALL_INFO).read_text())
    except (OSError, ValueError):
        info = {}
    return InstalledAdapter(path.name, path, read_manifest(path), info if isinstance(info, dict) else {})


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
    recover(root)
    stored = [a for p in sorted(root.iterdir()) if _NAME.fullmatch(p.name) and p.is_dir()
              and (a := _stored(p))] if root.is_dir() else []
    names = {a.name for a in stored}
    return stored + [a for a in _registered() if a.name not in names]


def get(name: str) -> InstalledAdapter:
    if isinstance(name, str) and _NAME.fullmatch(name):
        recover(store_root())
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


# ---------------------------------------------------------------- install
def install(ref_text: str, *, name: str | None = None, allow_pickle: bool = False, hub_root: str | None = None,
            base=None, force: bool = False, require_signature: bool | None = None) -> InstalledAdapter:
    """Install `ref_text` (HUB:ORG/NAME[@REV]) as NAME (default: the repo's name); returns the installed adapter.
    swiftlike.sig comes with the manifest and is checked before anything else is fetched: a bad signature is
    refused, and with `require_signature` (None: config.toml's setting) an unsigned or untrusted one too."""
    from ..settings import require_signature as configured

    require = configured() if require_signature is None else require_signature
    ref = parse_ref(ref_text)
    name = check_name(ref.name if name is None else name)
    root = store_root()
    recover(root)
    final = root / name
    existing = _stored(final)
    if existing and existing.install.get("repo") != f"{ref.hub}:{ref.repo_id}":
        raise SwiftlikeError(f"an adapter named {name!r} is already installed (from {existing.ref or final}); "
                             f"pass --name ALIAS or run `swiftlike adapter remove {name}` first")
    try:
        hub = open_hub(ref.hub, hub_root)
        listing = hub.listing(ref.repo_id, revision=ref.revision) if hasattr(hub, "listing") else None
        revision = listing[0] if listing else ref.revision
        if listing and (listing[1].get(MANIFEST) or 0) > MAX_MANIFEST_BYTES:
            raise SwiftlikeError(f"{MANIFEST}: {listing[1][MANIFEST]} bytes, more than a manifest can be; refused")
        if listing and (listing[1].get(SIGNATURE) or 0) > MAX_SIGNATURE_BYTES:
            raise SwiftlikeError(f"{SIGNATURE}: {listing[1][SIGNATURE]} bytes, more than a signature can be; refused")
        # the manifest and its signature alone first: nothing else is fetched before they are read, the signature
        # checked and every size the manifest declares checked
        src = Path(hub.download(ref.repo_id, revision=revision, allow_patterns=[MANIFEST, SIGNATURE]))
        storage = hub.storage_root(src) if hasattr(hub, "storage_root") else None
        data, manifest, files = _read_manifest(src, storage)
        sig = _read_signature(src, storage)
        verdict = check_signature(data, sig, trusted_keys())
        note = enforce(verdict, require=require)
        if existing and existing.install.get("revision") == src.name and _intact(existing):
            return existing  # revisions are immutable and the store copy still matches its seal: nothing to do
        if listing:
            _check_listing(listing[1], files)
        if not allow_pickle:
            for rel in files:
                if is_pickle(rel):
                    raise SwiftlikeError(f"{rel}: pickle file ({Path(rel).suffix}); loading it can run arbitrary "
                                         f"code (pass --allow-pickle if you trust the publisher)")
        _check_base(manifest, base, force)
        if any(not os.path.lexists(src / rel) for rel in files):  # a hub that fetched only what was asked for
            src = Path(hub.download(ref.repo_id, revision=revision,
                                    allow_patterns=[MANIFEST, *(glob.escape(rel) for rel in files)]))
        stray = unlisted_files(src, files, ignore=(SIGNATURE,))
        if stray:
            reason = unsafe_path_reason(stray[0])
            raise SwiftlikeError(f"{stray[0]}: {reason or 'not listed in ' + MANIFEST}")
        root.mkdir(parents=True, exist_ok=True)
        with _staging(root, name) as (stage, token):
            digests = {rel: copy_verified(source_file(src, rel, storage_root=storage), stage / rel, rel, entry)
                       for rel, entry in files.items()}
            (stage / MANIFEST).write_bytes(data)  # the very bytes that were validated
            digests[MANIFEST] = hashlib.sha256(data).hexdigest()
            if sig is not None:  # kept (and sealed) so show/verify can re-check it
                (stage / SIGNATURE).write_bytes(sig)
                digests[SIGNATURE] = hashlib.sha256(sig).hexdigest()
            if hasattr(hub, "check_content"):
                hub.check_content(ref.repo_id, src.name, digests)
            info = {"name": name, "ref": str(ref), "repo": f"{ref.hub}:{ref.repo_id}",
                    "requested_revision": ref.revision, "revision": src.name,
                    "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "allow_pickle": allow_pickle,
                    "signature": {"status": verdict.status, "publisher": verdict.publisher, "key_id": verdict.key_id},
                    "require_signature": require}
            os.chmod(stage, 0o755)
            info["seal"] = _seal(stage, digests[MANIFEST])
            (stage / INSTALL_INFO).write_text(json.dumps(info, indent=2) + "\n")
            meanwhile = _commit(root, stage, name, token, same_as=(info["repo"], info["revision"]))
            if meanwhile is not None:  # another process (a replica starting too) installed it first: use theirs
                meanwhile.note = note
                return meanwhile
    except (SwiftlikeError, OSError) as err:
        said = str(err) if isinstance(err, SwiftlikeError) else f"{type(err).__name__}: {_first_line(err)}"
        prefix = "" if said.startswith(f"{ref.hub}:{ref.repo_id}") else f"{ref}: "  # hub errors name the ref
        raise SwiftlikeError(f"install {prefix}{said}; nothing installed") from None
    return InstalledAdapter(name, final, manifest, info, fresh=True, note=note)


def add(src, name: str, *, origin: dict, replace: bool = False) -> InstalledAdapter:
    """Put the adapter dir `src` (its manifest listing every file) into the store as NAME the way `install` does:
    each listed file copied into staging and sha256-checked, sealed, committed with one atomic rename. `origin` is
    recorded in the install info in place of a hub reference (e.g. what made it). An existing NAME is refused unless
    `replace`."""
    name = check_name(name)
    root = store_root()
    recover(root)
    if not replace:
        check_free(name)
    src = Path(src)
    data = read_manifest_bytes(src / MANIFEST)
    manifest = parse_manifest(data, src / MANIFEST)
    files = check_manifest(manifest, src / MANIFEST)
    stray = unlisted_files(src, files)
    if stray:
        raise SwiftlikeError(f"{src / stray[0]}: not listed in {MANIFEST}")
    root.mkdir(parents=True, exist_ok=True)
    with _staging(root, name) as (stage, token):
        for rel, entry in files.items():
            copy_verified(source_file(src, rel), stage / rel, rel, entry)
        (stage / MANIFEST).write_bytes(data)
        info = {"name": name, **origin, "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.chmod(stage, 0o755)
        info["seal"] = _seal(stage, hashlib.sha256(data).hexdigest())
        (stage / INSTALL_INFO).write_text(json.dumps(info, indent=2) + "\n")
        _commit(root, stage, name, token)
    return InstalledAdapter(name, root / name, manifest, info, fresh=True)


def check_free(name: str) -> None:
    """Refuse NAME when the store already holds an adapter by that name."""
    found = _stored(store_root() / check_name(name))
    if found is not None:
        made = found.ref or found.install.get("made_by") or found.path
        raise SwiftlikeError(f"an adapter named {name!r} is already installed (from {made}); choose another "
                             f"--name, pass --overwrite, or run `swiftlike adapter remove {name}` first")


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _read_manifest(src: Path, storage) -> tuple[bytes, dict, dict]:
    """(bytes, manifest, files) of the repository's manifest, every field and file entry validated."""
    try:
        manifest_file = source_file(src, MANIFEST, storage_root=storage)
    except SwiftlikeError:
        raise SwiftlikeError(f"no {MANIFEST} in the repository: not a swiftlike adapter (push it with "
                             f"`swiftlike adapter push`)") from None
    data = read_manifest_bytes(manifest_file)
    manifest = parse_manifest(data, MANIFEST)
    return data, manifest, check_manifest(manifest, MANIFEST)


def _read_signature(src: Path, storage) -> bytes | None:
    """The bytes of the repository's swiftlike.sig (bounded), None when it has none."""
    if not os.path.lexists(src / SIGNATURE):
        return None
    return read_signature(source_file(src, SIGNATURE, storage_root=storage))


def _check_listing(sizes: dict, files: dict) -> None:
    """The hub's own listing against the manifest, before any weights are downloaded."""
    for rel, entry in files.items():
        if rel not in sizes:
            raise SwiftlikeError(f"{rel}: missing (listed in {MANIFEST}, not in the repository)")
        if sizes[rel] is not None and sizes[rel] != entry["size"]:
            raise SwiftlikeError(f"{rel}: {sizes[rel]} bytes in the repository, the manifest says {entry['size']} "
                                 f"(damaged or tampered); refused before downloading it")
    stray = [rel for rel in sizes if rel not in (MANIFEST, SIGNATURE) and rel not in files and not is_housekeeping(rel)]
    if stray:
        raise SwiftlikeError(f"{stray[0]}: {unsafe_path_reason(stray[0]) or 'not listed in ' + MANIFEST}")


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


# ---------------------------------------------------------------- the seal: a cheap check before every load
def _tree(vdir: Path) -> dict | None:
    """{rel: [size, mtime_ns, ctime_ns, inode]} of every file in a version dir but the install info; None when
    anything there is not a plain file or directory (a symlink, a fifo)."""
    out = {}
    for here, dirs, names in os.walk(vdir, followlinks=False):
        for entry in (*dirs, *names):
            path = Path(here) / entry
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                return None
            rel = path.relative_to(vdir).as_posix()
            if rel != INSTALL_INFO:
                out[rel] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return out


def _seal(vdir: Path, manifest_sha256: str) -> dict:
    # ctime cannot be set back by `touch`/utime: a file rewritten with its old size and mtime still breaks the seal
    return {"manifest_sha256": manifest_sha256, "files": _tree(vdir)}


def _intact(adapter: InstalledAdapter) -> bool:
    try:
        check_installed(adapter)
        return True
    except SwiftlikeError:
        return False


def check_installed(adapter: InstalledAdapter, *, full: bool = False) -> Path:
    """The version dir of store entry `adapter`, once it is known to be what was installed: the seal matches
    (cheap: stat calls and the manifest's sha256), else every file is re-hashed against the manifest and the seal
    renewed. A manifest that changed since install, or a file that does not match, is an error."""
    vdir = adapter.path.resolve()
    try:
        info = json.loads((vdir / INSTALL_INFO).read_text())
    except (OSError, ValueError):
        info = {}
    info = info if isinstance(info, dict) else {}
    seal = info.get("seal") if isinstance(info.get("seal"), dict) else None
    try:
        if not (vdir / MANIFEST).is_file() or (vdir / MANIFEST).is_symlink():
            raise SwiftlikeError(f"{MANIFEST}: missing or not a regular file")
        data = read_manifest_bytes(vdir / MANIFEST)
        sha = hashlib.sha256(data).hexdigest()
        if seal and sha != seal.get("manifest_sha256"):
            raise SwiftlikeError(f"{MANIFEST}: changed since it was installed (sha256 {sha[:12]}…, installed "
                                 f"{str(seal.get('manifest_sha256'))[:12]}…)")
        if seal and not full and _tree(vdir) == seal.get("files"):
            return vdir
        manifest = parse_manifest(data, MANIFEST)
        files = check_manifest(manifest, MANIFEST)
        for rel, entry in files.items():
            path = vdir / rel
            if path.is_symlink() or not path.is_file():
                raise SwiftlikeError(f"{rel}: missing or not a regular file (listed in {MANIFEST})")
            verify_file(path, rel, entry)
        stray = unlisted_files(vdir, files, ignore=(INSTALL_INFO, SIGNATURE), housekeeping=False)
        if stray:
            raise SwiftlikeError(f"{stray[0]}: not listed in {MANIFEST} (added after install)")
        _check_stored_signature(vdir, data, info)
    except (SwiftlikeError, OSError) as err:
        if isinstance(err, OSError):  # a file vanished or became unreadable under us
            err = f"{type(err).__name__}: {_first_line(err)}"
        fix = (f"reinstall it (`swiftlike adapter install {adapter.ref} --name {adapter.name}`) or remove it"
               if adapter.ref else "remove it (`swiftlike adapter remove NAME`) and install it again")
        raise SwiftlikeError(f"adapter {adapter.name} ({adapter.path}): {err}; refused to use it — {fix}") from None
    if vdir.is_relative_to(store_root().resolve()):
        _write_info(vdir, {**info, "seal": _seal(vdir, sha)})
    return vdir


def _check_stored_signature(vdir: Path, data: bytes, info: dict) -> None:
    """A version dir's swiftlike.sig still verifies over its manifest, and one installed signed is still signed."""
    sig = read_signature(vdir / SIGNATURE)
    recorded = (info.get("signature") or {}).get("status") if isinstance(info.get("signature"), dict) else None
    if sig is None:
        if recorded not in (None, "unsigned"):
            raise SwiftlikeError(f"{SIGNATURE}: missing (it was installed signed)")
        return
    if (path := vdir / SIGNATURE).is_symlink():
        raise SwiftlikeError(f"{path.name}: not a regular file")
    verdict = check_signature(data, sig, {})  # validity only: whom to trust is the caller's policy
    if verdict.status == "invalid":
        raise SwiftlikeError(f"{SIGNATURE}: {verdict.reason}")


def _write_info(vdir: Path, info: dict) -> None:
    """Rewrite the install info of a version dir atomically (best effort: a read-only store keeps the old one)."""
    tmp = store_root() / STAGING / f"{uuid.uuid4().hex}.info.tmp"  # same filesystem: the rename is atomic
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, vdir / INSTALL_INFO)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


# ---------------------------------------------------------------- atomic updates and crash recovery
def _store_lock(root: Path):
    """The store-wide lock around renames (short: never held while copying); a kill -9 never leaves it held."""
    from ..paths import file_lock

    return file_lock(root / LOCK, 0o644, f"{root / LOCK}: another swiftlike process has held the adapter store for "
                                         f"{LOCK_WAIT_S:.0f} s; try again", LOCK_WAIT_S)


@contextlib.contextmanager
def _staging(root: Path, name: str):
    """A fresh `.staging/NAME-<token>/`, flock-ed through `NAME-<token>.lock` for as long as this process lives;
    removed on the way out (it is gone already once committed)."""
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        token = uuid.uuid4().hex
        lock = staging / f"{name}-{token}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a sweeper probing the new file holds it for an instant at most
        try:
            ours = os.stat(lock).st_ino == os.fstat(fd).st_ino  # a sweeper took it for dead and removed it
        except FileNotFoundError:
            ours = False
        if ours:
            break
        os.close(fd)
    else:
        raise SwiftlikeError(f"{staging}: could not create a staging directory; try again")
    stage = staging / f"{name}-{token}"
    try:
        stage.mkdir()
        yield stage, token
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (staging / f"{stage.name}.link").unlink()
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        os.close(fd)


def _commit(root: Path, stage: Path, name: str, token: str, same_as: tuple | None = None) -> InstalledAdapter | None:
    """Make the complete `stage` the version NAME points to: one rename into `.versions/`, one atomic rename of a
    new symlink over NAME. The version it replaced goes to the trash. With `same_as` (repo, revision): when NAME
    already holds that revision, intact (installed by another process since this install looked), it is kept and
    returned and `stage` is dropped, so that a path the other process resolved to is not trashed under it."""
    versions = root / VERSIONS
    versions.mkdir(exist_ok=True)
    with _store_lock(root):
        if same_as is not None:
            found = _stored(root / name)
            if found is not None and (found.install.get("repo"), found.install.get("revision")) == same_as \
                    and _intact(found):
                return found
        version = versions / f"{name}-{token}"
        os.rename(stage, version)
        final = root / name
        if final.is_dir() and not final.is_symlink():  # installed by an older swiftlike: a plain directory
            os.rename(final, _trash_path(root))  # a kill right here: recovery links the new version
        _link(root, name, version, stage.parent / f"{stage.name}.link")
        _recover_locked(root)
    _empty_trash(root)
    return None


def _link(root: Path, name: str, version: Path, tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(f"{VERSIONS}/{version.name}", tmp)
    os.replace(tmp, root / name)


def _trash_path(root: Path) -> Path:
    (root / TRASH).mkdir(exist_ok=True)
    return root / TRASH / uuid.uuid4().hex


def _empty_trash(root: Path) -> None:
    trash = root / TRASH
    if trash.is_dir():
        for path in trash.iterdir():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else \
                path.unlink(missing_ok=True)


def recover(root: Path | None = None) -> None:
    """Finish or undo what a killed install or remove left: staging dirs of dead installers, versions nothing
    points to (linked when their NAME has none: the install had completed), dangling NAME links, the trash."""
    root = store_root() if root is None else root
    if not (root / STAGING).is_dir() and not (root / VERSIONS).is_dir() and not (root / TRASH).is_dir() \
            and not any(root.glob(".install-*")) and not any(root.glob(".trash-*")):
        return  # nothing any install ever left here (the common case for a fresh or read-only store)
    try:
        with _store_lock(root):
            _recover_locked(root)
        _empty_trash(root)
    except OSError:
        pass  # a read-only store: nothing to clean, and nothing of ours to recover


def _recover_locked(root: Path) -> None:
    _sweep_staging(root)
    versions = root / VERSIONS
    linked = set()
    for entry in root.iterdir():
        if not entry.is_symlink() or not _NAME.fullmatch(entry.name):
            continue
        target = Path(os.readlink(entry))
        if target.parent != Path(VERSIONS):
            continue  # a link someone made by hand: not ours to judge
        if not entry.exists():  # dangling: a remove was killed after moving its version to the trash
            entry.unlink()
        else:
            linked.add(target.name)
    orphans: dict[str, list[Path]] = {}
    for version in (sorted(versions.iterdir()) if versions.is_dir() else []):
        if version.name in linked:
            continue
        name, _, token = version.name.rpartition("-")
        if _NAME.fullmatch(name) and _TOKEN.fullmatch(token) and version.is_dir() and not version.is_symlink():
            orphans.setdefault(name, []).append(version)
    for name, dirs in orphans.items():
        if not os.path.lexists(root / name):  # killed between its last rename and the link: finish the install
            newest = max(dirs, key=lambda d: d.stat().st_mtime_ns)
            _link(root, name, newest, root / STAGING / f"recover-{uuid.uuid4().hex}.link")
            dirs.remove(newest)
        for version in dirs:  # replaced by a newer version, or never linked because a newer one was
            os.rename(version, _trash_path(root))
    for old in (*root.glob(".install-*"), *root.glob(".trash-*")):  # left by swiftlike before versioned installs
        with contextlib.suppress(FileNotFoundError):
            if time.time() - old.stat().st_mtime > 86400:
                os.rename(old, _trash_path(root))


def _sweep_staging(root: Path) -> None:
    staging = root / STAGING
    if not staging.is_dir():
        return
    for lock in staging.glob("*.lock"):
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its installer is alive
            elif time.time() - os.fstat(fd).st_mtime < 86400:
                continue
            shutil.rmtree(staging / lock.stem, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (staging / f"{lock.stem}.link").unlink()
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        finally:
            os.close(fd)
    for path in staging.iterdir():
        if path.suffix == ".lock":
            continue
        stem = path.name.removesuffix(".link")
        if (staging / f"{stem}.lock").exists():
            continue  # a live installer's
        if path.name.endswith(".tmp"):  # an install-info rewrite killed between write and rename
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.lstat().st_mtime > 3600:
                    path.unlink()
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- remove, verify, resolve
def remove(name: str) -> Path:
    adapter = get(name)
    if adapter.plugin:
        raise SwiftlikeError(f"adapter {name!r} comes from the installed plugin {adapter.plugin}; "
                             f"remove it with `pip uninstall {adapter.plugin}`")
    root = store_root()
    with _store_lock(root):
        final = root / adapter.name
        if final.is_symlink():
            target = final.resolve()
            if target.parent == (root / VERSIONS).resolve():
                os.rename(target, _trash_path(root))  # gone from the store at once (NAME dangles)
            final.unlink()
        else:
            os.rename(final, _trash_path(root))
    _empty_trash(root)
    return adapter.path


def verify(name: str) -> InstalledAdapter:
    """Re-hash every file of an installed (or plugin) adapter against its manifest; for a store entry, the
    manifest must also be the one installed."""
    adapter = get(name)
    if not adapter.plugin:
        check_installed(adapter, full=True)
        return adapter
    try:
        if not adapter.manifest:
            raise SwiftlikeError(f"no {MANIFEST}: nothing to verify against")
        files = check_manifest(adapter.manifest, MANIFEST)
        for rel, entry in files.items():
            verify_file(source_file(adapter.path, rel), rel, entry)
        stray = unlisted_files(adapter.path, files, ignore=(INSTALL_INFO, SIGNATURE))
        if stray:
            raise SwiftlikeError(f"{stray[0]}: not listed in {MANIFEST} (added after install)")
        verdict = check_directory(adapter.path, {})  # validity only: whom to trust is the caller's policy
        if verdict.status == "invalid":
            raise SwiftlikeError(f"{SIGNATURE}: {verdict.reason}")
    except SwiftlikeError as err:
        raise SwiftlikeError(f"adapter {name} ({adapter.path}): {err}") from None
    return adapter


def _in_store(path: Path) -> InstalledAdapter | None:
    """The store entry a directory path points into (by its name, or into `.versions/`), if any."""
    root = store_root()
    try:
        rel = path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None
    parts = rel.parts
    if len(parts) >= 2 and parts[0] == VERSIONS:
        found = _stored(root / VERSIONS / parts[1])
        if found is not None and _NAME.fullmatch(str(found.install.get("name"))):
            found.name = found.install["name"]
        return found
    return _stored(root / parts[0]) if parts and _NAME.fullmatch(parts[0]) else None


def resolve(value, *, hub_root: str | None = None, base=None, force: bool = False) -> Path:
    """A directory -> itself; an installed or plugin adapter name -> its path; a hub reference -> the installed copy
    of it, installing it first when there is none. A store entry is checked against its seal first: a copy
    tampered with after install is refused, whatever loads it (infer, serve, merge-lora, export)."""
    text = str(value)
    path = Path(text).expanduser()
    if path.is_dir():
        entry = _in_store(path)
        if entry is not None:
            check_installed(entry)
        return path
    if looks_like_ref(text):
        ref = parse_ref(text)
        found = find_installed(ref)
        if found:
            return check_installed(found)
        flat = ref.repo_id.replace("/", "--")
        candidates = [ref.name, flat, f"{flat}--{ref.revision or 'main'}".replace("/", "-")]
        candidates = [c for c in candidates if _NAME.fullmatch(c)] or [ref.name]
        name = next((c for c in candidates if _stored(store_root() / c) is None), candidates[-1])
        print(f"swiftlike: installing {ref} into {store_root() / name}", file=sys.stderr)
        return install(text, name=name, hub_root=hub_root, base=base, force=force).path.resolve()
    if _NAME.fullmatch(text):
        try:
            adapter = get(text)
        except SwiftlikeError:
            pass
        else:
            return adapter.path if adapter.plugin else check_installed(adapter)
    raise SwiftlikeError(f"{text}: no such directory, installed adapter (`swiftlike adapter list`) or hub reference "
                         f"(hf:ORG/NAME[@REV], ms:…, local:…){_did_you_mean(text)}")
