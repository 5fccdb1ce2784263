"""Multi-node launch with ms-swift's variables (NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE) and
`torchrun --nnodes`: two "nodes" are two launchers on 127.0.0.1 (gloo on the CPU) writing one shared output dir;
resume across a changed process count; refusals and a dead node end every launcher; bad variables are one line.

The tiny model trains on 8 rows at a global batch of 4 (2 processes x 2, or 1 x 4): an epoch is 2 steps."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from swiftlike.cli.launch import torchrun_arguments
from swiftlike.registry import SwiftlikeError

DATA = Path(__file__).parent / "data" / "identity.jsonl"
LAUNCH_VARS = ("NNODES", "NODE_RANK", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK",
               "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE")
STEPS = 6
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _common(tiny_model):
    # no dropout: with it the masks come from each process's own RNG stream, so runs at different process counts
    # differ even uninterrupted (see README, "Resuming on another number of processes")
    return ["sft", "--model", str(tiny_model), "--template", "smollm2", "--dataset", str(DATA), "--max_steps",
            str(STEPS), "--save_steps", "1", "--save_total_limit", "10", "--learning_rate", "5e-3", "--warmup_ratio",
            "0", "--lora_dropout", "0", "--logging_steps", "1", "--report_to", "none"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**launch) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", **{k: str(v) for k, v in launch.items()})
    return env


def _two_nodes(port: int, **kw) -> tuple[dict, dict]:
    both = dict(NNODES=2, NPROC_PER_NODE=1, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **kw)
    return _env(NODE_RANK=0, **both), _env(NODE_RANK=1, **both)


class Launch:
    """A launcher process in its own session (so a hung one and all its children can be ended), output in files."""

    def __init__(self, cmd, env, log: Path, cwd=None):
        self.log = log
        with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
            self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.log.with_suffix(".out").read_text()

    @property
    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text()


def _wait(*launches: Launch, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for launch in launches:
            codes.append(launch.proc.wait(timeout=max(deadline - time.monotonic(), 1)))
    except subprocess.TimeoutExpired:
        for launch in launches:
            if launch.proc.poll() is None:
                os.killpg(launch.proc.pid, signal.SIGKILL)
                launch.proc.wait()
        pytest.fail(f"launchers still running after {timeout:.0f} s: " + " | ".join(
            launch.stderr[-1500:] for launch in launches))
    return codes


def _run_dir(root: Path) -> Path:
    runs = list((root / "tiny-llama").iterdir())
    assert len(runs) == 1, runs  # one run directory for every node
    return runs[0]


def _logs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]


def _state(ckpt: Path) -> dict:
    return json.loads((ckpt / "trainer_state.json").read_text())


def _adapter(ckpt: Path) -> dict:
    return load_file(ckpt / "adapter_model.safetensors")


def _assert_same_adapter(a: Path, b: Path) -> None:
    # fp32 on the CPU: the same rows per step and the same token-mean gradient; what differs is summation order and
    # padding (batch 4 pads to its longest row, batch 2 to its own), ~1e-8 here against ~4e-3 moved since the resume
    x, y = _adapter(a), _adapter(b)
    assert x.keys() == y.keys()
    for key in x:
        torch.testing.assert_close(x[key], y[key], rtol=0, atol=1e-6, msg=key)


def _resume_from(src_root: Path, dst_root: Path, keep_up_to: int) -> Path:
    """A copy of a run as a kill right after checkpoint-<keep_up_to> leaves it (log rows past it included)."""
    shutil.copytree(src_root, dst_root)
    run = _run_dir(dst_root)
    for ckpt in run.glob("checkpoint-*"):
        if int(ckpt.name.split("-")[1]) > keep_up_to:
            shutil.rmtree(ckpt)
    for name in ("metrics.json", "loss.png"):
        (run / name).unlink()
    return run


# ------------------------------------------------------------------------------------------------ two nodes
@pytest.fixture(scope="module")
def two_nodes(tiny_model, tmp_path_factory):
    """Node 0 launched the ms-swift way (variables), node 1 with torchrun's own flags; one shared output dir."""
    tmp = tmp_path_factory.mktemp("two-nodes")
    root, port = tmp / "shared", _free_port()
    args = [*_common(tiny_model), "--per_device_train_batch_size", "2", "--output_dir", str(root)]
    env0, _ = _two_nodes(port)
    t0 = time.monotonic()
    node0 = Launch([sys.executable, "-m", "swiftlike", *args], env0, tmp / "node0")
    node1 = Launch([*TORCHRUN, "--nnodes", "2", "--node_rank", "1", "--master_addr", "127.0.0.1", "--master_port",
                    str(port), "--nproc_per_node", "1", "-m", "swiftlike", *args], _env(), tmp / "node1")
    codes = _wait(node0, node1, timeout=300)
    return {"root": root, "codes": codes, "nodes": (node0, node1), "wall_s": time.monotonic() - t0}


