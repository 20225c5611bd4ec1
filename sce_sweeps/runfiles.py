"""The files of a run and of a sweep: names, layout, states, reading and atomic writing.

A sweep dir (``hydra.sweep.dir``) holds::

    manifest.json      the jobs, their overrides, config hashes, run dirs, job ids and states
                       (written by the launcher process only)
    .sweep.lock        held (flock) by the one launcher process that owns the sweep dir
    optuna.journal     the Optuna study, for searches
    aim/               the sweep's Aim repo
    <job num>/         one run dir per job (``hydra.sweep.subdir``), always inside the sweep dir

A run dir holds ``.hydra/`` (Hydra's config, hydra config and overrides), ``metrics.jsonl``
(one line per epoch), ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``,
``heartbeat.json`` (the last step and its time, while the run trains), ``result.json``
(written once the run ends) and ``error.log`` for a failed run.

:class:`RunState` is the one vocabulary of a run's state: results, the manifest, ``status``,
the analysis tables, the tracker and the Optuna trial table all use it.

JSON files and checkpoints are written to a temporary file in the same directory, synced, then
renamed over the old one, so a reader sees the old file or the new one, never half of one. A
writer killed before the rename leaves its temp file behind; the next writer of that file (and a
run's resume, for checkpoints) removes it (:func:`remove_stale_temps`). This module imports
neither torch nor pandas at import time: ``status`` answers in well under a second.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import math
import os
import re
import secrets
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

RESULT = "result.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
ERROR_LOG = "error.log"
HEARTBEAT = "heartbeat.json"
MANIFEST = "manifest.json"
LOCK = ".sweep.lock"
HYDRA_DIR = ".hydra"
RUN_MARKER = Path(HYDRA_DIR) / "overrides.yaml"  # what makes a directory a run dir


class RunState(str, Enum):
    """Where a run stands. A ``result.json`` holds one of the three final states.

    A ``str``: it equals, prints, formats and serialises (JSON) as its plain value, on every
    supported Python (``enum.StrEnum`` is 3.11+).
    """

    COMPLETED = "completed"  # trained every epoch; result.json has its metrics
    PRUNED = "pruned"  # stopped early by a pruner (Optuna); result.json says after which epoch
    FAILED = "failed"  # result.json says why, or its job ended without one
    RUNNING = "running"  # its process or SLURM job is running
    PENDING = "pending"  # queued (SLURM), or waiting for the launcher to start it
    NOT_SUBMITTED = "not submitted"  # the launcher could not submit it (SLURM refused)
    INTERRUPTED = "interrupted"  # no result and nothing running: a resume continues it

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


FINAL = (RunState.COMPLETED, RunState.PRUNED, RunState.FAILED)  # what result.json may say
FINISHED = (RunState.COMPLETED, RunState.PRUNED)  # a resume does not rerun these
LIVE = (RunState.RUNNING, RunState.PENDING)  # nor these, which are on their way
STATE_ORDER = (
    RunState.COMPLETED,
    RunState.PRUNED,
    RunState.RUNNING,
    RunState.PENDING,
    RunState.FAILED,
    RunState.NOT_SUBMITTED,
    RunState.INTERRUPTED,
)
# SLURM job states (squeue, sacct) of a job still on its way, and the run state each means.
SLURM_LIVE = {
    **dict.fromkeys(
        ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"),
        RunState.PENDING,
    ),
    **dict.fromkeys(
        ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"),
        RunState.RUNNING,
    ),
}


class RunFileError(Exception):
    """A run or sweep file that exists but cannot be used; the message names it."""


class CheckpointError(RunFileError):
    """No readable checkpoint to resume from although one was written."""


class DiskFullError(OSError):
    """The device filled up while a file was written; the message says how much is needed."""

    def __str__(self) -> str:
        return str(self.strerror)


class SweepDirBusyError(RunFileError):
    """Another process holds the sweep dir."""


def command_line(*args: str | Path) -> str:
    """A command as a user pastes it into a shell, each argument quoted where it must be:
    ``command_line("-m", "sce_sweeps.status", "my sweep")`` is
    ``python -m sce_sweeps.status 'my sweep'``."""
    return shlex.join(["python", *map(str, args)])


def now() -> str:
    """The local time as ``2026-11-30T09:46:03+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- atomic writes -----------------------------------------------------------------------------

HOST = socket.gethostname()
STALE_TEMP_AGE_S = 60.0  # an unlocked temp of another host's writer is stale once this old


