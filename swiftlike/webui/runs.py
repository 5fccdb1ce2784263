"""Training runs started from the UI: the `swiftlike sft|pt|rlhf` argument list built from the form, the process
that runs it (its own session: closing the browser or restarting the UI does not stop it), and the runs found again
from the job records and the output directories. No training code here: the CLI trains."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..paths import swiftlike_home
from ..registry import SwiftlikeError

STAGES = ("sft", "pt", "rlhf")
_PROCS: dict[str, subprocess.Popen] = {}  # jobs this process started (their exit codes are read here)


def arguments_class(stage: str):
    from ..train.arguments import PtArguments, SftArguments
    from ..train.rlhf.arguments import RlhfArguments

    try:
        return {"sft": SftArguments, "pt": PtArguments, "rlhf": RlhfArguments}[stage]
    except KeyError:
        raise SwiftlikeError(f"stage {stage!r}: one of {', '.join(STAGES)}") from None


def defaults(stage: str) -> dict:
    """The stage's option defaults (what the form starts from)."""
    cls = arguments_class(stage)
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1 else repr(value)
    return str(value)


def build_command(stage: str, options: dict, extra: str = "") -> list[str]:
    """`swiftlike STAGE --opt value …`: the options that differ from the stage's defaults (unknown names refused),
    then `extra` (more flags as typed, split like a shell would split them; never run by a shell)."""
    cls = arguments_class(stage)
    names = {f.name for f in dataclasses.fields(cls)}
    base = defaults(stage)
    argv = ["swiftlike", stage]
    for name, value in options.items():
        if name not in names:
            raise SwiftlikeError(f"{stage}: no option --{name}")
        if value is None or value == "" or value == []:
            continue
        if name in base and _same(base[name], value):
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{name}", *(_text(v) for v in value)]
        else:
            argv += [f"--{name}", _text(value)]
    try:
        argv += shlex.split(extra or "")
    except ValueError as err:
        raise SwiftlikeError(f"extra options: {err}") from None
    return argv


def _same(default, value) -> bool:
    if isinstance(default, (list, tuple)) or isinstance(value, (list, tuple)):
        return list(default or []) == list(value or [])
    if isinstance(default, bool) or isinstance(value, bool):
        return default == value
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return float(default) == float(value)
    return default == value


def display(argv: list[str]) -> str:
    """The command as a person copies it into a terminal."""
    return shlex.join(argv)


# ------------------------------------------------------------------------------------------------------ jobs
def jobs_root() -> Path:
    return swiftlike_home() / "webui" / "jobs"


