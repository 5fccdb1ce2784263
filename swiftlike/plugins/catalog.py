"""A plugin that registers the tables of a catalog TOML file. The built-in catalog is one of these.

Third-party packages can ship a TOML fragment instead of code:
    plugin = CatalogPlugin(Path(__file__).with_name("catalog.toml"))
and point their `swiftlike` entry point at `plugin`.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from ..registry.errors import SwiftlikeError
from ..registry.hookspecs import hookimpl

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def builtin_catalog_path() -> Path:
    """Inside the wheel: swiftlike/catalog.toml; in a source checkout: the repo root's catalog.toml."""
    for path in (PACKAGE_DIR / "catalog.toml", PACKAGE_DIR.parent / "catalog.toml"):
        if path.exists():
            return path
    raise SwiftlikeError(f"catalog.toml not found next to {PACKAGE_DIR}; reinstall swiftlike")


class CatalogPlugin:
    def __init__(self, path, template_dir=None):
        self.path = Path(path)
        self.template_dir = Path(template_dir) if template_dir else self.path.parent
        self._data = None

    @property
    def data(self) -> dict:
        if self._data is None:
            try:
                with open(self.path, "rb") as f:
                    self._data = tomllib.load(f)
            except tomllib.TOMLDecodeError as err:
                raise SwiftlikeError(f"{self.path}: invalid TOML: {err}") from None
        return self._data

    def _register_table(self, table: str, register, **defaults):
        for name, fields in self.data.get(table, {}).items():
            if not isinstance(fields, dict):
                raise SwiftlikeError(f"{self.path}: [{table}.{name}] must be a table")
            register(name, **{**defaults, **fields})

    @hookimpl
    def register_models(self, register):
        self._register_table("models", register)

    @hookimpl
    def register_templates(self, register):
        self._register_table("templates", register, base_dir=self.template_dir)

    @hookimpl
    def register_datasets(self, register):
        self._register_table("datasets", register, base_dir=self.path.parent)

    @hookimpl
    def register_adapters(self, register):
        self._register_table("adapters", register, base_dir=self.path.parent)

    @hookimpl
    def register_plugin_index(self, register):
        self._register_table("plugins", register, base_dir=self.path.parent)


def builtin_catalog() -> CatalogPlugin:
    return CatalogPlugin(builtin_catalog_path(), template_dir=PACKAGE_DIR / "templates")