def _temp_name(path: Path) -> re.Pattern[str]:
    """How a writer of ``path`` names its temp: ``.<name>.<host>.<pid>.<8 hex digits>.tmp``."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}\.tmp")


@contextlib.contextmanager
def atomic_write(path: Path, previous: Path | None = None, sync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` when the block ends: a temp file beside it,
    then synced (unless ``sync`` is False: a reader still never sees half a file, but a machine
    crash may leave an empty one) and renamed over it (after moving the file it replaces to
    ``previous``, if given). The temp is removed if the block raises; its writer holds an
    exclusive ``flock`` on it until the rename, which tells :func:`remove_stale_temps` that it
    is being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            with contextlib.suppress(OSError):  # a filesystem without locks: the pid tells
                fcntl.flock(f, fcntl.LOCK_EX)
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
            if previous is not None and path.exists():
                os.replace(path, previous)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files that writers of ``path`` killed before their rename left beside it;
    return them. A temp is stale when no process holds its ``flock`` and, for one of this host,
    its writer's pid is dead, or, for another host's, it is :data:`STALE_TEMP_AGE_S` old. A
    live writer's temp and files not named as :func:`atomic_write` names temps are never
    touched."""
    pattern, prefix, removed = _temp_name(path), f".{path.name}.", []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = entry.name.startswith(prefix) and pattern.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            tmp = Path(entry.path)
            if _remove_if_stale(tmp, match["host"], int(match["pid"])):
                removed.append(tmp)
    return removed


def _remove_if_stale(tmp: Path, host: str, pid: int) -> bool:
    if host == HOST and _alive(pid):
        return False  # writing it now (or its pid was taken since: kept until that ends)
    try:
        if host != HOST and time.time() - tmp.stat().st_mtime < STALE_TEMP_AGE_S:
            return False  # maybe created a moment ago, not locked yet
        fd = os.open(tmp, os.O_RDWR)  # NFS emulates flock with locks that need write access
    except OSError:  # gone meanwhile, or not ours to open
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive (e.g. on another host, or another pid space)
        except OSError:
            if host != HOST:
                return False  # no locks on this filesystem, no pid to ask: cannot tell
        tmp.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        return True
    return True


# --- JSON --------------------------------------------------------------------------------------