@pytest.mark.slow
def test_two_nodes_write_one_run(two_nodes):
    node0, node1 = two_nodes["nodes"]
    assert two_nodes["codes"] == [0, 0], node0.stderr[-3000:] + node1.stderr[-3000:]
    assert "swiftlike: torchrun --nnodes=2 --node_rank=0 --master_addr=127.0.0.1" in node0.stderr
    run = _run_dir(two_nodes["root"])
    # global rank 0 alone reports and writes: one banner, one args.json, one log, one set of checkpoints
    assert (node0.stdout + node1.stdout).count("swiftlike sft: tiny-llama") == 1
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["args.json", "logging.jsonl", "loss.png", "metrics.json"] + [f"checkpoint-{i}" for i in range(1, 7)])
    for step in range(1, STEPS + 1):
        ckpt = run / f"checkpoint-{step}"
        state = _state(ckpt)
        # 2 ranks x batch 2 = 4 of the 8 rows a step: half an epoch
        assert state["global_step"] == step and state["epoch"] == pytest.approx(step / 2)
        # every rank's RNG state is inside the checkpoint it renamed into place (the barrier before the rename)
        assert sorted(p.name for p in ckpt.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
        assert (ckpt / "swiftlike.json").exists()
    logs = _logs(run)
    assert [r["step"] for r in logs if "loss" in r] == list(range(1, STEPS + 1))
    assert sum("train_runtime" in r and "loss" not in r for r in logs) == 1
    losses = [r["loss"] for r in logs if "loss" in r]
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------------------------------ resume
@pytest.fixture(scope="module")
def resumed_on_one(two_nodes, tiny_model, tmp_path_factory):
    """The two-node run as a kill after checkpoint-3 (mid-epoch) leaves it, resumed by one process at batch 4."""
    assert two_nodes["codes"] == [0, 0]
    root = tmp_path_factory.mktemp("resume-2-to-1") / "shared"
    run = _resume_from(two_nodes["root"], root, keep_up_to=3)
    one = Launch([sys.executable, "-m", "swiftlike", *_common(tiny_model), "--per_device_train_batch_size", "4",
                  "--output_dir", str(root), "--resume_from_checkpoint", "last"], _env(), root.parent / "one")
    codes = _wait(one, timeout=240)
    return {"root": root, "run": run, "codes": codes, "launch": one}


def _assert_resumed(run: Path, reference: Path, rng_files: list[str]) -> None:
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, 7)]
    state = _state(run / "checkpoint-6")
    assert state["global_step"] == 6 and state["epoch"] == pytest.approx(3.0)  # the same global batch
    assert sorted(p.name for p in (run / "checkpoint-6").glob("rng_state*")) == rng_files
    logs = _logs(run)
    # the interrupted run's rows past the checkpoint went; the resumed run logged those steps once
    assert [r["step"] for r in logs if "loss" in r] == list(range(1, STEPS + 1))
    assert sum("train_runtime" in r and "loss" not in r for r in logs) == 1
    ref = {r["step"]: r["loss"] for r in _logs(reference) if "loss" in r}
    for r in logs:
        if "loss" in r:
            assert r["loss"] == pytest.approx(ref[r["step"]], abs=1e-4), r
    _assert_same_adapter(run / "checkpoint-6", reference / "checkpoint-6")
    moved = _adapter(run / "checkpoint-6")
    before = _adapter(run / "checkpoint-3")
    assert max((moved[k] - before[k]).abs().max().item() for k in moved) > 1e-3  # the comparison means something


