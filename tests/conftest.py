"""Fixtures shared across the test tree."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from tests.helpers import TINY, run_cli
from tests.slurm_fixtures import slurm_cluster  # noqa: F401  (session fixture)


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """A finished run of the CLI on the TINY overrides: its run dir and its process."""

    run_dir: Path
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """``python -m sce_sweeps *TINY tracker=none``, straight through, with its output piped;
    made once per session and only read by the tests (the reference of the resume tests)."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    return TinyRun(run_dir, run_cli(*TINY, "tracker=none", f"hydra.run.dir={run_dir}"))
