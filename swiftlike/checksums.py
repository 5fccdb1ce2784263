"""sha256 of files, streamed (weights can be many GB)."""
import hashlib
from pathlib import Path


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(Path(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
