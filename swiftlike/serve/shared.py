"""Several replicas of `swiftlike serve` behind a load balancer: the adapter admin's changes, shared.

Every replica is started with the same flags (`--adapters`, `--tenants`, the base model) and the same adapter store, so
names, store entries and hub references resolve alike on all of them. What the admin API changes at runtime is kept in
`--shared_state DIR`: `DIR/adapters.json` maps an adapter name to the source it was loaded from, or marks it removed:

    {"format": "swiftlike.serve-state/1", "id": "…", "base": "tiny-llama", "generation": 7,
     "adapters": {"hot": {"source": "local:acme/hot", "rev": 7}, "a0": {"removed": true, "rev": 5}}}

Each replica applies it on top of its own `--adapters` when it starts, then again whenever the file changes: it looks
every `--sync_interval` seconds, so another replica's load or unload is live here within that interval plus the time
to load the adapter. A source is resolved again on every replica through the same resolver as an admin load (the
store's seal, the signature policy, the base check): the file names adapters, it is never trusted as a path to load.

Only the admin API writes the file: under the flock of `DIR/adapters.lock`, as a temp file renamed over the old one,
so readers never see half a file and concurrent writers on any replica never lose each other's change (each write
bumps `generation`, and an entry's `rev` is the generation that wrote it: a replica applies an entry once, when its
rev is newer than the one it applied). The directory is created private (0700, the file 0600) and one that other users
may write to is refused.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..registry import SwiftlikeError

# the lock is paths.file_lock: without flock (Windows) concurrent writers on several replicas may lose a change
log = logging.getLogger("swiftlike.serve")
FILE, LOCK = "adapters.json", "adapters.lock"
FORMAT = "swiftlike.serve-state/1"
MAX_BYTES = 4 << 20
MAX_SOURCE = 4096
LOCK_WAIT_S = 30.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class SharedStateError(SwiftlikeError):
    pass


@dataclass(frozen=True)
class Entry:
    rev: int
    source: Optional[str]  # None: removed


@dataclass
class State:
    id: Optional[str] = None  # None: no file yet
    base: Optional[str] = None
    generation: int = 0
    adapters: dict = None  # name -> Entry

    def __post_init__(self):
        self.adapters = self.adapters or {}

    def to_json(self) -> dict:
        return {"format": FORMAT, "id": self.id, "base": self.base, "generation": self.generation,
                "adapters": {n: ({"removed": True} if e.source is None else {"source": e.source}) | {"rev": e.rev}
                             for n, e in sorted(self.adapters.items())}}


class SharedState:
    """The file: read, validated, and updated under the lock."""

    def __init__(self, directory, base: str):
        self.dir = Path(directory).expanduser().resolve()
        self.path = self.dir / FILE
        self.base = base
        self.where = f"--shared_state {self.dir}"
        self._seen = None  # (inode, mtime_ns, size) of the last file read

    def open(self) -> State:
        """Create the directory if needed, check who may write to it, and read the state (errors: one line)."""
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as err:
            raise SwiftlikeError(f"{self.where}: cannot create the directory ({err.strerror})") from None
        if not self.dir.is_dir():
            raise SwiftlikeError(f"{self.where}: not a directory")
        _private(self.dir, self.where)
        return self.read(track=True)

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return _signature(st) != self._seen

    def read(self, track: bool = False) -> State:
        """The state on disk (empty when there is no file yet); refuses a file others may write, or one that is not
        what this module writes, naming the problem. `track`: remember this version of the file for `changed` (only
        the watch does, so that nothing else makes it skip a change it has not applied)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return State()
        except OSError as err:
            raise SwiftlikeError(f"{self.where}: cannot read {FILE} ({err.strerror})") from None
        try:
            st = os.fstat(fd)
            if track:
                self._seen = _signature(st)
            if not stat.S_ISREG(st.st_mode):
                raise SwiftlikeError(f"{self.where}: {FILE} is not a regular file")
            if st.st_mode & 0o002:
                raise SwiftlikeError(f"{self.where}: {FILE} is writable by every user; only the servers' user may "
                                     f"write it (chmod o-w)")
            if st.st_size > MAX_BYTES:
                raise SwiftlikeError(f"{self.where}: {FILE} is {st.st_size} bytes, more than a state can be")
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        finally:
            os.close(fd)
        return self._parse(raw)

    def _parse(self, raw: bytes) -> State:
        def bad(what):
            return SwiftlikeError(f"{self.where}: {FILE}: {what}; it is written by the admin API only — restore it "
                                  f"or remove it (every replica then keeps its own adapters)")

        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise bad(f"not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise bad(f"not a {FORMAT} file")
        state = State(id=data.get("id"), base=data.get("base"), generation=data.get("generation"))
        if not isinstance(state.id, str) or not isinstance(state.base, str) or type(state.generation) is not int \
                or state.generation < 1:
            raise bad("id, base and generation must be a string, a string and a positive integer")
        if state.base != self.base:
            raise SwiftlikeError(f"{self.where}: its adapters were loaded on base model {state.base!r}, this server "
                                 f"serves {self.base!r}; give each deployment its own directory")
        adapters = data.get("adapters")
        if not isinstance(adapters, dict):
            raise bad("adapters must be an object")
        for name, entry in adapters.items():
            if not _NAME.fullmatch(name):
                raise bad(f"adapter name {name!r} is not a valid name")
            if not isinstance(entry, dict) or type(entry.get("rev")) is not int or \
                    not 1 <= entry["rev"] <= state.generation:
                raise bad(f"adapters.{name}: needs a rev between 1 and the generation")
            if entry.keys() == {"removed", "rev"} and entry["removed"] is True:
                state.adapters[name] = Entry(entry["rev"], None)
            elif entry.keys() == {"source", "rev"} and isinstance(entry["source"], str) and \
                    0 < len(entry["source"]) <= MAX_SOURCE and "\0" not in entry["source"]:
                state.adapters[name] = Entry(entry["rev"], entry["source"])
            else:
                raise bad(f"adapters.{name}: must be {{source, rev}} or {{removed: true, rev}}")
        return state

    def write(self, name: str, source: Optional[str]) -> tuple[State, Entry]:
        """Record that `name` was loaded from `source` (None: removed); returns the new state and its entry."""
        if not _NAME.fullmatch(name):
            raise SwiftlikeError(f"{name!r}: not a valid adapter name")
        with self._lock():
            state = self.read()
            if state.id is None:
                state = State(id=uuid.uuid4().hex, base=self.base)
            state.generation += 1
            entry = state.adapters[name] = Entry(state.generation, source)
            data = (json.dumps(state.to_json(), indent=1) + "\n").encode()
            tmp = self.dir / f".{FILE}.{uuid.uuid4().hex}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            with contextlib.suppress(OSError):  # the rename itself survives a power cut
                dfd = os.open(self.dir, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        return state, entry

    def _lock(self):
        from ..paths import file_lock

        return file_lock(self.dir / LOCK, 0o600, f"{self.where}: another replica has held {LOCK} for "
                                                 f"{LOCK_WAIT_S:.0f} s; try again", LOCK_WAIT_S)


def _signature(st) -> tuple:
    return st.st_ino, st.st_mtime_ns, st.st_size


def _private(path: Path, where: str) -> None:
    st = os.stat(path)
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        raise SwiftlikeError(f"{where}: the directory is writable by every user, who could then change which "
                             f"adapters the servers load; use a directory only the servers' user may write (chmod o-w)")


class Replication:
    """One replica's side: applies the shared state to the adapter pool, and records the admin API's changes."""

    def __init__(self, directory, base: str, interval: float):
        if not interval > 0:
            raise SwiftlikeError("--sync_interval must be more than 0 seconds")
        self.state = SharedState(directory, base)
        self.interval = float(interval)
        self.initial = self.state.open()  # checked before the model loads
        self.id = None
        self.generation = 0
        self.applied: dict[str, int] = {}  # name -> rev of the entry applied here (ours or another replica's)
        self.syncs = self.changes = self.errors = 0
        self.refused: set[str] = set()  # adapters of the state this replica could not use (named in the banner)
        self._lock: Optional[asyncio.Lock] = None
        self.rt = None

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def attach(self, rt) -> None:
        """At start-up (no event loop yet, nothing resident): register the state's adapters (they load on first
        use, like --adapters) and drop the ones it removed."""
        self.rt = rt
        state, self.initial = self.initial, None
        self._adopt(state)
        for name, entry in sorted(state.adapters.items()):
            self.applied[name] = entry.rev
            if name == rt.base_name:
                continue
            if entry.source is None:
                rt.pool.remove(name)
                continue
            try:
                path = rt.resolve_source(entry.source)
                rt.check_adapter(path)
            except (SwiftlikeError, OSError, ValueError) as err:
                self._refuse(name, entry.source, err)
                rt.pool.remove(name)
                continue
            rt.pool.register(name, entry.source, path)
            self.refused.discard(name)

    def _adopt(self, state: State) -> None:
        if state.id != self.id:  # a new file (the old one was removed): its revs start again
            self.id = state.id
            self.applied.clear()
        self.generation = state.generation

    def _refuse(self, name: str, source: str, err) -> None:
        self.errors += 1
        self.refused.add(name)
        log.error("%s: adapter %r (%s) refused on this replica, not served here: %s", self.state.where, name,
                  source, err)

    # -- the admin API ------------------------------------------------------------------------------------------
    async def put(self, name: str, source: str):
        """Load `source` as `name` here (an invalid source is refused before anything is recorded), then record it
        for the other replicas."""
        async with self.lock:
            adapter = await self.rt.pool.put(name, source)
            self.refused.discard(name)
            await self._record(name, source)
            return adapter

    async def remove(self, name: str) -> bool:
        """Remove `name` here and on every replica; False when neither this replica nor the state knows it."""
        async with self.lock:
            state = await self._read()
            live = (entry := state.adapters.get(name)) is not None and entry.source is not None
            if not self.rt.pool.remove(name) and not live:
                return False
            self.refused.discard(name)
            await self._record(name, None)
            return True

    async def _record(self, name: str, source: Optional[str]) -> None:
        try:
            state, entry = await asyncio.to_thread(self.state.write, name, source)
        except (SwiftlikeError, OSError) as err:
            self.errors += 1
            raise SharedStateError(f"done on this replica only, not recorded for the others: {err}") from None
        if state.id != self.id:
            self._adopt(state)
        self.generation = max(self.generation, state.generation)
        self.applied[name] = entry.rev

    async def _read(self) -> State:
        try:
            return await asyncio.to_thread(self.state.read)
        except (SwiftlikeError, OSError) as err:
            self.errors += 1
            raise SharedStateError(str(err)) from None

    # -- following the other replicas ---------------------------------------------------------------------------
    async def watch(self) -> None:
        """Runs with the server: apply the state whenever the file changes (looked at every --sync_interval s)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a broken file or a full disk must not stop the watch
                self.errors += 1
                log.error("%s: %s", self.state.where, err)

    async def sync(self) -> int:
        """Apply what changed since the last look; returns how many adapters changed here."""
        if not await asyncio.to_thread(self.state.changed):
            return 0
        async with self.lock:
            # read under the lock: never older than what this replica wrote
            state = await asyncio.to_thread(self.state.read, True)
            self.syncs += 1
            self._adopt(state)
            done = 0
            for name, entry in sorted(state.adapters.items()):
                if entry.rev <= self.applied.get(name, 0):
                    continue
                self.applied[name] = entry.rev
                if name == self.rt.base_name:
                    continue
                if entry.source is None:
                    self.refused.discard(name)
                    done += self.rt.pool.remove(name)
                    continue
                try:
                    await self.rt.pool.put(name, entry.source)  # resolved and checked as an admin load is
                    self.refused.discard(name)
                    done += 1
                except Exception as err:
                    # never keep serving a version the other replicas have replaced
                    self.rt.pool.remove(name)
                    self._refuse(name, entry.source, err)
            self.changes += done
            return done

    def describe(self) -> dict:
        return {"path": str(self.state.path), "generation": self.generation, "sync_interval": self.interval}
