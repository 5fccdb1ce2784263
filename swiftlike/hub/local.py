"""A directory hub (`local:ORG/NAME[@REV]`) rooted at --hub_root / SWIFTLIKE_LOCAL_HUB; safe on a shared filesystem.

Layout: ROOT/ORG/NAME/<revision>/… (immutable; the revision is the content hash of the files, which an install
checks again: `check_content`), ROOT/ORG/NAME/refs (JSON: branch or tag -> revision; `main` is the latest push; a ref
resolves only to a revision directory of that repo) and ROOT/ORG/NAME/log.jsonl (one line per push).
A push copies into a temp dir inside the repo dir, then renames it into place; refs are rewritten with os.replace
under a lock file (O_EXCL, which works over NFS), so readers never see a half-written revision or refs file and
concurrent pushes never interleave.
"""
from __future__ import annotations

import getpass
import json
import os
import random
import re
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from ..registry import SwiftlikeError

ENV = "SWIFTLIKE_LOCAL_HUB"
REFS = "refs"
LOCK_WAIT_S = 60.0
LOCK_STALE_S = 120.0  # a lock older than this was left by a crashed push
_PART = re.compile(r"[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
_REVISION = re.compile(r"[0-9a-f]{40}")


def content_revision(files: dict) -> str:
    """The revision of a file table {rel: {sha256, size}}: a hash of names and contents (40 hex, like git)."""
    import hashlib

    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{files[rel]['sha256']}\n".encode())
    return digest.hexdigest()[:40]


class LocalHub:
    name = "local"
    default_revision = "main"

    def __init__(self, root=None):
        self._root = root

    @property
    def root(self) -> Path:
        root = self._root or os.environ.get(ENV)
        if not root:
            raise SwiftlikeError(f"the local hub has no root directory: pass --hub_root DIR or set {ENV}=DIR")
        return Path(root).expanduser()

    def repo_dir(self, repo_id: str) -> Path:
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(_PART.fullmatch(p) for p in parts):
            raise SwiftlikeError(f"local:{repo_id}: a repository is ORG/NAME (letters, digits, . _ -)")
        return self.root / parts[0] / parts[1]

    def refs(self, repo_id: str) -> dict:
        path = self.repo_dir(repo_id) / REFS
        try:
            refs = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SwiftlikeError(f"{path}: invalid JSON ({err}); restore it from log.jsonl in the same dir") from None
        if not isinstance(refs, dict):
            raise SwiftlikeError(f"{path}: expected a JSON object; restore it from log.jsonl in the same dir")
        return refs

    def _revision_dir(self, repo_id: str, rev, via: str) -> Path:
        """ROOT/ORG/NAME/<rev>: a 40-hex revision that is a real directory of this repo, never a path elsewhere."""
        repo = self.repo_dir(repo_id)
        if not isinstance(rev, str) or not _REVISION.fullmatch(rev):
            raise SwiftlikeError(f"local:{repo_id}@{via}: {repo / REFS} points it at {str(rev)[:80]!r}, which is not "
                                 f"a revision of this repo; refused (fix the refs file from log.jsonl)")
        path = repo / rev
        if path.is_symlink() or not path.is_dir():
            raise SwiftlikeError(f"local:{repo_id}@{via}: revision {rev[:12]}… is not a directory of {repo}; refused")
        return path

    def resolve_revision(self, repo_id: str, revision: str | None = None) -> str:
        repo = self.repo_dir(repo_id)
        if not repo.is_dir():
            raise SwiftlikeError(f"local:{repo_id}: no such repository under {self.root}")
        want = revision or self.default_revision
        refs = self.refs(repo_id)
        if want in refs:
            return self._revision_dir(repo_id, refs[want], want).name
        if re.fullmatch(r"[0-9a-f]{7,40}", want):  # a revision or a unique prefix of one, as git allows
            found = [p.name for p in repo.iterdir() if _REVISION.fullmatch(p.name) and p.name.startswith(want)]
            if len(found) == 1:
                return self._revision_dir(repo_id, found[0], want).name
        known = ", ".join(sorted(refs)) or "none"
        raise SwiftlikeError(f"local:{repo_id}@{want}: no such branch, tag or revision (branches and tags: {known})")

    def download(self, repo_id, *, repo_type="model", revision=None, cache_dir=None, allow_patterns=None) -> Path:
        """Revisions are immutable, so the revision dir itself is returned (nothing is copied); whoever copies from
        it checks the bytes against the revision's name with `check_content`."""
        return self.repo_dir(repo_id) / self.resolve_revision(repo_id, revision)

    def search(self, query=None, *, base_model_type=None, tuner=None, limit=20) -> list[dict]:
        """Adapters on this hub, from each repo's `main` ref and the manifest of that revision; the most recently
        pushed first. `query` matches ORG/NAME (case-insensitive); a repo whose refs or manifest cannot be read is
        not a hit. This hub counts no downloads or likes."""
        from ..checkpoint import read_manifest

        root = self.root
        if not root.is_dir():
            raise SwiftlikeError(f"{root}: no such directory (the local hub's root)")
        rows = []
        for repo in root.glob("*/*"):
            repo_id = f"{repo.parent.name}/{repo.name}"
            if not (_PART.fullmatch(repo.parent.name) and _PART.fullmatch(repo.name) and (repo / REFS).is_file()):
                continue
            if query and query.lower() not in repo_id.lower():
                continue
            try:
                revision = repo / self.resolve_revision(repo_id)
                manifest = read_manifest(revision)
                pushed = (repo / REFS).stat().st_mtime
            except (SwiftlikeError, OSError):
                continue
            cfg = manifest.get("tuner_config") if isinstance(manifest.get("tuner_config"), dict) else {}
            row = {"ref": f"local:{repo_id}", "base_model_type": manifest.get("base_model_type"),
                   "tuner": manifest.get("tuner"), "rank": cfg.get("r"), "downloads": None, "likes": None,
                   "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pushed)),
                   "files": sorted(p.name for p in revision.iterdir())}
            if manifest.get("kind", "adapter") != "adapter" or \
                    (base_model_type and row["base_model_type"] != base_model_type) or (tuner and row["tuner"] != tuner):
                continue
            rows.append(row)
        rows.sort(key=lambda r: r["updated"], reverse=True)
        return rows[:limit]

    def check_content(self, repo_id: str, revision: str, digests: dict) -> None:
        """Refuse files ({path: sha256}, as copied) that are not the content revision `revision` is named after:
        a revision dir changed after its push (weights and manifest alike) is not that revision any more."""
        have = content_revision({rel: {"sha256": sha} for rel, sha in digests.items()})
        if have != revision:
            raise SwiftlikeError(f"local:{repo_id}@{revision[:12]}: its files hash to {have[:12]}…, not to the "
                                 f"revision's name: changed after it was pushed; refused (push it again)")

    def upload(self, folder, repo_id, *, revision=None, private=False, message=None) -> str:
        """Publish every file of `folder` as a new revision; `revision` names the branch or tag (default main)."""
        from ..checkpoint import file_table

        folder = Path(folder)
        branch = revision or self.default_revision
        if _REVISION.fullmatch(branch) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)*", branch, re.ASCII) \
                or ".." in branch:
            raise SwiftlikeError(f"local:{repo_id}@{branch}: push to a branch or tag name (not a commit hash)")
        files = file_table(folder, skip=())
        if not files:
            raise SwiftlikeError(f"{folder}: no files to push")
        rev = content_revision(files)
        repo = self.repo_dir(repo_id)
        if not repo.is_dir():
            repo.mkdir(parents=True, exist_ok=True)
        if private:  # on a shared filesystem, private means only this user can read it
            self._make_private(repo, repo_id)
        final = repo / rev
        if not final.is_dir():
            self._publish(folder, files, repo, final)
        with self._lock(repo):
            refs = self.refs(repo_id)
            refs[branch] = rev
            refs.setdefault(self.default_revision, rev)
            tmp = repo / f".{REFS}.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(refs, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, repo / REFS)
            entry = {"revision": rev, "ref": branch, "message": message or "", "user": _user(),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(repo / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
        return rev

    @staticmethod
    def _make_private(repo: Path, repo_id: str) -> None:
        """chmod 700 the repo dir (new or existing); one that others can read and this user cannot change is an
        error, not a silent public push."""
        mode = repo.stat().st_mode & 0o777
        if mode & 0o077 == 0:
            return
        try:
            os.chmod(repo, 0o700)
        except PermissionError:
            raise SwiftlikeError(f"local:{repo_id}: --private, but {repo} exists, is readable by others (mode "
                                 f"{mode:o}) and belongs to another user; ask its owner to `chmod 700` it, or push "
                                 f"without --private") from None

    @staticmethod
    def _publish(folder: Path, files: dict, repo: Path, final: Path) -> None:
        from ..checksums import sha256_file

        for old in repo.glob(".tmp-*"):  # left by a killed push; a day old, so no live push owns it
            try:
                if time.time() - old.stat().st_mtime > 86400:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:
                pass
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name[:12]}-", dir=repo))
        try:
            for rel, entry in files.items():
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, dest)
                if sha256_file(dest) != entry["sha256"]:  # the source changed while we were pushing it
                    raise SwiftlikeError(f"{folder / rel}: changed during the push; push again")
                os.chmod(dest, 0o444)  # revisions are immutable
            os.chmod(tmp, 0o755)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # a concurrent push of the same content got there first: same revision, same bytes
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def _lock(self, repo: Path):
        path = repo / f"{REFS}.lock"
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                try:
                    stale = time.time() - path.stat().st_mtime > LOCK_STALE_S
                except FileNotFoundError:
                    continue
                if stale:
                    broken = f"{path}.stale-{uuid.uuid4().hex}"
                    try:  # rename first, so two processes breaking the same stale lock don't both succeed
                        os.rename(path, broken)
                        os.unlink(broken)
                    except FileNotFoundError:
                        pass
                    continue
                if time.monotonic() > deadline:
                    raise SwiftlikeError(f"{path}: held by another push for {LOCK_WAIT_S:.0f} s; if no push is "
                                         f"running, delete it") from None
                time.sleep(0.005 + random.random() * 0.02)
        try:
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            os.close(fd)
            yield
        finally:
            os.unlink(path)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return str(os.getuid())