@dataclass
class Job:
    id: str
    argv: list
    cwd: str
    output_dir: str
    stage: str
    started_at: float
    pid: Optional[int] = None
    stopped: bool = False
    returncode: Optional[int] = None
    extra: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return jobs_root() / self.id

    @property
    def log_path(self) -> Path:
        return self.dir / "log.txt"

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / ".job.json.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        os.replace(tmp, self.dir / "job.json")

    @classmethod
    def load(cls, directory: Path) -> "Job":
        data = json.loads((Path(directory) / "job.json").read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def log(self, limit: int = 200_000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        proc = _PROCS.get(self.id)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return True
            if self.returncode is None:
                self.returncode = code
                self.save()
            return False
        return self.pid is not None and _pid_runs_swiftlike(self.pid)

    def status(self) -> str:
        """running, finished, stopped or failed."""
        if self.alive():
            return "stopping" if self.stopped else "running"
        if self.stopped:
            return "stopped"
        if self.returncode == 0 or re.search(rf"swiftlike {re.escape(self.stage)} done", self.log()):
            return "finished"
        return "failed"

    def run_dir(self) -> Optional[Path]:
        """The run directory the banner named (`…; output DIR`)."""
        found = re.findall(r"; output (.+?)\s*$", self.log(), flags=re.M)
        if not found:
            return None
        path = Path(found[-1])
        return path if path.is_absolute() else Path(self.cwd) / path

    def error(self) -> Optional[str]:
        """The CLI's last `Error: ...`, with the indented lines it lists under it (bad rows as `file:line`)."""
        lines = self.log().splitlines()
        starts = [i for i, ln in enumerate(lines) if ln.startswith("Error: ")]
        if not starts:
            return None
        out = [lines[starts[-1]]]
        for ln in lines[starts[-1] + 1:starts[-1] + 51]:
            if not ln.startswith((" ", "\t")):
                break
            out.append(ln.rstrip())
        return "\n".join(out)


def _pid_runs_swiftlike(pid: int) -> bool:
    """A pid from an earlier UI process: alive, and still a swiftlike command (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has finished
        return False
    return b"swiftlike" in b" ".join(cmdline)


def start(argv: list[str], *, cwd: str, output_dir: str) -> Job:
    """Run `argv` (["swiftlike", STAGE, ...]) as `python -m swiftlike ...` in its own session, output to the job's
    log. The child outlives the UI."""
    if not argv or argv[0] != "swiftlike" or len(argv) < 2 or argv[1] not in STAGES:
        raise SwiftlikeError(f"not a training command: {display(argv)}")
    job = Job(id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}", argv=list(argv), cwd=str(cwd),
              output_dir=output_dir, stage=argv[1], started_at=time.time())
    job.dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(job.log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "swiftlike", *argv[1:]], cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    _PROCS[job.id] = proc
    job.pid = proc.pid
    job.save()
    return job


def stop(job: Job, grace_s: float = 60.0) -> None:
    """Graceful: SIGINT (the run ends as after Ctrl-C; checkpoints are written to .staging and renamed, so the last
    complete one stays), then SIGTERM and SIGKILL if it is still there after `grace_s`."""
    if not job.alive():
        return
    job.stopped = True
    job.save()
    _signal(job.pid, signal.SIGINT)

    def escalate():
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            deadline = time.time() + wait
            while time.time() < deadline:
                if not job.alive():
                    return
                time.sleep(0.5)
            _signal(job.pid, sig)

    threading.Thread(target=escalate, daemon=True).start()


def _signal(pid, sig) -> None:
    try:
        os.killpg(pid, sig)  # its own session: the group is the run and its data-loader workers
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def jobs() -> list[Job]:
    root = jobs_root()
    found = []
    if root.is_dir():
        for d in sorted(root.iterdir(), reverse=True):
            if (d / "job.json").is_file():
                try:
                    found.append(Job.load(d))
                except (OSError, ValueError, TypeError):
                    continue
    return found


# ------------------------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """A run as the Train tab lists it: a job started here, or a run directory found on disk."""
    key: str
    label: str
    status: str
    run_dir: Optional[Path]
    job: Optional[Job] = None


def runs(output_dirs=("output",), cwd: Optional[str] = None) -> list[Run]:
    """Jobs (newest first), then the run directories under the output dirs that no job names."""
    out, seen = [], set()
    for job in jobs():
        rd = job.run_dir()
        if rd is not None:
            seen.add(rd.resolve())
        status = job.status()
        name = rd.name if rd else job.id
        out.append(Run(f"job:{job.id}", f"{name} · {job.stage} · {status}", status, rd, job))
    base = Path(cwd or os.getcwd())
    roots = {((base / d) if not Path(d).is_absolute() else Path(d)).resolve() for d in output_dirs if d}
    for root in sorted(roots):
        candidates = [root, *root.glob("*"), *root.glob("*/*")] if root.is_dir() else []
        for d in sorted(candidates, key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True):
            if not (d / "args.json").is_file() or not d.is_dir() or d.resolve() in seen:
                continue
            seen.add(d.resolve())
            status = "finished" if checkpoints(d) else "no checkpoint"
            out.append(Run(f"dir:{d}", f"{d.name} · {_stage_of(d)} · {status}", status, d))
    return out


def _stage_of(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "args.json").read_text()).get("stage", "?")
    except (OSError, ValueError):
        return "?"


def find(key: str, output_dirs=("output",), cwd=None) -> Optional[Run]:
    for run in runs(output_dirs, cwd):
        if run.key == key:
            return run
    return None


def checkpoints(run_dir: Optional[Path]) -> list[Path]:
    """Complete checkpoints (with their manifest), oldest first."""
    if run_dir is None or not Path(run_dir).is_dir():
        return []
    found = [p.parent for p in Path(run_dir).glob("checkpoint-*/swiftlike.json")]
    return sorted(found, key=lambda p: int(re.sub(r"\D", "", p.name.split("-")[-1]) or 0))


def log_rows(run_dir: Optional[Path]) -> list[dict]:
    if run_dir is None:
        return []
    try:
        text = (Path(run_dir) / "logging.jsonl").read_text()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return rows


@dataclass
class Progress:
    step: int
    total: Optional[int]
    elapsed_s: float
    eta_s: Optional[float]
    loss: Optional[float]


_TQDM = re.compile(r"(\d+)/(\d+) \[")


def progress(run: Run) -> Progress:
    rows = log_rows(run.run_dir)
    step = max((int(r.get("step", 0)) for r in rows), default=0)
    total = None
    if run.job is not None:
        bars = _TQDM.findall(run.job.log()[-20000:])
        if bars:
            step = max(step, int(bars[-1][0]))
            total = int(bars[-1][1])
    if total is None and run.run_dir is not None:
        try:
            max_steps = int(json.loads((run.run_dir / "args.json").read_text()).get("max_steps") or -1)
            total = max_steps if max_steps > 0 else None
        except (OSError, ValueError, TypeError):
            pass
    if run.job is not None:
        end = time.time() if run.status in ("running", "stopping") else _mtime(run.job.log_path, time.time())
        elapsed = max(0.0, end - run.job.started_at)
    else:
        elapsed = float(next((r["train_runtime"] for r in rows if "train_runtime" in r), 0.0))
    eta = None
    if run.status == "running" and total and step:
        eta = elapsed / step * max(total - step, 0)
    losses = [r["loss"] for r in rows if "loss" in r]
    return Progress(step, total, elapsed, eta, losses[-1] if losses else None)


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def loss_points(run_dir: Optional[Path]) -> list[tuple[int, float, str]]:
    """(step, loss, "train"|"eval") from logging.jsonl."""
    pts = []
    for r in log_rows(run_dir):
        if "loss" in r:
            pts.append((int(r["step"]), float(r["loss"]), "train"))
        if "eval_loss" in r:
            pts.append((int(r["step"]), float(r["eval_loss"]), "eval"))
    return pts


def tail(text: str, lines: int = 40) -> str:
    """The last lines of a log, with tqdm's carriage-return redraws collapsed to their final state."""
    out = [ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in text.split("\n")]
    out = [ln for ln in out if ln.strip()]
    return "\n".join(out[-lines:])
