"""Sizes: parse `--max_kv_memory` / `--max_body_size` and measure what the machine has (formatting sizes and giving
freed memory back live with the engine, in swiftlike.infer.memory)."""
from __future__ import annotations

import re

from ..infer.memory import human
from ..registry import SwiftlikeError

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4,
          "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4,
          "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text, flag: str) -> int:
    """'8GiB', '500MB', '2g', '1048576' -> bytes (K/M/G and KiB/MiB/GiB are powers of 1024, KB/MB/GB of 1000)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE.fullmatch(str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise SwiftlikeError(f"--{flag} {text!r}: use a size such as 8GiB, 500MB or 1048576 (bytes)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise SwiftlikeError(f"--{flag} {text!r}: must be more than 0 bytes")
    return value


def available_memory(device=None) -> int:
    """Bytes the KV cache could still take: free memory of a CUDA device, else the RAM the kernel reports as
    available (MemAvailable: free plus reclaimable page cache)."""
    import torch

    if device is not None and getattr(device, "type", "cpu") == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 1024 ** 3  # unknown platform: a conservative guess


def kv_budget(text: str, device=None) -> tuple[int, str]:
    """(bytes, how it was chosen) for --max_kv_memory: a size, a share of the available memory, or auto (50%)."""
    text = (text or "auto").strip()
    share = 50.0 if text.lower() == "auto" else None
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise SwiftlikeError(f"--max_kv_memory {text!r}: a share must be between 0% and 100%")
    if share is None:
        return parse_size(text, "max_kv_memory"), text
    free = available_memory(device)
    return int(free * share / 100), f"{share:g}% of {human(free)} available"
