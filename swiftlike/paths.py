"""Where swiftlike keeps its files: $SWIFTLIKE_HOME, default ~/.cache/swiftlike."""
import os
from pathlib import Path


def swiftlike_home() -> Path:
    return Path(os.environ.get("SWIFTLIKE_HOME") or Path.home() / ".cache" / "swiftlike")
