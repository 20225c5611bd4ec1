"""A job that stops making progress (a hung NCCL collective, a stuck filesystem; here one job
of a 3-job sweep frozen with SIGSTOP) is flagged as stalled by status and the progress line,
with its age; with ``hydra.launcher.stalled=kill`` the launcher ends it as failed, reason
"stalled", its checkpoint kept, and a resume goes on from that checkpoint. Both launchers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sce_sweeps.runtime.record import HEARTBEAT
from sce_sweeps.runtime.status import main as status_main
from tests.support import ROOT, TINY, read_json, run_in_process, wait_until

pytestmark = pytest.mark.slow

STALL_AFTER = 10  # seconds without a heartbeat: stalled (the beats come every 2 s)
FROZEN = 1  # the job frozen


def start_sweep(sweep_dir: Path, log: Path, *overrides: str) -> subprocess.Popen:
    """A 3-job sweep of TINY runs, all at once, 4 epochs each, checkpointing every epoch."""
    cmd = [sys.executable, "-m", "sce_sweeps", "-m", *TINY, "tracker=none", "loss.coeff=0,0.5,1"]
    cmd += ["trainer.epochs=4", "trainer.checkpoint_every=1", "hydra.launcher.poll_s=0.5"]
    cmd += [f"hydra.launcher.stall_after={STALL_AFTER}", f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        return subprocess.Popen(
            [*cmd, *overrides], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env
        )


def checkpoint_epoch(run_dir: Path) -> int:
    try:
        state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError):
        return 0
    return state["epoch"]


def freeze_after_first_checkpoint(sweep_dir: Path, proc: subprocess.Popen, log: Path) -> int:
    """SIGSTOP the trainer of job FROZEN (its pid from its heartbeat) once it has saved
    epoch 1; return the pid."""
    run_dir = sweep_dir / str(FROZEN)
    wait_until(lambda: checkpoint_epoch(run_dir) >= 1, 240, proc=proc, log=log, interval=0.3)
    wait_until(lambda: (run_dir / HEARTBEAT).exists(), 240, proc=proc, log=log, interval=0.3)
    pid = read_json(run_dir / HEARTBEAT)["pid"]
    os.kill(pid, signal.SIGSTOP)
    return pid


def command(*args: str | Path) -> subprocess.CompletedProcess:
    """``python -m <module> *args`` from the repository root, its output piped."""
    cmd = [sys.executable, "-m", *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def status(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m sce_sweeps.cli status``, in this process: the tests poll it."""
    return run_in_process(str(sweep_dir), *args, main=status_main)


def job_state(sweep_dir: Path, num: int) -> dict:
    return json.loads(status(sweep_dir, "--json").stdout)["jobs"][num]


LOCAL = ("launcher=local", "hydra.launcher.max_parallel=3")
SLURM = ("launcher=slurm", "cluster=local")


@pytest.mark.parametrize(
    "launcher", [LOCAL, pytest.param(SLURM, marks=pytest.mark.slurm)], ids=["local", "slurm"]
)
def test_frozen_job_is_flagged_stalled_then_recovers(request, tmp_path, launcher):
    if launcher == SLURM:
        request.getfixturevalue("slurm_cluster")
    sweep_dir, log = tmp_path / "sweep", tmp_path / "sweep.log"
    proc = start_sweep(sweep_dir, log, *launcher)
    pid = None
    try:
        pid = freeze_after_first_checkpoint(sweep_dir, proc, log)
        wait_until(
            lambda: job_state(sweep_dir, FROZEN)["stalled_s"] is not None,
            240,
            proc=proc,
            log=log,
            interval=0.3,
        )
        job = job_state(sweep_dir, FROZEN)
        assert job["state"] == "running" and job["stalled_s"] > STALL_AFTER
        assert job["reason"].startswith("stalled: no progress for ")
        table = status(sweep_dir)
        assert table.returncode == 3  # still running
        assert f"limit {STALL_AFTER} s" in table.stdout and "(1 stalled)" in table.stdout
        for line in ("1 stalled: job #1 for ", "job #1 stalled: no progress for"):
            wait_until(lambda: line in log.read_text(), 240, line, proc, log, interval=0.3)  # noqa: B023
        assert "time left: - (stalled)" in log.read_text()
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # it goes on: flagged, not ended
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    jobs = read_json(sweep_dir / "manifest.json")["jobs"]
    assert [j["state"] for j in jobs] == ["completed"] * 3


def kill_stalled(tmp_path: Path, *launcher: str) -> None:
    """Freeze job 1 with stalled=kill: it ends failed, reason stalled, its checkpoint kept;
    the sweep exits 1; a resume continues it from its checkpoint to the end."""
    sweep_dir, log = tmp_path / "sweep", tmp_path / "sweep.log"
    proc = start_sweep(sweep_dir, log, *launcher, "hydra.launcher.stalled=kill")
    try:
        pid = freeze_after_first_checkpoint(sweep_dir, proc, log)
        assert proc.wait(timeout=300) == 1, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "1 stalled: job #1 for " in text  # the progress line, before it was ended
    assert "job #1 stalled: no progress for" in text and "ending it" in text
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended
    job = job_state(sweep_dir, FROZEN)
    assert job["state"] == "failed" and job["reason"].startswith("stalled: no progress for ")
    assert [j["state"] for j in json.loads(status(sweep_dir, "--json").stdout)["jobs"]] == [
        "completed",
        "failed",
        "completed",
    ]
    run_dir = sweep_dir / str(FROZEN)
    saved = checkpoint_epoch(run_dir)
    assert 1 <= saved < 4  # kept: the resume goes on from it
    assert not (run_dir / "result.json").exists()

    resumed = command("sce_sweeps.cli", "resume", sweep_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 job to run, 2 skipped" in resumed.stderr
    job_log = Path(read_json(sweep_dir / "manifest.json")["jobs"][FROZEN]["log"]).read_text()
    assert f"resuming from epoch {saved}" in job_log
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed" and result["epochs"] == 4


def test_frozen_local_job_with_stalled_kill_fails_as_stalled_and_resumes(tmp_path):
    kill_stalled(tmp_path, *LOCAL)


@pytest.mark.slurm
def test_frozen_slurm_job_with_stalled_kill_fails_as_stalled_and_resumes(slurm_cluster, tmp_path):
    kill_stalled(tmp_path, *SLURM)
