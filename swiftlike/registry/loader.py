"""The plugin manager: built-ins, entry points (group `swiftlike`), and in-process plugins.

SWIFTLIKE_PLUGINS=a,b loads only those distributions' plugins; SWIFTLIKE_PLUGINS= (empty) loads none but the
built-ins. A plugin that fails to import or raises in a hook is reported once on stderr and skipped.
"""
from __future__ import annotations

import os
import sys
import traceback
from importlib import metadata

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "swiftlike"
BUILTIN_PLUGINS = (
    "swiftlike.plugins.catalog:builtin_catalog",
    "swiftlike.plugins.tuners",
    "swiftlike.plugins.hubs",
    "swiftlike.plugins.rewards",
)

_reported: set[str] = set()


def report(plugin: str, err: BaseException, where: str) -> None:
    """One stderr line per broken plugin; the traceback only with SWIFTLIKE_DEBUG=1."""
    key = f"{plugin}:{where}"
    if key in _reported:
        return
    _reported.add(key)
    print(f"swiftlike: plugin {plugin} failed {where}: {type(err).__name__}: {err}", file=sys.stderr)
    if os.environ.get("SWIFTLIKE_DEBUG"):
        traceback.print_exception(err)


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def allowed_distributions() -> set[str] | None:
    """None = load every installed plugin; otherwise the allowed distribution names."""
    value = os.environ.get("SWIFTLIKE_PLUGINS")
    if value is None:
        return None
    return {_normalize(v.strip()) for v in value.split(",") if v.strip()}


class PluginManager(pluggy.PluginManager):
    def __init__(self):
        super().__init__("swiftlike")
        self.add_hookspecs(hookspecs)
        self.builtin_names: list[str] = []
        self.versions: dict[str, str] = {}
        self._entry_points_loaded = False

    def load_builtins(self) -> None:
        import importlib

        for ref in BUILTIN_PLUGINS:
            module, _, attr = ref.partition(":")
            obj = importlib.import_module(module)
            if attr:
                obj = getattr(obj, attr)()
            name = "swiftlike" if attr else f"swiftlike.{module.rsplit('.', 1)[-1]}"
            self.register(obj, name=name)
            self.builtin_names.append(name)

    def load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        allowed = allowed_distributions()
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        per_dist: dict[str, int] = {}
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else ep.name
            per_dist[dist] = per_dist.get(dist, 0) + 1
        for ep in eps:
            dist = ep.dist.name if ep.dist is not None else ep.name
            if allowed is not None and _normalize(dist) not in allowed:
                continue
            # A plugin is named after its distribution (what SWIFTLIKE_PLUGINS and pip use).
            name = dist if per_dist[dist] == 1 else f"{dist}:{ep.name}"
            if self.has_plugin(name):
                continue
            try:
                plugin = ep.load()
                self.register(plugin, name=name)
            except Exception as err:  # a broken plugin must not take the tool down
                report(name, err, "to load")
                continue
            self.versions[name] = ep.dist.version if ep.dist is not None else "?"

    def hook_names(self, plugin) -> list[str]:
        return sorted(h.name for h in (self.get_hookcallers(plugin) or []))


_pm: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    global _pm
    if _pm is None:
        _pm = PluginManager()
        _pm.load_builtins()
        _pm.load_entry_points()
    return _pm


def reset_plugin_manager() -> None:
    """Forget loaded plugins (tests; after installing a plugin in-process). The registry is rebuilt too."""
    global _pm
    _pm = None
    _reported.clear()
    from .core import reset_registry

    reset_registry()
