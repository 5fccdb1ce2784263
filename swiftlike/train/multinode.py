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


def join_process_group(device: str | None):
    """Under a torchrun launch (WORLD_SIZE > 1), the process group joined now — before anything can refuse the
    arguments, so that a refusal can be shared (see `agree`); None for a single process. The same state the recipe
    and the Trainer use (accelerate's PartialState, cpu as the Trainer's use_cpu will be)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world <= 1:
        return None
    import atexit

    import torch
    from accelerate import PartialState

    atexit.unregister(_close_group_at_exit)  # once, however many runs this process makes
    atexit.register(_close_group_at_exit)
    return PartialState(cpu=not torch.cuda.is_available() or device == "cpu")


def _close_group_at_exit() -> None:
    """Whatever way the process ends (a refusal, an error, a script that never called leave_process_group), close the
    group before the interpreter goes: exiting with gloo's threads running aborts ("terminate called without an
    active exception", exit -6 — seen on rank 0 of a two-node probe in CI). No barrier: the others may be gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - exiting anyway; the abort is what this avoids
            pass


def leave_process_group(state) -> None:
    """After a finished run: wait for every process, then close the group. A process that exits with gloo's threads
    still running can abort on the way out ("terminate called without an active exception", exit -6: seen once on
    rank 1 after its last step), which torchrun reports as a failed run. The state is reset, so a later run in the
    same process joins afresh."""
    if state is None:
        return
    from accelerate.state import AcceleratorState

    state.wait_for_everyone()
    state.destroy_process_group()
    AcceleratorState._reset_state(reset_partial_state=True)


def agree(phase, state) -> None:
    """Run one start-up phase (arguments, model files, data); in a distributed run a refusal on any process stops
    every process with that process's line. Without this the others would go on to their next collective and wait
    there for the process that left until the process-group timeout (30 minutes)."""
    try:
        phase()
        failure = None
    except Exception as err:  # noqa: BLE001 - shared, then raised again below
        failure = err
    if state is not None and state.num_processes > 1:
        import torch.distributed as dist

        report = None
        if failure is not None:
            text = str(failure).strip()
            line = text if isinstance(failure, SwiftlikeError) else f"{type(failure).__name__}: " + (
                text.splitlines()[0] if text else "")
            report = {"rank": state.process_index, "node": os.environ.get("GROUP_RANK", "0"),
                      "host": socket.gethostname(), "error": line}
        everyone = [None] * state.num_processes
        dist.all_gather_object(everyone, report)
        first = next((r for r in everyone if r), None)
        if failure is None and first is not None:
            raise SwiftlikeError(f"rank {first['rank']} (node {first['node']}, {first['host']}) stopped: "
                                 f"{first['error']}")
    if failure is not None:
        raise failure


def check_shared_output(out: Path, resume: Path | None, state, *, wait_s: float = 5.0) -> None:
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


def checkpoint_processes(ckpt: Path) -> int:
    """How many processes trained a checkpoint: the Trainer saves rng_state.pth alone, rng_state_<rank>.pth from each
    rank of a distributed run."""
    return len(list(Path(ckpt).glob("rng_state_*.pth"))) or 1


def resume_batch_note(ckpt: Path, args, num_processes: int) -> str | None:
    """A note when --resume_from_checkpoint continues at another global batch (per-device batch x processes x
    gradient accumulation) than the checkpoint was trained at: the Trainer counts the steps done in the new batch,
    so the rows the rest of the run sees, and the epoch, are no longer the interrupted run's. None when they match
    (any process count: 2 processes x batch 2 resume as 1 x batch 4 or 1 x batch 2 x accumulation 2)."""
    import json

    try:
        saved = json.loads((Path(ckpt) / "args.json").read_text())
        was = (checkpoint_processes(ckpt), int(saved["per_device_train_batch_size"]),
               int(saved["gradient_accumulation_steps"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = (num_processes, args.per_device_train_batch_size, args.gradient_accumulation_steps)
    if was[0] * was[1] * was[2] == now[0] * now[1] * now[2]:
        return None

    def spell(t):
        procs = f"{t[0]} process{'es' if t[0] > 1 else ''}"
        return f"{t[0] * t[1] * t[2]} ({procs} x {t[1]} per device x {t[2]} accumulated)"

    return (f"note: {Path(ckpt).name} was trained at a global batch of {spell(was)}, this run's is {spell(now)}: "
            f"training continues from its step, but the steps left are counted in the new batch, so the rows they "
            f"see differ from the interrupted run's; keep per-device batch x processes x accumulation at "
            f"{was[0] * was[1] * was[2]} to continue it as it was")
