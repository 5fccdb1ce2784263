"""One named table of registry entries (models, templates, ...) with conflict and alias handling."""
from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Iterator

from .errors import ConflictError, SwiftlikeError, UnknownNameError
from .specs import KINDS, Spec

log = logging.getLogger("swiftlike.registry")


class Table:
    def __init__(self, kind: str):
        self.kind = kind
        self.spec_type = KINDS[kind]
        self._entries: dict[str, Spec] = {}
        self._aliases: dict[str, str] = {}
        self._conflicts: dict[str, list[str]] = {}

    def register(self, plugin: str, name: str, override: bool = False, **fields) -> Spec:
        if not isinstance(name, str) or not name:
            raise SwiftlikeError(f"{self.kind}: plugin {plugin} registered an entry without a name")
        allowed = {f.name for f in dataclasses.fields(self.spec_type)} - {"name", "plugin"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise SwiftlikeError(
                f"{self.kind}.{name} (plugin {plugin}): unknown field(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed))}")
        spec = self.spec_type(name=name, plugin=plugin, **fields)
        old = self._entries.get(name)
        if old is not None and old.plugin != plugin:
            if override:
                log.warning("%s %r from plugin %s overrides the one from plugin %s",
                            self.kind[:-1], name, plugin, old.plugin)
                self._conflicts.pop(name, None)
            else:
                plugins = self._conflicts.setdefault(name, [old.plugin])
                plugins.append(plugin)
                print(f"swiftlike: conflict: {self.kind[:-1]} {name!r} is registered by plugins "
                      f"{' and '.join(plugins)}; the later one must pass override=True", file=sys.stderr)
                return old
        self._entries[name] = spec
        for alias in getattr(spec, "aliases", None) or []:
            self._aliases.setdefault(alias, name)
        return spec

    def resolve_name(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        # ms-swift names are case-sensitive, but users type Qwen/qwen interchangeably
        lowered = {n.lower(): n for n in list(self._entries) + list(self._aliases)}
        if name.lower() in lowered:
            return self.resolve_name(lowered[name.lower()])
        raise UnknownNameError(self.kind, name, list(self._entries) + list(self._aliases))

    def get(self, name: str) -> Spec:
        real = self.resolve_name(name)
        if real in self._conflicts:
            raise ConflictError(
                f"{self.kind[:-1]} {real!r} is registered by plugins {' and '.join(self._conflicts[real])}; "
                f"uninstall one, or have the later one register with override=True")
        return self._entries[real]

    def __contains__(self, name: str) -> bool:
        if not isinstance(name, str):  # a manifest's missing field (None) is simply not a name
            return False
        try:
            self.resolve_name(name)
            return True
        except UnknownNameError:
            return False

    def __iter__(self) -> Iterator[Spec]:
        return iter(sorted(self._entries.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    @property
    def conflicts(self) -> dict[str, list[str]]:
        return dict(self._conflicts)
