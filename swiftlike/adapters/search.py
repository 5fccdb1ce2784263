"""`adapter search`: ask every hub that can list adapters (or one), at once, and merge their rows.

Each hub's `search` does the hub-specific part (swiftlike.hub.hf/ms/local); here the filters are checked before any
request, the hubs are asked in parallel with one deadline, rows are cleaned for the terminal and merged, and every
hub's outcome is kept: which answered (and with how many rows) and which did not, and why, in one line each.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field

from ..hub import open_hub
from ..registry import SwiftlikeError, get_registry
from .signing import SIGNATURE

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
TIMEOUT_ENV = "SWIFTLIKE_SEARCH_TIMEOUT"  # seconds one search waits for the slowest hub (default 20)
COLUMNS = ("ref", "base_model_type", "tuner", "rank", "downloads", "likes", "updated", "signed")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass
class SearchResult:
    rows: list[dict] = field(default_factory=list)
    hubs: list[dict] = field(default_factory=list)  # {hub, answered, rows} or {hub, answered: False, reason}

    @property
    def answered(self) -> list[str]:
        return [h["hub"] for h in self.hubs if h["answered"]]

    def status_lines(self) -> list[str]:
        return [f"{h['hub']}: " + (f"{h['rows']} adapter{'' if h['rows'] == 1 else 's'}" if h["answered"]
                                   else h["reason"]) for h in self.hubs]


def check_filters(base: str | None, tuner: str | None, limit: int) -> tuple[str | None, str | None]:
    """The canonical model type and tuner names (an unknown one is a one-line error with a "did you mean")."""
    registry = get_registry()
    base = registry.models.get(base).name if base else None
    tuner = registry.tuners.get(tuner).name if tuner else None
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise SwiftlikeError(f"--limit {limit}: must be between 1 and {MAX_LIMIT}")
    return base, tuner


def search(query: str | None = None, *, base: str | None = None, tuner: str | None = None, hub: str | None = None,
           limit: int = DEFAULT_LIMIT, hub_root: str | None = None, timeout: float | None = None) -> SearchResult:
    """Search `hub` (a registered hub name), or every hub that supports searching. At most `limit` rows per hub;
    the merged rows are the most downloaded first (hubs that count no downloads after, newest first)."""
    base, tuner = check_filters(base, tuner, limit)
    if hub is not None:
        get_registry().hubs.get(hub)  # an unknown hub prefix: one line, with a "did you mean"
    names = [hub] if hub else [spec.name for spec in get_registry().hubs]
    timeout = timeout if timeout is not None else float(os.environ.get(TIMEOUT_ENV) or 20)
    outcomes: dict[str, dict] = {}
    threads = []
    for name in names:
        try:
            instance = _open(name, hub_root)
        except SwiftlikeError as err:
            outcomes[name] = {"hub": name, "answered": False, "reason": str(err)}
            continue
        if not callable(getattr(instance, "search", None)):
            if hub:
                raise SwiftlikeError(f"hub {hub!r} cannot search (hubs that can: "
                                     f"{', '.join(n for n in _searchable())})")
            outcomes[name] = {"hub": name, "answered": False, "reason": "does not support search"}
            continue
        # daemon threads: a hub that never answers must not keep the process alive past the deadline
        thread = threading.Thread(target=_ask, args=(instance, name, query, base, tuner, limit, outcomes),
                                  daemon=True)
        thread.start()
        threads.append((name, thread))
    deadline = time.monotonic() + timeout
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    done = dict(outcomes)  # a hub answering after the deadline changes nothing from here on
    result = SearchResult(hubs=[dict(done.get(name) or {"hub": name, "answered": False,
                                                        "reason": f"no answer within {timeout:g} s"})
                                for name in names])
    for entry in result.hubs:
        result.rows += entry.pop("found", [])
    # most downloaded first; rows of hubs that count no downloads keep their hub's order (local: newest first)
    result.rows.sort(key=lambda r: (r["downloads"] is None, -(r["downloads"] or 0)))
    return result


def _ask(instance, name, query, base, tuner, limit, outcomes) -> None:
    try:
        rows = [_clean(row, name) for row in instance.search(query, base_model_type=base, tuner=tuner,
                                                               limit=limit)][:limit]
    except SwiftlikeError as err:
        outcomes[name] = {"hub": name, "answered": False, "reason": _one_line(str(err))}
    except Exception as err:  # a client library's own error (no network, DNS, TLS): said in one line
        outcomes[name] = {"hub": name, "answered": False,
                          "reason": f"cannot be reached ({type(err).__name__}: {_one_line(str(err))})"}
    else:
        outcomes[name] = {"hub": name, "answered": True, "rows": len(rows), "found": rows}


def _clean(row: dict, hub: str) -> dict:
    """One hub row as shown: strings one printable line (hub metadata is anyone's text), numbers numbers, and
    `signed` from whether the repo holds a swiftlike.sig (None when the hub does not list files)."""
    out = {"hub": hub}
    for key in COLUMNS:
        value = row.get(key)
        if key in ("rank", "downloads", "likes"):
            value = value if isinstance(value, int) and not isinstance(value, bool) else None
        elif key == "signed":
            files = row.get("files")
            value = SIGNATURE in files if isinstance(files, list) else None
        elif value is not None:
            value = _one_line(str(value))[:200]
        out[key] = value
    return out


def _one_line(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    return _UNPRINTABLE.sub("?", text)


def _open(name: str, hub_root: str | None):
    """The hub `name`; `hub_root` goes to the hubs that take one (directory hubs) and is ignored by the others."""
    try:
        return open_hub(name, hub_root)
    except SwiftlikeError:
        if hub_root is None:
            raise
        return open_hub(name)


def _searchable() -> list[str]:
    out = []
    for spec in get_registry().hubs:
        try:
            if callable(getattr(open_hub(spec.name), "search", None)):
                out.append(spec.name)
        except Exception:
            continue
    return out
