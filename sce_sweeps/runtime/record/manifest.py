"""A sweep's ``manifest.json`` and the claim of its sweep dir by the one process writing it."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from sce_sweeps.runtime.record.files import (
    HOST,
    RunFileError,
    read_json,
    try_lock,
    write_json_atomic,
)
from sce_sweeps.runtime.record.layout import LOCK, MANIFEST, command_line, now
from sce_sweeps.runtime.record.states import RunState


class SweepDirBusyError(RunFileError):
    """Another process holds the sweep dir."""


_claims: dict[Path, int] = {}  # lock files this process holds, and their descriptors


def claim_sweep_dir(sweep_dir: str | Path) -> None:
    """Make this process the one launcher of ``sweep_dir`` while it lives (SweepDirBusyError)."""
    path = Path(os.path.realpath(sweep_dir)) / LOCK  # one key however the dir is named
    if path in _claims:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not try_lock(fd):
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise SweepDirBusyError(
            f"{path.parent} is in use by another launch or resume ({holder}); "
            f"see `{command_line('-m', 'sce_sweeps.cli', 'status', path.parent)}`"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {HOST} since {now()}".encode())
    _claims[path] = fd


def release_sweep_dir(sweep_dir: str | Path) -> None:
    """Give up this process's claim on ``sweep_dir`` (if it has one)."""
    path = Path(os.path.realpath(sweep_dir)) / LOCK
    fd = _claims.pop(path, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


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
    """The sweep: its name, the command that launched it, its launcher and its jobs. The
    launcher process alone writes it; a job's own truth is its run dir's ``result.json``."""

    sweep_name: str
    launcher: str  # local | slurm
    command: str  # the command line, as typed (shell-quoted)
    argv: list[str]  # its arguments after the program, for `python -m sce_sweeps.cli resume`
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
    metric: str | None = None  # the app's primary metric (its config's record.metric)
    mode: str = "max"  # whether a higher (max) or lower (min) metric is better
    controller: str | None = None  # SLURM job id of a detached sweep's controller
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
            command=command_line(*program, *argv),
            argv=argv,
            program=program,
            cwd=os.getcwd(),
            host=HOST,
            pid=os.getpid(),
            created_at=now(),
            path=Path(sweep_dir) / MANIFEST,
        )

    @classmethod
    def load(cls, sweep_dir: str | Path) -> Manifest | None:
        """The manifest of ``sweep_dir`` if any; a RunFileError if corrupt or of another version."""
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

    def run_dir(self, job: Job) -> Path:
        """The job's run dir as a path."""
        return self.sweep_dir / job.run_dir
