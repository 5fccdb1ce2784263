"""One run directory for every process of a distributed run, on one machine or several.

Like ms-swift, swiftlike writes a multi-node run into one directory that every node sees (shared storage at the same
path): global rank 0 makes it and writes the checkpoints, logging.jsonl and args.json; every rank adds its RNG state
to each checkpoint and resumes from the same one. A node that cannot see the directory would train and then save into
nothing, or resume from another checkpoint than the rest, so this is checked once, before the model loads."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ..registry import SwiftlikeError


def check_shared_output(out: Path, resume: Path | None, state, *, wait_s: float = 10.0) -> None:
    """Every process sees `out` (made by rank 0; a few seconds allowed for shared file systems to show it) and
    resolved --resume_from_checkpoint to the same checkpoint; otherwise every process stops with the same line."""
    if state.num_processes <= 1:
        return
    import torch.distributed as dist

    deadline = time.monotonic() + wait_s
    while not out.is_dir() and time.monotonic() < deadline:
        time.sleep(0.25)
    mine = {"node": os.environ.get("GROUP_RANK", "0"), "host": socket.gethostname(), "sees": out.is_dir(),
            "resume": str(resume) if resume is not None else None}
    everyone = [None] * state.num_processes
    dist.all_gather_object(everyone, mine)
    shared = ("every node must see the same --output_dir: put it on storage all nodes share (NFS, Lustre, a "
              "cluster file system) mounted at the same path")
    if not out.is_absolute():
        shared += ", and give it as an absolute path (a relative one is read from each node's working directory)"
    blind = sorted({(p["node"], p["host"]) for p in everyone if not p["sees"]})
    if blind:
        where = ", ".join(f"node {node} ({host})" for node, host in blind)
        raise SwiftlikeError(f"the run directory {out}, made on node {everyone[0]['node']} ({everyone[0]['host']}), "
                             f"is not visible on {where}: {shared}")
    resumes = sorted({p["resume"] or "a new run" for p in everyone})
    if len(resumes) > 1:
        raise SwiftlikeError(f"--resume_from_checkpoint found different checkpoints on different nodes "
                             f"({'; '.join(resumes)}): {shared}")
