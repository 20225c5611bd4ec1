"""Real sweeps of tiny SCE runs: in parallel local processes, and as real jobs on the local
one-node SLURM cluster (scripts/slurm_cluster.sh): one job per grid value, a requeued job that
resumes from its checkpoint, a failed grid point that status reports and resume reruns."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from sce_sweeps.runtime.status import main as status_main
from tests.support import ROOT, TINY, read_json, requeue_job_0, run_cli, run_in_process

pytestmark = pytest.mark.slow


def sweep(sweep_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m sce_sweeps -m +sweep=lambda_ablation`` of tiny runs, 1 seed, in sweep_dir."""
    return run_cli(
        "-m",
        "+sweep=lambda_ablation",
        *TINY,
        "tracker=none",
        "seed=0",
        "hydra.launcher.poll_s=0.5",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
        check=check,
    )


def status(sweep_dir: Path) -> tuple[int, dict]:
    proc = run_in_process(str(sweep_dir), "--json", main=status_main)
    return proc.returncode, json.loads(proc.stdout)


def manifest(sweep_dir: Path) -> dict:
    return read_json(sweep_dir / "manifest.json")


def _time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").timestamp()


def test_local_sweep_runs_jobs_in_parallel_processes(tmp_path):
    start = time.monotonic()
    sweep(tmp_path, "loss.coeff=0,0.25,0.5,1", "launcher=local", "hydra.launcher.max_parallel=2")
    wall = time.monotonic() - start
    jobs = manifest(tmp_path)["jobs"]
    assert [j["state"] for j in jobs] == ["completed"] * 4
    results = [read_json(tmp_path / j["run_dir"] / "result.json") for j in jobs]
    assert [r["status"] for r in results] == ["completed"] * 4
    assert [r["config_hash"] for r in results] == [j["config_hash"] for j in jobs]
    pids = [j["job_ids"][0] for j in jobs]
    assert len(set(pids)) == 4  # one process per job
    # two at a time: job 1 started before job 0 finished
    assert _time(jobs[1]["submitted_at"]) <= _time(jobs[0]["finished_at"])
    code, report = status(tmp_path)
    assert code == 0 and {j["state"] for j in report["jobs"]} == {"completed"}
    trials = sum(r["wall_time_s"] for r in results)
    print(
        f"\nlocal sweep of 4 tiny runs: wall {wall:.1f} s, trials' wall_time_s sum {trials:.1f} s"
    )


# --- SLURM ------------------------------------------------------------------------------------


def sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0] if out else ""


def sacct_states(job_ids: list[str], want: str, timeout: float = 60) -> list[str]:
    """The jobs' states in SLURM's accounting, once all are ``want`` or after ``timeout``
    seconds (slurmctld reports a job's end to slurmdbd a moment after the job ends)."""
    deadline = time.monotonic() + timeout
    while True:
        states = [sacct_state(i) for i in job_ids]
        if all(s == want for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(1)


@pytest.mark.slurm
def test_slurm_lambda_sweep_is_one_real_job_per_value(slurm_cluster, tmp_path):
    proc = sweep(tmp_path, "loss.coeff=0,0.5,1", "launcher=slurm", "cluster=local")
    assert "submitted 3 SLURM jobs" in proc.stderr
    jobs = manifest(tmp_path)["jobs"]
    assert manifest(tmp_path)["launcher"] == "slurm"
    ids = [j["job_ids"][0] for j in jobs]
    assert len(set(ids)) == 3
    assert sacct_states(ids, "COMPLETED") == ["COMPLETED"] * 3, ids
    for job, coeff in zip(jobs, ("0", "0.5", "1")):
        assert f"loss.coeff={coeff}" in job["overrides"] and job["state"] == "completed"
        result = read_json(tmp_path / job["run_dir"] / "result.json")
        assert result["status"] == "completed" and result["slurm_job_id"]
        assert result["config_hash"] == job["config_hash"]
    code, report = status(tmp_path)
    assert code == 0 and [j["state"] for j in report["jobs"]] == ["completed"] * 3


@pytest.mark.slurm
def test_scontrol_requeue_resumes_from_checkpoint_with_the_same_result(slurm_cluster, tmp_path):
    longer = ["loss.coeff=0.5", "trainer.epochs=6"]
    reference: dict = {}

    def uninterrupted() -> None:  # the same run, straight through, meanwhile
        run_cli(*TINY, *longer, "tracker=none", "seed=0", f"hydra.run.dir={tmp_path / 'ref'}")
        reference.update(read_json(tmp_path / "ref" / "result.json"))

    thread = threading.Thread(target=uninterrupted)
    thread.start()
    sweep_dir = tmp_path / "sweep"
    args = [*TINY, "tracker=none", "seed=0", "hydra.launcher.poll_s=0.5", *longer]
    cmd = [sys.executable, "-m", "sce_sweeps", "-m", "+sweep=lambda_ablation", *args]
    cmd += ["launcher=slurm", "cluster=local", f"hydra.sweep.dir={sweep_dir}"]
    returncode, err, job_id = requeue_job_0(cmd, sweep_dir)  # the job trains: epoch 1 saved
    assert returncode == 0, err[-3000:]
    thread.join(timeout=240)
    job = manifest(sweep_dir)["jobs"][0]
    log = Path(job["log"]).read_text()
    assert "DUE TO JOB REQUEUE" in log and "resuming from epoch" in log, log[-3000:]
    assert "SIGTERM: stopped after saving a checkpoint" in log  # did not race SIGKILL
    assert job["job_ids"] == [job_id]  # the same SLURM job, requeued
    result = read_json(sweep_dir / "0" / "result.json")
    assert result["status"] == "completed" and result["epochs"] == 6
    assert result["knn_top1"] == reference["knn_top1"] and result["loss"] == reference["loss"]


@pytest.mark.slurm
def test_failed_point_is_reported_and_only_it_is_rerun(slurm_cluster, tmp_path):
    grid = ["loss.coeff=0.5", "optim.lr=0.06,1e12", "trainer.epochs=1", "optim.warmup_epochs=0"]
    proc = sweep(tmp_path, *grid, "launcher=slurm", "cluster=local", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]  # it finishes despite the NaN, says so
    code, report = status(tmp_path)
    assert code == 1
    ok, bad = report["jobs"]
    assert ok["state"] == "completed" and bad["state"] == "failed"
    assert "NonFiniteLossError: loss is nan" in bad["reason"]
    done_result = (tmp_path / ok["run_dir"] / "result.json").read_text()
    done_mtime = (tmp_path / ok["run_dir"] / "result.json").stat().st_mtime_ns
    failed_at = read_json(tmp_path / bad["run_dir"] / "result.json")["finished_at"]
    time.sleep(1)  # finished_at has a 1 s resolution

    proc = subprocess.run(
        [sys.executable, "-m", "sce_sweeps.cli", "resume", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # the rerun job fails again
    assert "1 job to run, 1 skipped" in proc.stderr and "submitted 1 SLURM job:" in proc.stderr
    jobs = manifest(tmp_path)["jobs"]
    assert len(jobs[0]["job_ids"]) == 1 and len(jobs[1]["job_ids"]) == 2  # only it resubmitted
    assert manifest(tmp_path)["resumes"] == 1
    assert (tmp_path / ok["run_dir"] / "result.json").read_text() == done_result
    assert (tmp_path / ok["run_dir"] / "result.json").stat().st_mtime_ns == done_mtime
    rerun = read_json(tmp_path / bad["run_dir"] / "result.json")
    assert rerun["finished_at"] != failed_at and rerun["status"] == "failed"