@pytest.mark.slow
def test_resume_two_processes_on_one(resumed_on_one, two_nodes):
    """2 processes x batch 2 -> 1 process x batch 4 from a mid-epoch checkpoint: the step count and the data
    position continue, and the final adapter is the uninterrupted two-process run's."""
    one = resumed_on_one["launch"]
    assert resumed_on_one["codes"] == [0], one.stderr[-3000:]
    assert "global batch" not in one.stderr  # same global batch: no note
    run = resumed_on_one["run"]
    _assert_resumed(run, _run_dir(two_nodes["root"]), ["rng_state.pth"])
    assert _state(run / "checkpoint-4")["global_step"] == 4


@pytest.mark.slow
def test_resume_one_process_on_two(resumed_on_one, two_nodes, tiny_model, tmp_path):
    """1 process x batch 4 -> NPROC_PER_NODE=2 x batch 2, from checkpoint-5 (mid-epoch, written by one process)."""
    assert resumed_on_one["codes"] == [0]
    root = tmp_path / "shared"
    run = _resume_from(resumed_on_one["root"], root, keep_up_to=5)
    assert [p.name for p in (run / "checkpoint-5").glob("rng_state*")] == ["rng_state.pth"]
    two = Launch([sys.executable, "-m", "swiftlike", *_common(tiny_model), "--per_device_train_batch_size", "2",
                  "--output_dir", str(root), "--resume_from_checkpoint", "last"],
                 _env(NPROC_PER_NODE=2, MASTER_PORT=_free_port()), tmp_path / "two")
    assert _wait(two, timeout=240) == [0], two.stderr[-3000:]
    _assert_resumed(run, _run_dir(two_nodes["root"]), ["rng_state_0.pth", "rng_state_1.pth"])


def test_resume_note_on_another_global_batch(tmp_path):
    from swiftlike.train.arguments import SftArguments
    from swiftlike.train.multinode import checkpoint_processes, resume_batch_note

    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "args.json").write_text(json.dumps({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 1}))
    for rank in (0, 1):
        (ckpt / f"rng_state_{rank}.pth").write_bytes(b"")
    assert checkpoint_processes(ckpt) == 2
    same = [(1, 4, 1), (1, 2, 2), (2, 2, 1), (4, 1, 1)]
    for procs, batch, accum in same:
        args = SftArguments(per_device_train_batch_size=batch, gradient_accumulation_steps=accum)
        assert resume_batch_note(ckpt, args, procs) is None
    note = resume_batch_note(ckpt, SftArguments(per_device_train_batch_size=2), 1)
    assert note.startswith("note: checkpoint-3 was trained at a global batch of 4 (2 processes x 2 per device x 1 "
                           "accumulated), this run's is 2 (1 process x 2 per device x 1 accumulated)")
    assert "\n" not in note


def test_resumed_log_drops_rows_past_the_checkpoint(tmp_path):
    """logging.jsonl of a run killed after checkpoint-3 (rows up to step 5, the last cut mid-write), resumed: the
    rows the resumed run logs again go, once, before it logs them."""
    from transformers import TrainerState

    from swiftlike.train.trainer import JsonlLogger

    log = tmp_path / "logging.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)]
    log.write_text("".join(rows) + '{"step": 6, "lo')
    JsonlLogger(log).on_train_begin(None, TrainerState(global_step=3, is_world_process_zero=True), None)
    assert log.read_text() == "".join(rows[:3])
    JsonlLogger(log).on_train_begin(None, TrainerState(global_step=0, is_world_process_zero=True), None)
    assert log.read_text() == "".join(rows[:3])  # a new run (step 0) leaves the file alone
    JsonlLogger(log).on_train_begin(None, TrainerState(global_step=1, is_world_process_zero=False), None)
    assert log.read_text() == "".join(rows[:3])  # only global rank 0 writes


