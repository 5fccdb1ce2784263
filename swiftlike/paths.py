"""Where swiftlike keeps its files: $SWIFTLIKE_HOME, default ~/.cache/swiftlike."""
import contextlib
import os
from pathlib import Path


def swiftlike_home() -> Path:
    return Path(os.environ.get("SWIFTLIKE_HOME") or Path.home() / ".cache" / "swiftlike")


def replace_dir(staged: Path, out: Path) -> None:
    """Put the complete directory `staged` at `out` (same filesystem): an existing `out` is moved aside, not deleted,
    until the new one is in place, so a crash leaves the old or the new, never neither."""
    import shutil

    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-old-{os.getpid()}-{staged.name[-8:]}")
        out.rename(old)
    staged.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path, mode: int, busy: str, wait_s: float):
    """An exclusive flock on `path` (created with `mode`), waited for up to `wait_s` seconds, then SwiftlikeError(busy).
    The kernel releases a flock when its holder dies, so a kill -9 never leaves it held. No-op where there is no fcntl."""
    import time

    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        deadline = time.monotonic() + wait_s
        while fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    from .registry import SwiftlikeError

                    raise SwiftlikeError(busy) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the flock
