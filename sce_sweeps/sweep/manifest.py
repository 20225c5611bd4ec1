"""``manifest.json``: what a sweep is made of and where each of its jobs stands.

The launcher process is its only writer: it creates the manifest before submitting anything,
records each job's SLURM job id (or local process id) as it is submitted and its state as it
finishes, and rewrites the whole file atomically each time. Jobs never write it, so many jobs
finishing at once cannot corrupt it; their own truth is the ``result.json`` of their run dir,
which :mod:`sce_sweeps.sweep.status` reads together with SLURM's accounting.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

MANIFEST = "manifest.json"
VERSION = 1

# Job states as the launcher last saw them.
PENDING = "pending"  # planned, not submitted yet
SUBMITTED = "submitted"  # queued (SLURM) or started (local)
RUNNING = "running"
COMPLETED = "completed"  # the run's result.json says completed
FAILED = "failed"  # result.json says failed, or the job died without one
PRUNED = "pruned"  # stopped early by a pruner (Optuna)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Job:
    """One job of the sweep: a point of the grid (or an Optuna trial) and one run dir."""

    num: int  # hydra.job.num, the run dir's name under the sweep dir by default
    overrides: list[str]  # the job's overrides, as Hydra's sweeper made them
    config_hash: str  # sce_sweeps.config.config_hash of the job's composed config
    run_dir: str  # relative to the sweep dir when inside it
    state: str = PENDING
    reason: str | None = None  # why it failed
    job_ids: list[str] = field(default_factory=list)  # SLURM job ids or local pids, oldest first
    log: str | None = None  # stderr of the latest submission
    objective: float | None = None  # the value the task function returned (kNN top-1)
    submitted_at: str | None = None
    finished_at: str | None = None


@dataclass
class Manifest:
    """The sweep: its name, the command that launched it, its launcher and its jobs."""

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
    version: int = VERSION
    resumes: int = 0
    jobs: list[Job] = field(default_factory=list)
    path: Path | None = field(default=None, repr=False, compare=False)

    @classmethod
    def create(cls, sweep_dir: Path, sweep_name: str, launcher: str) -> Manifest:
        """A new manifest for ``sweep_dir``, recording this process's command line."""
        program, argv = command_line()
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
        """The manifest of ``sweep_dir``, or None if it has none."""
        path = Path(sweep_dir) / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        known = {f.name for f in fields(Job)}
        jobs = [Job(**{k: v for k, v in j.items() if k in known}) for j in data.pop("jobs", [])]
        known = {f.name for f in fields(cls)} - {"path", "jobs"}
        return cls(**{k: v for k, v in data.items() if k in known}, jobs=jobs, path=path)

    @property
    def sweep_dir(self) -> Path:
        assert self.path is not None
        return self.path.parent

    def save(self) -> None:
        """Write the manifest atomically (temporary file + rename)."""
        assert self.path is not None
        self.updated_at = now()
        data = asdict(self)
        data.pop("path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path)

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
        """The job's run dir as a path (relative ones are under the sweep dir)."""
        return self.sweep_dir / job.run_dir


def relative_run_dir(run_dir: str | Path, sweep_dir: str | Path) -> str:
    """``run_dir`` relative to ``sweep_dir`` when it lies inside it, else absolute."""
    run_dir, sweep_dir = Path(run_dir).absolute(), Path(sweep_dir).absolute()
    try:
        return str(run_dir.relative_to(sweep_dir))
    except ValueError:
        return str(run_dir)


def command_line() -> tuple[list[str], list[str]]:
    """(program, arguments) of this process: ``(["-m", "sce_sweeps"], [...])`` for the app."""
    argv0 = Path(sys.argv[0])
    program = ["-m", argv0.parent.name] if argv0.name == "__main__.py" else [sys.argv[0]]
    return program, list(sys.argv[1:])
