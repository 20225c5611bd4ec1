"""Fixtures shared across the test tree."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support import (
    FAILING_POINT,
    TINY,
    run_cli,
    slurm_cluster,  # noqa: F401  (session fixture)
)


def _private_progress_lock() -> None:
    """A child forked from the test process gets a progress-bar lock of its own: tqdm's is a
    multiprocessing lock shared with the parent, and the fault suite SIGKILLs forked children,
    one of which could die holding it (tests/faults/test_forked_children.py)."""
    if "tqdm" in sys.modules:
        sys.modules["tqdm"].tqdm.set_lock(threading.RLock())


os.register_at_fork(after_in_child=_private_progress_lock)


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """A finished run or sweep of the CLI on the TINY overrides: its dir and its process."""

    run_dir: Path
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """``python -m sce_sweeps *TINY tracker=none``, straight through, with its output piped;
    made once per session and only read by the tests (the reference of the resume tests)."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    return TinyRun(run_dir, run_cli(*TINY, "tracker=none", f"hydra.run.dir={run_dir}"))


@pytest.fixture(scope="session")
def failing_point_sweep(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A local multirun of two one-epoch TINY jobs, one at a time, the second diverging
    (lr 1e12: NaN loss); its sweep dir and its process (output piped; exit status 1, for
    the failed job). Only read by the tests."""
    sweep_dir = tmp_path_factory.mktemp("failing_point") / "sweep"
    proc = run_cli("-m", *FAILING_POINT, f"hydra.sweep.dir={sweep_dir}", check=False)
    return TinyRun(sweep_dir, proc)
