"""A failed Aim merge is recorded in the run's result, shown by status with the command that
retries it, and that command can be run any number of times."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sce_sweeps.runtime.record import Manifest
from sce_sweeps.runtime.status import format_table, sweep_status
from sce_sweeps.runtime.tracking import create_repo
from tests.support import ROOT, read_json, run_cli, tiny
from tests.tracking.aim_read import read

pytestmark = pytest.mark.slow


def _merge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sce_sweeps.cli", "merge", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_failed_merge_is_recorded_shown_and_retried_idempotently(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_dir = sweep / "0"
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the shared repo's parent directory should be\n")
    repo = blocker / "aim"
    args = ("-m", *tiny(**{"trainer.epochs": 1}), f"tracker.repo={repo}")
    proc = run_cli(*args, f"hydra.sweep.dir={sweep}")
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed"
    assert result["tracking"].startswith(f"not merged into {repo}")
    summary = [line for line in proc.stderr.splitlines() if "1 job: 1 completed" in line]
    assert len(summary) == 1 and "tracking failed for 1 job (#0)" in summary[0], proc.stderr

    manifest = Manifest.load(sweep)
    table = format_table(manifest, sweep_status(manifest))
    command = table.split("merge it with `")[1].split("`")[0]
    assert f"not merged into {repo}" in table

    blocker.unlink()  # the repo's place is fixed: the command shown now merges the run
    argv = shlex.split(command)[4:]  # after `python -m sce_sweeps.cli merge`
    first, again = _merge(*argv), _merge(*argv)
    for proc in (first, again):  # the same answer each time, the run counted once
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.splitlines()[0] == f"merged 1 run into {repo}"
    assert "tracking" not in read_json(run_dir / "result.json")
    assert "[tracking:" not in format_table(manifest, sweep_status(manifest))
    (run,) = read(repo)
    assert run["params"]["status"] == "completed"


def test_merge_counts_each_run_once_and_skips_other_repos(tmp_path: Path) -> None:
    """A sweep merged into a repo elsewhere: the sweep's own repo is not a run's."""
    sweep = tmp_path / "sweep"
    run_cli("-m", *tiny(**{"trainer.epochs": 1}), "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert len(read(sweep / "aim")) == 2
    elsewhere = tmp_path / "elsewhere" / "aim"
    elsewhere.mkdir(parents=True)
    (elsewhere / ".aim-new-host-99999").mkdir()  # left by a merge killed while creating it
    proc = _merge(str(sweep), "--repo", str(elsewhere))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == f"merged 2 runs into {elsewhere}"
    assert len(read(elsewhere)) == 2
    assert not list(elsewhere.glob(".aim-new-*"))


def test_repo_creation_leaves_no_temp(tmp_path: Path) -> None:
    create_repo(tmp_path)
    assert (tmp_path / ".aim" / "VERSION").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [".aim"]
