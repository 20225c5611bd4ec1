"""The names and layout of a sweep dir and of a run dir.

A sweep dir (``hydra.sweep.dir``) holds::

    manifest.json      the jobs, their overrides, config hashes, run dirs, job ids and states
                       (written by the launcher process only)
    .sweep.lock        locked by the one launcher process that owns the sweep dir
    optuna.journal     the Optuna study, for searches
    aim/               the sweep's Aim repo
    <job num>/         one run dir per job (``hydra.sweep.subdir``), always inside the sweep dir

A run dir holds ``.hydra/`` (Hydra's config, hydra config and overrides), ``metrics.jsonl``
(one line per epoch), ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``,
``heartbeat.json`` (the last step and its time, while the run trains), ``result.json``
(written once the run ends) and ``error.log`` for a failed run.
"""

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
MANIFEST = "manifest.json"
LOCK = ".sweep.lock"
HYDRA_DIR = ".hydra"
RUN_MARKER = Path(HYDRA_DIR) / "overrides.yaml"  # what makes a directory a run dir


def command_line(*args: str | Path) -> str:
    """A command as a user pastes it into a shell, each argument quoted where it must be:
    ``command_line("-m", "sce_sweeps.cli", "status", "my sweep")`` is
    ``python -m sce_sweeps.cli status 'my sweep'``."""
    return shlex.join(["python", *map(str, args)])


def now() -> str:
    """The local time as ``2026-11-30T09:46:03+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
