"""Memory of the generation engine: sizes for messages, and giving freed memory back to the operating system."""
from __future__ import annotations


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


_libc = None


def release_memory(device=None) -> None:
    """Hand freed memory back to the OS: the CUDA caching allocator's blocks, and glibc's free heap pages (without
    this a freed KV cache stays in the process's RSS)."""
    global _libc
    import torch

    if device is not None and getattr(device, "type", "cpu") == "cuda":
        torch.cuda.empty_cache()
        return
    if _libc is None:
        try:
            import ctypes
            import ctypes.util

            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim  # noqa: B018 (glibc only)
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
