"""The names of the files of a sweep dir and of a run dir (see docs/sweeps.md)."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

RESULT = "result.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
ERROR_LOG = "error.log"
HEARTBEAT = "heartbeat.json"
LEDGER = "ledger.json"
MANIFEST = "manifest.json"
LOCK = ".sweep.lock"
HYDRA_DIR = ".hydra"
RUN_MARKER = Path(HYDRA_DIR) / "overrides.yaml"  # what makes a directory a run dir


def command_line(*args: str | Path) -> str:
    """``python <args>`` as a user pastes it into a shell, each argument quoted where needed."""
    return shlex.join(["python", *map(str, args)])


def now() -> str:
    """The local time as ``2026-11-30T09:46:03+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def confined_run_dir(run_dir: str | Path, sweep_dir: str | Path) -> str | None:
    """Why ``run_dir`` may not be a run dir of ``sweep_dir`` (outside it, or itself), if so."""
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
