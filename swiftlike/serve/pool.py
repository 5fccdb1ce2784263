"""The adapter pool: known adapters (name → source, version), the resident ones (LRU, at most `max_resident`), lazy
single-flight loads, pins held by in-flight requests, and versioned replacement.

Runs on the server's event loop (no locks: nothing here awaits in the middle of a check-then-act); loads run in
worker threads. A request pins the exact ResidentAdapter object it got, so eviction never takes weights from under it and a
replacement only affects requests that acquire after it.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..registry import SwiftlikeError


class UnknownAdapter(KeyError):
    pass


class ReplacedMeanwhile(SwiftlikeError):
    pass


@dataclass
class Known:
    name: str
    source: str
    path: Path
    version: int
    added: float = field(default_factory=time.time)
    requests: int = 0
    tokens: int = 0
    loads: int = 0
    last_used: Optional[float] = None


class _Loading:
    def __init__(self):
        self.waiters = 0
        self.task: Optional[asyncio.Task] = None


class AdapterPool:
    def __init__(self, loader: Callable, resolve: Callable, max_resident: int,
                 on_drop: Callable = lambda adapter: None, on_change: Callable = lambda adapters: None):
        """loader(name, version, path) -> ResidentAdapter and resolve(source) -> Path are blocking (run in threads);
        on_drop(adapter) when an adapter leaves memory, on_change(adapters) when the resident set changes."""
        if max_resident < 1:
            raise SwiftlikeError("--max_resident must be at least 1")
        self._loader = loader
        self._resolve = resolve
        self.max_resident = max_resident
        self._on_drop = on_drop
        self._on_change = on_change
        self._known: dict[str, Known] = {}
        self._versions: dict[str, int] = {}  # survives removal, so a re-added name never reuses a version
        self._resident: collections.OrderedDict = collections.OrderedDict()  # name -> ResidentAdapter, LRU first
        self._loading: dict[tuple, _Loading] = {}
        self._pins: dict[int, int] = {}  # ResidentAdapter.uid -> in-flight requests
        self._retired: dict[int, object] = {}  # replaced/removed adapters still pinned
        self._freed = asyncio.Event()
        self._draining: set[str] = set()  # resident adapters taking no new requests while others wait for a slot
        self._slot_waiters = 0
        self.loads = self.evictions = self.load_failures = 0
        self.load_seconds: list[float] = []

    # -- registry of names --------------------------------------------------------------------------------------
    def register(self, name: str, source: str, path: Path) -> Known:
        """Know an adapter without loading it (it loads on first use)."""
        version = self._versions[name] = self._versions.get(name, 0) + 1
        known = self._known[name] = Known(name, source, Path(path), version)
        return known

    def __contains__(self, name: str) -> bool:
        return name in self._known

    def names(self) -> list[str]:
        return sorted(self._known)

    def resident(self) -> list[str]:
        return list(self._resident)

    def known(self, name: str) -> Optional[Known]:
        return self._known.get(name)

    async def put(self, name: str, source: str):
        """Load `source` and make it adapter `name` (a new version if the name exists). Requests in flight keep the
        weights they started with; requests acquiring after this returns get the new ones."""
        path = Path(await asyncio.to_thread(self._resolve, source))
        version = self._versions[name] = self._versions.get(name, 0) + 1
        try:
            adapter = await asyncio.to_thread(self._loader, name, version, path)
        except BaseException:
            self.load_failures += 1
            raise
        if self._versions.get(name) != version:
            raise ReplacedMeanwhile(f"adapter {name!r} was replaced or removed again while this version loaded")
        old = self._known.get(name)
        known = self._known[name] = Known(name, source, path, version, loads=1)
        if old is not None:
            known.requests, known.tokens, known.loads = old.requests, old.tokens, old.loads + 1
        self._retire(self._resident.pop(name, None))
        self._draining.discard(name)
        self.loads += 1
        self.load_seconds.append(adapter.load_seconds)
        if self._make_room():
            self._resident[name] = adapter
        else:  # every resident adapter is busy: it loads again on first use
            self._on_drop(adapter)
        self._changed()
        return adapter

    def remove(self, name: str) -> bool:
        if self._known.pop(name, None) is None:
            return False
        self._versions[name] += 1  # a load of the removed version in progress is discarded
        self._retire(self._resident.pop(name, None))
        self._draining.discard(name)
        self._changed()
        return True

    # -- requests -----------------------------------------------------------------------------------------------
    async def acquire(self, name: str):
        """The current version of `name`, loaded if needed and pinned until `release`."""
        while True:
            known = self._known.get(name)
            if known is None:
                raise UnknownAdapter(name)
            current = self._resident.get(name)
            if current is not None and current.version == known.version:
                if name in self._draining and self._slot_waiters:
                    await self._wait()  # draining so that a waiting adapter gets its slot (no starvation)
                    continue
                self._resident.move_to_end(name)
                self._pin(current)
                return self._used(known, current)
            key = (name, known.version)
            loading = self._loading.get(key)
            if loading is None:
                if not self._make_room():
                    # every resident adapter is in use: stop admitting requests to the least recently used one,
                    # and take its slot when its running requests are done
                    if self._resident:
                        self._draining.add(next(iter(self._resident)))
                    self._slot_waiters += 1
                    try:
                        await self._wait()
                    finally:
                        self._slot_waiters -= 1
                        self._freed.set()
                    continue
                loading = self._loading[key] = _Loading()
                loading.task = asyncio.get_running_loop().create_task(self._load(key, known, loading))
                loading.task.add_done_callback(lambda t: t.cancelled() or t.exception())
            loading.waiters += 1
            try:
                adapter = await asyncio.shield(loading.task)
            except asyncio.CancelledError:
                task = loading.task
                if task.done() and not task.cancelled() and task.exception() is None and task.result() is not None:
                    self.release(task.result())  # it was pinned for us
                else:
                    loading.waiters -= 1
                raise
            if adapter is not None:
                return self._used(known, adapter)
            # replaced or removed while it loaded: look again

    def release(self, adapter) -> None:
        left = self._pins.get(adapter.uid, 0) - 1
        if left > 0:
            self._pins[adapter.uid] = left
        else:
            self._pins.pop(adapter.uid, None)
            if self._retired.pop(adapter.uid, None) is not None:
                self._on_drop(adapter)
        self._freed.set()

    def record(self, name: str, tokens: int) -> None:
        known = self._known.get(name)
        if known is not None:
            known.tokens += tokens

    def pinned(self, adapter) -> int:
        return self._pins.get(adapter.uid, 0)

    # -- internals ----------------------------------------------------------------------------------------------
    def _used(self, known: Known, adapter):
        known.requests += 1
        known.last_used = time.time()
        return adapter

    async def _wait(self) -> None:
        self._freed.clear()
        await self._freed.wait()

    def _changed(self) -> None:
        self._on_change(list(self._resident.values()))
        self._freed.set()

    def _pin(self, adapter) -> None:
        self._pins[adapter.uid] = self._pins.get(adapter.uid, 0) + 1

    def _retire(self, adapter) -> None:
        if adapter is None:
            return
        if self._pins.get(adapter.uid):
            self._retired[adapter.uid] = adapter  # dropped when its last request releases it
        else:
            self._on_drop(adapter)

    def _make_room(self) -> bool:
        """Evict least-recently-used unpinned adapters until one more fits; False if all are in use."""
        while len(self._resident) + len(self._loading) >= self.max_resident:
            victim = next((n for n, a in self._resident.items() if not self._pins.get(a.uid)), None)
            if victim is None:
                return False
            self._on_drop(self._resident.pop(victim))
            self._draining.discard(victim)
            self.evictions += 1
            self._changed()
        return True

    async def _load(self, key: tuple, known: Known, loading: _Loading):
        try:
            adapter = await asyncio.to_thread(self._loader, known.name, known.version, known.path)
        except BaseException:
            self.load_failures += 1
            raise
        finally:
            self._loading.pop(key, None)
            self._freed.set()
        current = self._known.get(known.name)
        if current is None or current.version != known.version:
            self._on_drop(adapter)
            return None
        self._resident[known.name] = adapter  # the room was reserved when the load started
        self._changed()
        self.loads += 1
        current.loads += 1
        self.load_seconds.append(adapter.load_seconds)
        if loading.waiters:
            self._pins[adapter.uid] = self._pins.get(adapter.uid, 0) + loading.waiters
        return adapter

    def snapshot(self) -> list[dict]:
        rows = []
        for name in sorted(self._known):
            k = self._known[name]
            res = self._resident.get(name)
            rows.append({
                "name": name, "source": k.source, "path": str(k.path), "version": k.version,
                "resident": res is not None and res.version == k.version,
                "in_flight": self._pins.get(res.uid, 0) if res is not None else 0,
                "requests": k.requests, "completion_tokens": k.tokens, "loads": k.loads,
                "last_used": k.last_used, "added": k.added,
                "rank": res.rank if res is not None else None,
                "bytes": res.nbytes if res is not None else None,
                "load_seconds": round(res.load_seconds, 4) if res is not None else None,
            })
        return rows
