"""Multi-process jobs through the real launchers: ``trainer.devices=2`` is one job of two
processes (gloo on the CPU) on the local launcher, and one SLURM job of two tasks on the local
one-node cluster; both train the same tiny run to the same result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support import TINY, read_json, read_metrics, run_cli, run_in_process

DDP_RUN = [*TINY, "tracker=none", "trainer.devices=2", "hydra.launcher.poll_s=0.5"]


def _job(sweep_dir: Path, *launcher: str) -> Path:
    run_cli("-m", *DDP_RUN, *launcher, f"hydra.sweep.dir={sweep_dir}")
    manifest = read_json(sweep_dir / "manifest.json")
    (job,) = manifest["jobs"]
    assert job["state"] == "completed", job
    return sweep_dir / job["run_dir"]


def _task_logs(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in (sweep_dir / ".submitit").glob("*/*_log.err"))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("local")
    run_dir = _job(sweep_dir, "launcher=local")
    assert len(_task_logs(sweep_dir)) == 2  # one job, two processes
    return run_dir


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_local_launcher_runs_one_process_per_device_and_rank_0_writes(local_run):
    result = read_json(local_run / "result.json")
    assert result["status"] == "completed" and result["epochs"] == 2
    assert [r["epoch"] for r in read_metrics(local_run)] == [1, 2]  # one writer, one line each
    assert 10.0 < result["knn_top1"] <= 100.0


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_job_of_two_tasks_equals_two_local_processes(slurm_cluster, tmp_path, local_run):
    run_dir = _job(tmp_path, "launcher=slurm", "cluster=local", "hydra.launcher.mem_gb=2")
    logs = _task_logs(tmp_path)
    assert len(logs) == 2 and {name.split("_")[1] for name in logs} == {"0", "1"}, logs
    slurm, local = read_json(run_dir / "result.json"), read_json(local_run / "result.json")
    assert slurm["slurm_job_id"] and slurm["status"] == "completed"
    assert (slurm["loss"], slurm["knn_top1"]) == (local["loss"], local["knn_top1"])
    assert read_metrics(run_dir)[-1]["loss"] == read_metrics(local_run)[-1]["loss"]
    a, b = _weights(run_dir), _weights(local_run)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_dry_run_counts_gpu_hours_over_every_gpu_of_a_job(tmp_path):
    proc = run_in_process(
        "-m",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "launcher=slurm",
        "cluster=example_gpu",
        "hydra.launcher.dry_run=true",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "8 tasks, 8 GPUs" in proc.stdout
    assert "GPU-hours:  96 at most (1 job x 8 GPU x 12 h" in proc.stdout
