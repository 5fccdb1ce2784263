"""Build the registry by asking every plugin's `register_*` collectors."""
from __future__ import annotations

from .errors import SwiftlikeError
from .loader import PluginManager, get_plugin_manager, report
from .table import Table

HOOK_FOR_KIND = {
    "models": "register_models",
    "templates": "register_templates",
    "datasets": "register_datasets",
    "tuners": "register_tuners",
    "hubs": "register_hubs",
    "adapters": "register_adapters",
    "rewards": "register_rewards",
    "plugins": "register_plugin_index",
}


class Registry:
    def __init__(self, pm: PluginManager):
        self.pm = pm
        self.tables = {kind: Table(kind) for kind in HOOK_FOR_KIND}
        self.counts: dict[str, dict[str, int]] = {}  # plugin -> kind -> number registered
        for kind, hook in HOOK_FOR_KIND.items():
            self._collect(kind, hook)

    def _collect(self, kind: str, hook: str) -> None:
        table = self.tables[kind]
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            plugin = impl.plugin_name
            staged: list[tuple[str, dict]] = []

            def register(name, _staged=staged, **fields):
                _staged.append((name, fields))

            try:
                impl.function(register=register)
                for name, fields in staged:
                    table.register(plugin, name, **fields)
            except Exception as err:
                report(plugin, err, f"in {hook}")
                continue
            self.counts.setdefault(plugin, {}).setdefault(kind, 0)
            self.counts[plugin][kind] += len(staged)

    models = property(lambda self: self.tables["models"])
    templates = property(lambda self: self.tables["templates"])
    datasets = property(lambda self: self.tables["datasets"])
    tuners = property(lambda self: self.tables["tuners"])
    hubs = property(lambda self: self.tables["hubs"])
    adapters = property(lambda self: self.tables["adapters"])
    rewards = property(lambda self: self.tables["rewards"])
    plugin_index = property(lambda self: self.tables["plugins"])

    def get(self, kind: str, name: str):
        if kind not in self.tables:
            raise SwiftlikeError(f"unknown registry kind {kind!r}; one of {', '.join(self.tables)}")
        return self.tables[kind].get(name)


_registry: Registry | None = None


def get_registry() -> Registry:
    global _registry
    if _registry is None:
        _registry = Registry(get_plugin_manager())
    return _registry


def reset_registry() -> None:
    """Rebuild on next use (after registering or unregistering plugins in-process)."""
    global _registry
    _registry = None
