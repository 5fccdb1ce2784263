"""Where swiftlike keeps its files: $SWIFTLIKE_HOME, default ~/.cache/swiftlike."""
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