def write_json_atomic(data: Any, path: str | Path, sync: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so that a crash leaves the old file or the new one
    (``sync=False``: or, after a machine crash, maybe an empty one; see :func:`atomic_write`)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_write(Path(path), sync=sync) as f:
        f.write(text.encode())


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file.

    Raises:
        RunFileError: the file exists but is not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunFileError(f"{path}: corrupt {path.name} ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: corrupt {path.name} (not a JSON object)")
    return data


# --- result.json and metrics.jsonl -------------------------------------------------------------


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``result.json``; None when it has none (yet).

    Raises:
        RunFileError: the file is corrupt, or its ``status`` is not a final :class:`RunState`.
    """
    path = Path(run_dir) / RESULT
    result = read_json(path)
    if result is not None and result.get("status") not in {s.value for s in FINAL}:
        allowed = ", ".join(s.value for s in FINAL)
        raise RunFileError(
            f"{path}: corrupt {RESULT} (status {result.get('status')!r} is not one of {allowed})"
        )
    return result


def try_read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """:func:`read_result`, with a corrupt file counted as no result."""
    try:
        return read_result(run_dir)
    except RunFileError:
        return None


def write_result(run_dir: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``result.json`` (its ``status`` a final state), stamped ``finished_at``."""
    status = RunState(result["status"])
    if status not in FINAL:
        raise ValueError(f"result status must be one of {[s.value for s in FINAL]}: {status}")
    result = {**result, "status": status.value, "finished_at": now()}
    write_json_atomic(result, Path(run_dir) / RESULT)
    return result


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` rows; a partial last line (a run killed mid-write) is dropped.

    Raises:
        RunFileError: a line before the last is corrupt.
    """
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                break
            raise RunFileError(f"{path}: corrupt line {i + 1}") from None
    return rows


# --- heartbeat.json ----------------------------------------------------------------------------

STALLED = "stalled"  # how the reason of a job ended for lack of progress begins
BEAT_EVERY_S = 2.0  # a run rewrites its heartbeat at most this often
STALL_FLOOR_S = 300.0  # the default stall limit is never below this
STALL_GAPS = 5.0  # ... nor below this many times the longest interval between two beats
_beats: dict[str, dict[str, float]] = {}  # run dir -> this process's beat bookkeeping


def beat(run_dir: str | Path, step: int) -> None:
    """Record that the run in ``run_dir`` is making progress: its ``step``, the time, this
    process and the longest interval between two calls so far (a step, or an evaluation between
    two steps) in ``heartbeat.json``, rewritten atomically (renamed, not synced: a reader sees
    a whole file, and an unreadable one counts as no heartbeat) at most every
    :data:`BEAT_EVERY_S` seconds. A process that stops (SIGSTOP, a hung collective, a stuck
    filesystem) stops beating: :func:`stall` tells how long ago it last did."""
    key, clock = str(run_dir), time.monotonic()
    book = _beats.setdefault(key, {"called": clock, "written": -math.inf, "longest": 0.0})
    book["longest"] = max(book["longest"], clock - book["called"])
    book["called"] = clock
    if clock - book["written"] < BEAT_EVERY_S:
        return
    book["written"] = clock
    data = {"step": step, "time": time.time(), "at": now(), "pid": os.getpid(), "host": HOST}
    data["longest_gap_s"] = round(book["longest"], 3)
    try:  # no fsync: a step's time; a heartbeat that cannot be written (a full disk) never
        # fails the run: its next checkpoint says what is wrong
        write_json_atomic(data, Path(run_dir) / HEARTBEAT, sync=False)
    except OSError:
        pass


def clear_heartbeat(run_dir: str | Path) -> None:
    """Remove the heartbeat of an earlier attempt (a job about to start, or requeued): a run
    is only watched from its own first beat."""
    _beats.pop(str(run_dir), None)
    with contextlib.suppress(OSError):
        (Path(run_dir) / HEARTBEAT).unlink()


def read_heartbeat(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's last heartbeat; None when it has none (or an unreadable one)."""
    try:
        data = read_json(Path(run_dir) / HEARTBEAT)
    except RunFileError:
        return None
    return data if data and isinstance(data.get("time"), (int, float)) else None


def stall_limit(heartbeat: dict[str, Any], stall_after: float | None = None) -> float:
    """Seconds without a beat after which a run is stalled: ``stall_after`` if given, else
    :data:`STALL_GAPS` times the longest interval between two of its beats, at least
    :data:`STALL_FLOOR_S`."""
    if stall_after is not None:
        return float(stall_after)
    return max(STALL_FLOOR_S, STALL_GAPS * float(heartbeat.get("longest_gap_s") or 0.0))


@dataclass
class Stall:
    """A running job whose heartbeat is older than its limit."""

    age_s: float  # since its last beat
    limit_s: float
    step: int | None  # its last step
    pid: int | None
    host: str | None

    def __str__(self) -> str:
        return (
            f"{STALLED}: no progress for {self.age_s:.1f} s (limit {self.limit_s:g} s), "
            f"last step {self.step}"
        )


def stall(
    run_dir: str | Path, stall_after: float | None = None, at: float | None = None
) -> Stall | None:
    """The stall of the run in ``run_dir`` (as of ``at``, default now), or None when it beat
    within its limit (:func:`stall_limit`) or has not beaten yet."""
    heartbeat = read_heartbeat(run_dir)
    if heartbeat is None:
        return None
    age = (time.time() if at is None else at) - float(heartbeat["time"])
    limit = stall_limit(heartbeat, stall_after)
    if age <= limit:
        return None
    return Stall(age, limit, heartbeat.get("step"), heartbeat.get("pid"), heartbeat.get("host"))


# --- checkpoints -------------------------------------------------------------------------------


def _size_mb(nbytes: float) -> str:
    return f"{max(1, round(nbytes / 2**20))} MB"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically, keeping the checkpoint it replaces as
    ``checkpoint.prev.pt`` beside it: a crash, or a filesystem without atomic rename, leaves at
    least one readable checkpoint.

    Raises:
        DiskFullError: the device filled up; the file it replaces is untouched.
    """
    import torch

    path = Path(path)
    try:
        with atomic_write(path, previous=path.with_name(PREVIOUS_CHECKPOINT)) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as e:
        full = _disk_full(e, state, path)
        if full is not None:
            raise full from None
        raise


def _disk_full(error: BaseException, state: dict[str, Any], path: Path) -> DiskFullError | None:
    """A DiskFullError for ``error`` if writing ``state`` failed for lack of room.
    torch reports a full disk as ``RuntimeError: [enforce fail at inline_container.cc...]
    unexpected pos``; the size the checkpoint needs is measured by writing it to memory."""
    import torch

    free = shutil.disk_usage(path.parent).free
    buffer = io.BytesIO()
    torch.save(state, buffer)
    needed = buffer.tell()
    enospc = isinstance(error, OSError) and error.errno == errno.ENOSPC
    if not enospc and needed < free:
        return None
    message = (
        f"no space left on device while writing {path.name} (needs {_size_mb(needed)}, "
        f"{_size_mb(free) if free >= 2**20 else f'{free // 1024} kB'} free in {path.parent})"
    )
    return DiskFullError(errno.ENOSPC, message)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or the previous one (with a warning) when it is unreadable
    or missing; None when the run has never written one. The temp file of a checkpoint write
    killed before its rename is removed (:func:`remove_stale_temps`).

    Raises:
        CheckpointError: there are checkpoints but none is readable.
    """
    import torch

    path = Path(path)
    remove_stale_temps(path)
    candidates = [p for p in (path, path.with_name(PREVIOUS_CHECKPOINT)) if p.exists()]
    errors = []
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated: RuntimeError, EOFError, UnpicklingError...
            errors.append(f"{candidate.name} is unreadable ({type(e).__name__}: {e})")
            continue
        if candidate != path:
            why = errors[0] if errors else f"{path.name} is missing"
            print(
                f"sce_sweeps: warning: {why}; resuming from the previous checkpoint "
                f"{candidate} (epoch {state.get('epoch')})",
                file=sys.stderr,
                flush=True,
            )
        return state
    if errors:
        raise CheckpointError(
            f"cannot resume from {path.parent}: {'; '.join(errors)}; remove them to start over"
        )
    return None


# --- overrides and configs ---------------------------------------------------------------------


def parse_override(line: str) -> tuple[str, str | None]:
    """``"+loss.coeff=0.5"`` -> ``("loss.coeff", "0.5")``; a deletion ``~key`` gives
    ``("key", None)``, as does a line without ``=``."""
    key, sep, value = str(line).partition("=")
    deletion = key.startswith("~")
    key = key.lstrip("+~")
    return key, (value if sep and not deletion else None)


def override_dict(lines: list[str], hydra: bool = False) -> dict[str, str]:
    """The overrides that set a value, by key (``hydra.*`` keys only if ``hydra``)."""
    out = {}
    for line in lines:
        key, value = parse_override(line)
        if value is not None and (hydra or not key.startswith(("hydra.", "hydra/"))):
            out[key] = value
    return out


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"coeff": 0.5}}`` -> ``{"loss.coeff": 0.5}``; an empty mapping stays one
    value, lists stay lists."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- the sweep dir -----------------------------------------------------------------------------

_claims: dict[Path, int] = {}  # lock files this process holds, and their descriptors


def claim_sweep_dir(sweep_dir: str | Path) -> None:
    """Make this process the one launcher of ``sweep_dir`` for the rest of its life: an
    exclusive ``flock`` on ``<sweep dir>/.sweep.lock``, which the kernel drops when the process
    ends, however it ends. Claiming again from the same process is a no-op.

    Raises:
        SweepDirBusyError: another process holds it (its pid and host in the message).
    """
    path = Path(os.path.realpath(sweep_dir)) / LOCK  # one key however the dir is named
    if path in _claims:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SweepDirBusyError(
            f"{path.parent} is in use by another launch or resume ({holder}); "
            f"see `{command_line('-m', 'sce_sweeps.status', path.parent)}`"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now()}".encode())
    _claims[path] = fd


def release_sweep_dir(sweep_dir: str | Path) -> None:
    """Give up this process's claim on ``sweep_dir`` (if it has one)."""
    path = Path(os.path.realpath(sweep_dir)) / LOCK
    fd = _claims.pop(path, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def confined_run_dir(run_dir: str | Path, sweep_dir: str | Path) -> str | None:
    """Why ``run_dir`` may not be a run dir of ``sweep_dir`` (outside it, or the sweep dir
    itself), or None when it is fine."""
    run, sweep = Path(os.path.abspath(run_dir)), Path(os.path.abspath(sweep_dir))
    if run == sweep:
        return f"the run dir is the sweep dir {sweep}"
    if sweep not in run.parents:
        return f"the run dir {run} is outside the sweep dir {sweep}"
    return None


def relative_run_dir(run_dir: str | Path, sweep_dir: str | Path) -> str:
    """``run_dir`` relative to ``sweep_dir`` when it lies inside it, else absolute."""
    run_dir, sweep_dir = Path(run_dir).absolute(), Path(sweep_dir).absolute()
    try:
        return str(run_dir.relative_to(sweep_dir))
    except ValueError:
        return str(run_dir)


# --- manifest.json -----------------------------------------------------------------------------

MANIFEST_VERSION = 2


@dataclass
class Job:
    """One job of the sweep: a point of the grid (or an Optuna trial) and one run dir."""

    num: int  # hydra.job.num, the run dir's name under the sweep dir by default
    overrides: list[str]  # the job's overrides, as Hydra's sweeper made them
    config_hash: str  # sce_sweeps.config.config_hash of the job's composed config
    run_dir: str  # relative to the sweep dir
    state: str = RunState.PENDING.value  # as the launcher last saw it
    reason: str | None = None  # why it failed or was not submitted
    job_ids: list[str] = field(default_factory=list)  # SLURM job ids or local pids, oldest first
    log: str | None = None  # stderr of the latest submission
    objective: float | None = None  # the value the task function returned
    submitted_at: str | None = None
    finished_at: str | None = None


@dataclass
class Manifest:
    """The sweep: its name, the command that launched it, its launcher and its jobs.

    The launcher process is its only writer: it creates the manifest before submitting
    anything, records each job's SLURM job id (or local process id) as it is submitted and its
    state as it ends, and rewrites the whole file atomically each time. Jobs never write it;
    their own truth is the ``result.json`` of their run dir.
    """

    sweep_name: str
    launcher: str  # local | slurm
    command: str  # the command line, as typed (shell-quoted)
    argv: list[str]  # its arguments after the program, for `python -m sce_sweeps.resume`
    program: list[str]  # e.g. ["-m", "sce_sweeps"]
    cwd: str
    host: str
    pid: int  # of the launching process (last launch or resume)
    created_at: str
    updated_at: str = ""
    version: int = MANIFEST_VERSION
    resumes: int = 0
    # seconds without a heartbeat after which a running job is stalled (None: from its steps)
    stall_after: float | None = None
    jobs: list[Job] = field(default_factory=list)
    path: Path | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, sweep_dir: str | Path, sweep_name: str, launcher: str) -> Manifest:
        """A new manifest for ``sweep_dir``, recording this process's command line."""
        argv0 = Path(sys.argv[0])
        program = ["-m", argv0.parent.name] if argv0.name == "__main__.py" else [sys.argv[0]]
        argv = list(sys.argv[1:])
        return cls(
            sweep_name=sweep_name,
            launcher=launcher,
            command=shlex.join(["python", *program, *argv]),
            argv=argv,
            program=program,
            cwd=os.getcwd(),
            host=socket.gethostname(),
            pid=os.getpid(),
            created_at=now(),
            path=Path(sweep_dir) / MANIFEST,
        )

    @classmethod
    def load(cls, sweep_dir: str | Path) -> Manifest | None:
        """The manifest of ``sweep_dir``; None if it has none.

        Raises:
            RunFileError: the file is corrupt or of another version.
        """
        path = Path(sweep_dir) / MANIFEST
        data = read_json(path)
        if data is None:
            return None
        if data.get("version") != MANIFEST_VERSION:
            raise RunFileError(
                f"{path}: manifest version {data.get('version')}, this sce_sweeps reads "
                f"version {MANIFEST_VERSION}"
            )
        try:
            jobs = [Job(**j) for j in data.pop("jobs", [])]
            for job in jobs:
                RunState(job.state)
            own = {f.name for f in fields(cls)} - {"path", "jobs"}
            return cls(**{k: v for k, v in data.items() if k in own}, jobs=jobs, path=path)
        except (TypeError, ValueError) as e:
            raise RunFileError(f"{path}: corrupt manifest ({e})") from None

    @property
    def sweep_dir(self) -> Path:
        assert self.path is not None
        return self.path.parent

    def save(self) -> None:
        """Write the manifest atomically."""
        assert self.path is not None
        self.updated_at = now()
        # shallow copies: asdict's deep copy took 50 ms of a 1,000-job manifest's save
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        data["jobs"] = [dict(vars(job)) for job in self.jobs]
        write_json_atomic(data, self.path)

    def find(self, overrides: list[str]) -> Job | None:
        """The job with exactly these overrides, if the manifest has one."""
        return next((j for j in self.jobs if j.overrides == list(overrides)), None)

    def find_by_hash(self, config_hash: str | None) -> Job | None:
        """The only job with this config hash, if exactly one has it."""
        found = [j for j in self.jobs if config_hash and j.config_hash == config_hash]
        return found[0] if len(found) == 1 else None

    def by_num(self, num: int) -> Job | None:
        return next((j for j in self.jobs if j.num == num), None)

    def upsert(self, job: Job) -> Job:
        """Add ``job``, or replace the manifest's job with the same number."""
        self.jobs = [j for j in self.jobs if j.num != job.num] + [job]
        self.jobs.sort(key=lambda j: j.num)
        return job

    def run_dir(self, job: Job) -> Path:
        """The job's run dir as a path."""
        return self.sweep_dir / job.run_dir
