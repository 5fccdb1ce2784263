"""User settings in $SWIFTLIKE_HOME/config.toml (read on use, never cached: a test or a long server sees edits).

    require_signature = true   # adapter install and serve's adapter loads refuse unsigned or untrusted adapters
"""
from __future__ import annotations

from pathlib import Path

from .registry.errors import SwiftlikeError

CONFIG = "config.toml"
KEYS = {"require_signature": bool}


def config_path() -> Path:
    from .paths import swiftlike_home

    return swiftlike_home() / CONFIG


def load() -> dict:
    """The settings of config.toml ({} without one); an unknown key or a wrong type is an error naming the file."""
    import tomllib

    path = config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SwiftlikeError(f"{path}: invalid TOML ({err}); fix or delete it") from None
    for key, value in data.items():
        if key not in KEYS:
            raise SwiftlikeError(f"{path}: unknown setting {key!r} (known: {', '.join(KEYS)})")
        if not isinstance(value, KEYS[key]):
            raise SwiftlikeError(f"{path}: {key} must be {KEYS[key].__name__} (true or false), not {value!r}")
    return data


def require_signature() -> bool:
    return bool(load().get("require_signature", False))
