"""ms-swift's launcher variables for the training commands: `NPROC_PER_NODE=2 swiftlike sft …` on one machine, and

    NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC_PER_NODE=8 swiftlike sft …   # node 0
    NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC_PER_NODE=8 swiftlike sft …   # node 1

re-run the command under torchrun (`torch.distributed.run --nnodes --node_rank --master_addr --master_port
--nproc_per_node`). The variables are checked here, before anything heavy is imported: a bad value is one line
naming the variable. Nothing here imports torch."""
from __future__ import annotations

import os
import sys

from ..registry.errors import SwiftlikeError

DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = 29500  # torchrun's own default
VARIABLES = ("NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT")


def _int(env, name: str, default: int, *, low: int, high: int | None = None, hint: str = "") -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        span = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
        raise SwiftlikeError(f"{name}={raw!r}: must be {span}{hint}")
    return value


def torchrun_arguments(env=None) -> list[str] | None:
    """The torchrun options that NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_ADDR and MASTER_PORT ask for, or None
    when this process should train itself: one process on one node, or already a torchrun worker (LOCAL_RANK set).
    Raises SwiftlikeError naming the variable when a value is unusable."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:  # launched by torchrun (ours or the user's): its variables rule
        return None
    nnodes = _int(env, "NNODES", 1, low=1, hint=" (the number of machines taking part)")
    nproc = _int(env, "NPROC_PER_NODE", 1, low=1, hint=" (processes on this machine, usually one per GPU)")
    others = "1 on the other" if nnodes == 2 else f"1 to {nnodes - 1} on the others"
    if nnodes > 1 and not (env.get("NODE_RANK") or "").strip():
        raise SwiftlikeError(f"NODE_RANK is not set: with NNODES={nnodes} every machine needs its own NODE_RANK "
                             f"(0 on the machine at MASTER_ADDR, {others})")
    if nnodes == 1 and "NNODES" not in env and (env.get("NODE_RANK") or "0").strip() != "0":
        raise SwiftlikeError(f"NODE_RANK={env['NODE_RANK']!r} but NNODES is not set: set NNODES to the number of "
                             f"machines taking part")
    node_rank = _int(env, "NODE_RANK", 0, low=0, high=nnodes - 1,
                     hint=f" (this machine's index: 0 on the machine at MASTER_ADDR, {others})" if nnodes > 1
                     else " (NNODES=1: a single machine is node 0)")
    if nnodes == 1 and nproc == 1:
        return None
    addr = (env.get("MASTER_ADDR") or "").strip()
    if not addr:
        if node_rank > 0:
            raise SwiftlikeError(f"MASTER_ADDR is not set: node {node_rank} of {nnodes} must be given the address of "
                                 f"the NODE_RANK=0 machine (e.g. MASTER_ADDR=10.0.0.1)")
        addr = DEFAULT_MASTER_ADDR
    elif any(c.isspace() for c in addr):
        raise SwiftlikeError(f"MASTER_ADDR={env['MASTER_ADDR']!r}: must be one host name or IP address")
    port = _int(env, "MASTER_PORT", DEFAULT_MASTER_PORT, low=1, high=65535,
                hint=" (a free TCP port on the NODE_RANK=0 machine, the same on every machine)")
    return [f"--nnodes={nnodes}", f"--node_rank={node_rank}", f"--master_addr={addr}", f"--master_port={port}",
            f"--nproc_per_node={nproc}"]


def relaunch_under_torchrun(argv: list[str] | None = None) -> None:
    """If the launcher variables ask for more than this one process, become torchrun running this same command
    (`python -m torch.distributed.run … -m swiftlike ARGV`); otherwise return and let the caller train.

    On POSIX the process is replaced (exec), so the shell, a job scheduler or a test sees torchrun itself: its exit
    status (non-zero as soon as a worker fails: torchrun then stops the others on this node) and its signals, with no
    parent left behind to wait on it or to orphan it."""
    options = torchrun_arguments()
    if options is None:
        return
    argv = sys.argv[1:] if argv is None else argv
    cmd = [sys.executable, "-m", "torch.distributed.run", *options, "-m", "swiftlike", *argv]
    print("swiftlike: torchrun " + " ".join(options), file=sys.stderr, flush=True)
    sys.stdout.flush()
    if os.name == "posix":
        os.execv(sys.executable, cmd)
    import subprocess

    raise SystemExit(subprocess.call(cmd))
