"""Small helpers the tabs share: errors worded as the CLI words them, choices from the registry and the store, and
CLI commands run as argument lists with their output streamed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

from ..registry import SwiftlikeError

CSS = """
.swl-sup { background: #b7f5c2; color: #05400f; border-radius: 2px; }
.swl-error { color: #b00020; font-weight: 600; }
"""


def error_line(err: BaseException) -> str:
    """One line, as the CLI prints it."""
    if isinstance(err, SwiftlikeError):
        return f"Error: {err}"
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"Error: {type(err).__name__}: {first}"


def model_types() -> list[str]:
    from ..registry import get_registry

    return sorted(get_registry().models.names())


def template_names() -> list[str]:
    from ..registry import get_registry

    return sorted(get_registry().templates.names())


def dataset_names() -> list[str]:
    from ..registry import get_registry

    return sorted(get_registry().datasets.names())


def tuner_names() -> list[str]:
    from ..registry import get_registry

    return sorted(get_registry().tuners.names())


def installed_adapters() -> list[str]:
    from ..adapters.store import list_adapters

    try:
        return [a.name for a in list_adapters()]
    except SwiftlikeError:
        return []


def check_dir(value: Optional[str], what: str, *, required: bool = True) -> Optional[str]:
    """A directory typed by the user, checked as click.Path(exists=True, file_okay=False) checks it."""
    if not value or not value.strip():
        if required:
            raise SwiftlikeError(f"{what}: give a directory")
        return None
    path = Path(value.strip()).expanduser()
    if not path.exists():
        raise SwiftlikeError(f"{what} {value}: no such directory")
    if not path.is_dir():
        raise SwiftlikeError(f"{what} {value}: is a file, not a directory")
    return str(path)


def check_checkpoint_ref(value: Optional[str], what: str = "--ckpt_dir") -> str:
    """A checkpoint as the CLI takes it: a directory, an installed adapter's name or a hub ref (HUB:ORG/NAME). A value
    that looks like a path must exist."""
    if not value or not value.strip():
        raise SwiftlikeError(f"{what}: give a checkpoint directory, an installed adapter's name or a hub ref")
    value = value.strip()
    looks_like_path = value.startswith(("/", ".", "~")) or ("/" in value and ":" not in value)
    if looks_like_path:
        return check_dir(value, what)
    return value


def stream_cli(argv: list[str], cwd: Optional[str] = None) -> Iterator[str]:
    """Run `swiftlike ...` (argv[0] == "swiftlike") as `python -m swiftlike ...` and yield its output so far after
    each line; the last yield ends with the exit status."""
    assert argv and argv[0] == "swiftlike"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "swiftlike", *argv[1:]], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, text=True, bufsize=1)
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n").rsplit("\r", 1)[-1])
        yield "\n".join(lines[-60:])
    code = proc.wait()
    lines.append(f"[exit {code}]")
    yield "\n".join(lines[-60:])
