"""Where a single run's shared Aim repo goes: beside the runs, never in the directory the
command was started from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import tiny
from tests.tracking.aim_read import read, series


@pytest.mark.slow
def test_single_run_stored_elsewhere_keeps_its_aim_repo_beside_it(tmp_path: Path) -> None:
    start, elsewhere = tmp_path / "started_here", tmp_path / "elsewhere"
    start.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sce_sweeps",
            *tiny(**{"trainer.epochs": 1}),
            f"hydra.run.dir={elsewhere / 'run'}",
        ],
        cwd=start,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(start.iterdir()) == []  # nothing where the command was started
    (run,) = read(elsewhere / "aim")
    assert series(run, "knn_top1", "eval")["steps"] == [8]


@pytest.mark.parametrize(
    ("template", "run_dir", "root"),
    [
        (
            "sweeps/runs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${sce_uid:}",
            "sweeps/runs/d/t",
            "sweeps/runs",
        ),
        ("/scratch/me/${now:%H}", "/scratch/me/08", "/scratch/me"),
        ("/scratch/me/run1", "/scratch/me/run1", "/scratch/me"),  # a fixed dir: beside it
        ("${oc.env:SCRATCH}/runs/${now:%H}", "/s/runs/08", "/s/runs"),  # nothing fixed
        ("/a/${now:%Y}/${now:%m}", "/b/2026/12", "/b/2026"),  # elsewhere after all
    ],
)
def test_runs_root_is_the_fixed_part_of_the_run_dir(template: str, run_dir: str, root: str) -> None:
    from sce_sweeps.runtime.tracking import runs_root

    base = Path("/home/me/project")
    assert runs_root(template, base, base / run_dir) == base / root
