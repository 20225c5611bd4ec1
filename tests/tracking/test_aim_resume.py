"""A run killed with SIGKILL and resumed is one Aim run, each of its steps tracked once."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sce_sweeps.runtime.adapters.aim_repo import run_locked
from sce_sweeps.runtime.tracking import AimTracker
from tests.support import ROOT, read_metrics, run_cli, start_cli, tiny, wait_until
from tests.tracking.aim_read import read, series

EPOCHS = 3
STEPS_PER_EPOCH = 10  # 640 images, batch 64: train metrics at steps 0 | 10 | 20


def _state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)


def _tracked_after(seqs: Path, mtime_ns: int) -> bool:
    """A value was written into the run's metric database (its write-ahead log, which only
    writes append to) after ``mtime_ns``."""
    return any(p.stat().st_mtime_ns > mtime_ns for p in seqs.rglob("*.log"))


@pytest.mark.slow
def test_killed_after_epoch_one_and_resumed_is_one_aim_run(tmp_path: Path) -> None:
    run_dir, shared = tmp_path / "run", tmp_path / "shared"
    args = [
        *tiny(**{"trainer.epochs": EPOCHS, "dataset.train_samples": 640}),
        f"tracker.repo={shared}",
        "tracker.sync_interval_s=0",  # merged into the shared repo at every log, kill or not
        "tracker.system_metrics=false",  # nothing but the loop writes the run's metrics
        f"hydra.run.dir={run_dir}",
    ]
    proc = start_cli(*args)
    # Kill once epoch 1 is checkpointed and a step of epoch 2 is tracked (the run's metric
    # database changed after the checkpoint): that step will be tracked again on resume.
    ckpt, seqs = run_dir / "checkpoint.pt", run_dir / "aim" / ".aim" / "seqs" / "chunks"

    def tracked_after_epoch_1() -> bool:
        if not (ckpt.exists() and _state(run_dir)["epoch"] == 1):
            return False
        return _tracked_after(seqs, ckpt.stat().st_mtime_ns)

    wait_until(tracked_after_epoch_1, 300, "a step of epoch 2", proc=proc, interval=0.01)
    proc.kill()  # SIGKILL: no tracker.close, Aim's run lock stays behind
    proc.wait()
    run_hash = _state(run_dir)["tracker_run_hash"]
    assert run_hash

    before = read(shutil.copytree(run_dir / "aim", tmp_path / "before_resume"))
    assert len(before) == 1 and before[0]["hash"] == run_hash
    steps_before = series(before[0], "loss", "train")["steps"]
    assert 10 in steps_before  # tracked in epoch 2, before the kill

    resumed = run_cli(*args)
    assert "resuming from epoch 1" in resumed.stderr

    runs = read(shared)
    assert [r["hash"] for r in runs] == [run_hash]  # one Aim run: the same one
    (run,) = runs
    assert run["params"]["status"] == "completed"
    assert run["ended"] is not None
    ends = [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
    rows = read_metrics(run_dir)
    for name, key, subset in (("knn_top1", "knn_top1", "eval"), ("loss_epoch", "loss", "train")):
        got = series(run, name, subset)
        assert got["steps"] == ends, name  # epochs 1..N, once each
        assert got["epochs"] == [1, 2, 3], name
        assert got["values"] == pytest.approx([r[key] for r in rows]), name
    train = series(run, "loss", "train")
    assert train["steps"] == list(range(0, EPOCHS * STEPS_PER_EPOCH, 10))  # once each
    assert train["epochs"] == [1, 2, 3]
    # resuming is exact, so the re-tracked steps got the values tracked before the kill
    first = series(before[0], "loss", "train")
    assert train["values"][: len(first["values"])] == pytest.approx(first["values"])


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from sce_sweeps.runtime.tracking import AimTracker

run_repo, shared = Path(sys.argv[1]), Path(sys.argv[2])
tracker = AimTracker(run_repo, shared, None, {"hparams": {"x": 1}}, "exp", "job",
                     system_metrics=False, sync_interval_s=0)
for step in range(5):
    tracker.log({"x": float(step)}, step, 1, {"subset": "train"})
print(tracker.run_hash, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.e2e
def test_run_left_open_by_a_killed_process_is_continued(tmp_path: Path) -> None:
    """Killed before its first checkpoint (no hash to resume with): the next attempt takes
    over the run left in the run dir, lock included, and re-tracked steps replace old ones."""
    run_repo, shared = tmp_path / "run" / "aim", tmp_path / "shared"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(run_repo), str(shared)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    run_hash = proc.stdout.strip()
    assert run_locked(run_repo, run_hash)  # the crash left Aim's lock on the run

    tracker = AimTracker(
        run_repo, shared, None, {"hparams": {"x": 1}}, "exp", "job", system_metrics=False
    )
    assert tracker.run_hash == run_hash
    for step in range(3, 8):
        tracker.log({"x": 100.0 + step}, step, 2, {"subset": "train"})
    tracker.close("completed")

    (run,) = read(shared)
    assert run["hash"] == run_hash and run["params"]["status"] == "completed"
    x = series(run, "x", "train")
    assert x["steps"] == list(range(8))
    assert x["values"] == [0.0, 1.0, 2.0, 103.0, 104.0, 105.0, 106.0, 107.0]
    assert x["epochs"] == [1, 1, 1, 2, 2, 2, 2, 2]


@pytest.mark.e2e
def test_merge_cli_recovers_a_killed_run_that_never_resumed(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    run_repo = sweep / "0" / "aim"
    (sweep / "0" / ".hydra").mkdir(parents=True)  # what makes it a run dir
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("[]\n")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(run_repo), str(tmp_path / "x")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    run_hash = proc.stdout.strip()

    def merge(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "sce_sweeps.cli", "merge", str(sweep), *flags],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    refused = merge()  # the run is locked: its job may still be training
    assert refused.returncode == 1 and f"not merged: {run_hash}" in refused.stdout
    forced = merge("--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    (run,) = read(sweep / "aim")
    assert run["hash"] == run_hash
    assert series(run, "x", "train")["steps"] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_stopped_while_its_aim_repo_is_created_and_resumed_is_tracked(tmp_path: Path) -> None:
    """SIGTERM while the run's private repo is being made; the rerun of the same command
    (a resume) makes it again and tracks the run."""
    run_dir, shared = tmp_path / "run", tmp_path / "shared"
    args = [
        *tiny(**{"trainer.epochs": 1}),
        f"tracker.repo={shared}",
        "tracker.system_metrics=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = start_cli(*args)
    run_repo = run_dir / "aim"
    making = lambda: run_repo.is_dir() and any(run_repo.iterdir())  # noqa: E731
    wait_until(making, 300, "Aim to make the repo", proc=proc, interval=0.001)
    proc.terminate()
    proc.communicate()
    assert proc.returncode == -15
    assert not (run_dir / "result.json").exists()  # stopped before training

    resumed = run_cli(*args)
    assert "Aim cannot track" not in resumed.stdout + resumed.stderr
    (run,) = read(shared)
    assert run["params"]["status"] == "completed"
    assert series(run, "knn_top1", "eval")["steps"] == [8]