# ------------------------------------------------------------------------------------------------ failures
@pytest.mark.slow
def test_refusal_on_one_node_stops_both(tiny_model, tmp_path):
    """Node 1 cannot read its dataset: node 1 says why, node 0 stops too naming node 1's error (instead of waiting
    30 minutes for it in the process group), both launchers exit 1, and no run directory is left."""
    root = tmp_path / "shared"
    base = ["sft", "--model", str(tiny_model), "--template", "smollm2", "--report_to", "none", "--output_dir",
            str(root)]
    env0, env1 = _two_nodes(_free_port())
    node0 = Launch([sys.executable, "-m", "swiftlike", *base, "--dataset", str(DATA)], env0, tmp_path / "node0")
    node1 = Launch([sys.executable, "-m", "swiftlike", *base, "--dataset", str(tmp_path / "missing.jsonl")], env1,
                   tmp_path / "node1")
    assert _wait(node0, node1, timeout=240) == [1, 1]
    assert "Error: dataset" in node1.stderr and "missing.jsonl" in node1.stderr
    errors = [line for line in node0.stderr.splitlines() if line.startswith("Error:")]
    assert errors and errors[0].startswith("Error: rank 1 (node 1, ") and "missing.jsonl" in errors[0], errors
    assert not list(root.glob("*/v*"))


@pytest.mark.slow
def test_a_dead_node_ends_the_other(tiny_model, tmp_path):
    """Node 1's worker is killed (-9) mid-training: node 1's launcher and node 0's (whose next all-reduce loses its
    peer) both end, non-zero, within seconds; the checkpoints written so far stay complete."""
    psutil = pytest.importorskip("psutil")
    root = tmp_path / "shared"
    args = ["sft", "--model", str(tiny_model), "--template", "smollm2", "--dataset", str(DATA), "--max_steps", "400",
            "--save_steps", "2", "--per_device_train_batch_size", "2", "--report_to", "none", "--output_dir",
            str(root)]
    env0, env1 = _two_nodes(_free_port())
    node0 = Launch([sys.executable, "-m", "swiftlike", *args], env0, tmp_path / "node0")
    node1 = Launch([sys.executable, "-m", "swiftlike", *args], env1, tmp_path / "node1")
    deadline = time.monotonic() + 240
    while not list(root.glob("*/v*/checkpoint-2/swiftlike.json")):
        if time.monotonic() > deadline or node0.proc.poll() is not None or node1.proc.poll() is not None:
            _wait(node0, node1, timeout=1)
            pytest.fail("no checkpoint-2: " + node0.stderr[-2000:] + node1.stderr[-2000:])
        time.sleep(0.1)
    workers = psutil.Process(node1.proc.pid).children(recursive=True)  # the launcher became torchrun (exec)
    assert workers
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    codes = _wait(node1, node0, timeout=120)
    assert codes[0] != 0 and codes[1] != 0
    assert time.monotonic() - killed < 60
    assert not list(root.glob("*/v*/checkpoint-400"))
    for ckpt in root.glob("*/v*/checkpoint-*"):
        assert (ckpt / "swiftlike.json").exists() and len(list(ckpt.glob("rng_state_*.pth"))) == 2


# ------------------------------------------------------------------------------------------------ variables
def test_launch_variables_become_torchrun_flags():
    assert torchrun_arguments({}) is None
    assert torchrun_arguments({"NNODES": "1", "NPROC_PER_NODE": "1", "NODE_RANK": "0"}) is None
    assert torchrun_arguments({"NPROC_PER_NODE": "2", "NNODES": "2", "LOCAL_RANK": "0"}) is None  # a worker
    assert torchrun_arguments({"NPROC_PER_NODE": "4"}) == [
        "--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1", "--master_port=29500", "--nproc_per_node=4"]
    assert torchrun_arguments({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "23456",
                               "NPROC_PER_NODE": "8"}) == [
        "--nnodes=2", "--node_rank=1", "--master_addr=10.0.0.1", "--master_port=23456", "--nproc_per_node=8"]
    # node 0 may leave MASTER_ADDR out (it is the master); one process per node by default
    assert torchrun_arguments({"NNODES": "3", "NODE_RANK": "0"}) == [
        "--nnodes=3", "--node_rank=0", "--master_addr=127.0.0.1", "--master_port=29500", "--nproc_per_node=1"]


