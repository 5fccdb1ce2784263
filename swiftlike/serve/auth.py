"""Tenants and API keys: keys are kept only as sha256 hex and compared in constant time.

    # tenants.toml
    [admin]
    key_sha256 = "…"                      # may manage adapters and use every model
    [tenants.acme]
    key_sha256 = "…"
    adapters = ["acme-support", "acme-sql"]   # "*" = every adapter
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..registry import SwiftlikeError

_HEX = re.compile(r"[0-9a-f]{64}")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    name: str
    is_admin: bool = False
    adapters: Optional[frozenset] = None  # None: every adapter

    def may_use(self, adapter: str) -> bool:
        return self.adapters is None or adapter in self.adapters


class Auth:
    """Who is calling, from `Authorization: Bearer KEY`. Without tenants everyone is an anonymous caller who may use
    every model (and manage adapters unless an admin key is set)."""

    def __init__(self, tenants: dict[str, tuple[str, Optional[frozenset]]] | None = None,
                 admin_sha256: str | None = None):
        self.tenants = tenants  # name -> (sha256 hex, adapters or None)
        self.admin_sha256 = admin_sha256

    @property
    def open(self) -> bool:
        return self.tenants is None

    @classmethod
    def load(cls, tenants_file=None, admin_key_env: str | None = None) -> "Auth":
        admin = None
        if admin_key_env:
            key = os.environ.get(admin_key_env)
            if not key:
                raise SwiftlikeError(f"--admin_key_env {admin_key_env}: that environment variable is empty or unset")
            admin = key_hash(key)
        if tenants_file is None:
            return cls(None, admin)
        tenants, file_admin = parse_tenants(Path(tenants_file))
        if admin is not None:
            # a tenant holding the admin key would be taken for the admin
            same = [name for name, (digest, _) in tenants.items() if _same(digest, admin)]
            if same:
                raise SwiftlikeError(f"--admin_key_env {admin_key_env}: the admin key is also tenant {same[0]!r}'s key "
                                     f"in {tenants_file}; give the admin its own key")
        return cls(tenants, admin or file_admin)

    def authenticate(self, authorization: str | None) -> Optional[Caller]:
        """The caller, or None for a missing/wrong key (→ 401)."""
        key = _bearer(authorization)
        if self.open:
            is_admin = self.admin_sha256 is None or (key is not None and _same(key_hash(key), self.admin_sha256))
            return Caller("anonymous", is_admin=is_admin)
        if key is None:
            return None
        digest = key_hash(key)
        found = None
        # every stored hash is compared, so the time taken does not tell which tenant (if any) matched
        if self.admin_sha256 is not None and _same(digest, self.admin_sha256):
            found = Caller("admin", is_admin=True)
        for name, (stored, adapters) in self.tenants.items():
            if _same(digest, stored) and found is None:
                found = Caller(name, adapters=adapters)
        return found


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _bearer(header: str | None) -> Optional[str]:
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def parse_tenants(path: Path) -> tuple[dict, Optional[str]]:
    import tomllib

    if not path.exists():
        raise SwiftlikeError(f"--tenants {path}: no such file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SwiftlikeError(f"--tenants {path}: invalid TOML ({err})") from None
    unknown = set(data) - {"admin", "tenants"}
    if unknown:
        raise SwiftlikeError(f"--tenants {path}: unknown table(s) {', '.join(sorted(unknown))}; "
                             f"use [admin] and [tenants.NAME]")
    admin = None
    if "admin" in data:
        admin = _hash_field(data["admin"], path, "[admin]")
        if set(data["admin"]) - {"key_sha256"}:
            raise SwiftlikeError(f"--tenants {path}: [admin] takes only key_sha256")
    tenants, seen = {}, {}
    for name, entry in (data.get("tenants") or {}).items():
        where = f"[tenants.{name}]"
        if not isinstance(entry, dict):
            raise SwiftlikeError(f"--tenants {path}: {where} must be a table")
        extra = set(entry) - {"key_sha256", "adapters"}
        if extra:
            raise SwiftlikeError(f"--tenants {path}: {where} has unknown key(s) {', '.join(sorted(extra))}")
        digest = _hash_field(entry, path, where)
        if digest in seen or digest == admin:
            raise SwiftlikeError(f"--tenants {path}: {where} has the same key as "
                                 f"{seen.get(digest, '[admin]')}; give every tenant its own key")
        seen[digest] = where
        adapters = entry.get("adapters", [])
        if not isinstance(adapters, list) or not all(isinstance(a, str) for a in adapters):
            raise SwiftlikeError(f"--tenants {path}: {where} adapters must be a list of adapter names")
        tenants[name] = (digest, None if "*" in adapters else frozenset(adapters))
    if not tenants and admin is None:
        raise SwiftlikeError(f"--tenants {path}: no [admin] and no [tenants.NAME]: nobody could call the server")
    return tenants, admin


def _hash_field(entry: dict, path: Path, where: str) -> str:
    value = entry.get("key_sha256")
    if not isinstance(value, str) or not _HEX.fullmatch(value.strip().lower()):
        raise SwiftlikeError(f"--tenants {path}: {where} key_sha256 must be the 64-hex-digit sha256 of the key "
                             f"(e.g. `printf %s KEY | sha256sum`); keys themselves are never stored")
    return value.strip().lower()
