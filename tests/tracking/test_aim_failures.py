"""Tracking never kills training: an unusable repo is one warning, the run completes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import read_json, run_cli, tiny
from tests.tracking.aim_read import read, series

pytestmark = pytest.mark.slow


def _train(run_dir: Path, *overrides: str) -> str:
    proc = run_cli(*tiny(**{"trainer.epochs": 1}), *overrides, f"hydra.run.dir={run_dir}")
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed" and result["epochs"] == 1
    log = (run_dir / "app.log").read_text()
    assert log.count("tracking:") == 1, log  # one warning, however many merges failed
    return proc.stdout + proc.stderr


def test_unwritable_shared_repo_warns_and_keeps_the_run_in_the_run_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the repo's parent directory should be\n")
    out = _train(tmp_path / "run", f"tracker.repo={blocker / 'aim'}", "tracker.sync_interval_s=0")
    assert "not merged into" in out
    (run,) = read(tmp_path / "run" / "aim")  # nothing lost: merge it once the repo is fixed
    assert series(run, "knn_top1", "eval")["steps"] == [8]


def test_unusable_run_repo_warns_and_trains_untracked(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "aim").write_text("a file where the run's own Aim repo should be\n")
    out = _train(run_dir, f"tracker.repo={tmp_path / 'shared'}")
    assert "Aim cannot track this run" in out


def test_negative_sync_interval_fails_before_training(tmp_path: Path) -> None:
    proc = run_cli("tracker.sync_interval_s=-1", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2
    assert "tracker.sync_interval_s=-1" in proc.stderr and ">= 0" in proc.stderr
    assert not (tmp_path / "aim").exists()