@pytest.mark.parametrize("env, names", [
    ({"NNODES": "two"}, "NNODES='two': must be an integer >= 1"),
    ({"NNODES": "0"}, "NNODES='0'"),
    ({"NPROC_PER_NODE": "-1"}, "NPROC_PER_NODE='-1': must be an integer >= 1"),
    ({"NNODES": "2"}, "NODE_RANK is not set"),
    ({"NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK='2': must be an integer from 0 to 1"),
    ({"NNODES": "2", "NODE_RANK": "x"}, "NODE_RANK='x'"),
    ({"NODE_RANK": "1"}, "NODE_RANK='1' but NNODES is not set"),
    ({"NNODES": "2", "NODE_RANK": "1"}, "MASTER_ADDR is not set: node 1 of 2"),
    ({"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "a b"}, "MASTER_ADDR='a b'"),
    ({"NPROC_PER_NODE": "2", "MASTER_PORT": "70000"}, "MASTER_PORT='70000': must be an integer from 1 to 65535"),
    ({"NPROC_PER_NODE": "2", "MASTER_PORT": "http"}, "MASTER_PORT='http'"),
])
def test_bad_launch_variables_are_one_line(env, names):
    with pytest.raises(SwiftlikeError) as err:
        torchrun_arguments(env)
    assert str(err.value).startswith(names) and "\n" not in str(err.value)


def test_bad_launch_variable_on_the_command_line(tmp_path):
    """Checked before anything heavy loads or any run directory is made: one line, exit 1."""
    proc = subprocess.run([sys.executable, "-m", "swiftlike", "sft", "--model", str(tmp_path / "m"), "--dataset",
                           str(DATA), "--output_dir", str(tmp_path / "out")], capture_output=True, text=True,
                          env=_env(NNODES="2", NODE_RANK="1"), timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: MASTER_ADDR is not set: node 1 of 2 must be given the address of the NODE_RANK=0 machine "
        "(e.g. MASTER_ADDR=10.0.0.1)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_shared_directory_and_refusals_between_processes(tmp_path):
    """The checks between processes, on two real gloo processes (torchrun, no model): a run directory one node cannot
    see, nodes resuming different checkpoints, and a refusal on one rank, each stop every rank with one line."""
    script = tmp_path / "probe.py"
    script.write_text('''
import json, os, sys
from pathlib import Path
from swiftlike.registry import SwiftlikeError
from swiftlike.train.multinode import agree, check_shared_output, join_process_group

rank = int(os.environ["RANK"])
home = Path(sys.argv[1]) / f"node{rank}"
home.mkdir()
os.chdir(home)  # a relative output dir is read from each node's working directory
state = join_process_group(None)
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = None
    except SwiftlikeError as err:
        results[name] = str(err)
if rank == 0:
    Path("out/run").mkdir(parents=True)
attempt("blind", lambda: check_shared_output(Path("out/run"), None, state, wait_s=0.5))
shared = Path(sys.argv[1]) / "node0" / "out" / "run"
attempt("seen", lambda: check_shared_output(shared, None, state, wait_s=0.5))
attempt("resume", lambda: check_shared_output(shared, shared / f"checkpoint-{2 + rank}", state, wait_s=0.5))
def refuse():
    if rank == 1:
        raise SwiftlikeError("--dataset x.jsonl: no such file")
attempt("refusal", lambda: agree(refuse, state))
print("RESULT " + json.dumps(results))
''')
    port = _free_port()
    nodes = [Launch([*TORCHRUN, "--nnodes", "2", "--node_rank", str(rank), "--master_addr", "127.0.0.1",
                     "--master_port", str(port), "--nproc_per_node", "1", str(script), str(tmp_path)],
                    _env(), tmp_path / f"probe{rank}") for rank in (0, 1)]
    assert _wait(*nodes, timeout=180) == [0, 0], nodes[0].stderr[-2000:] + nodes[1].stderr[-2000:]
    results = [json.loads(next(line for line in n.stdout.splitlines() if line.startswith("RESULT "))[7:])
               for n in nodes]
    host = socket.gethostname()
    for r in results:
        assert r["blind"] == (f"the run directory out/run, made on node 0 ({host}), is not visible on node 1 "
                              f"({host}): every node must see the same --output_dir: put it on storage all nodes "
                              f"share (NFS, Lustre, a cluster file system) mounted at the same path, and give it as "
                              f"an absolute path (a relative one is read from each node's working directory)")
        assert r["seen"] is None
        assert r["resume"].startswith("--resume_from_checkpoint found different checkpoints on different nodes (")
        assert "checkpoint-2" in r["resume"] and "checkpoint-3" in r["resume"]
    assert results[1]["refusal"] == "--dataset x.jsonl: no such file"  # its own line
    assert results[0]["refusal"] == f"rank 1 (node 1, {host}) stopped: --dataset x.jsonl: no such file"
