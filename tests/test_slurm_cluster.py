"""Real submitit jobs on the local one-node SLURM cluster (no mocks).

Needs the ``slurm_cluster`` fixture from tests/support.py, which starts the cluster with
scripts/slurm_cluster.sh (root, Debian packages) and FAILS the tests if it cannot.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from tests.support import wait_until

pytestmark = pytest.mark.slurm

# The job processes cannot import this test module (pytest puts it on sys.path only in the
# test process), so its functions and classes travel by value in the submitted pickles.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _executor(folder: Path, cluster) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        slurm_partition=cluster.partition, timeout_min=5, cpus_per_task=1, mem_gb=1
    )
    return executor


def _wait_done(job: submitit.Job, timeout_s: float, log: Path | None = None) -> None:
    """Poll the job (forcing sacct) until it is done; past timeout_s, cancel it and fail with
    what SLURM and the job said (its state, its event log, submitit's stderr, slurmctld's log)."""
    try:
        wait_until(lambda: job.done(force_check=True), timeout_s, f"job {job.job_id}", interval=0.5)
    except pytest.fail.Exception as timeout:
        state = job.watcher.get_state(job.job_id, mode="force")
        subprocess.run(["scancel", job.job_id], check=False)
        ctld = Path("/var/log/slurm/slurmctld.log")
        ctld_tail = ctld.read_text(errors="replace").splitlines()[-15:] if ctld.exists() else []
        stderr = job.stderr() or ""
        pytest.fail(
            f"{timeout}\nstate before scancel: {state}\njob log: {_read_log(log) if log else '-'}"
            f"\nsubmitit stderr (tail):\n{stderr[-1500:]}"
            f"\nslurmctld.log (tail):\n" + "\n".join(ctld_tail),
            pytrace=False,
        )


def _wait_state(job: submitit.Job, state: str, timeout_s: float) -> None:
    """Wait until sacct reports `state` (the result pickle appears slightly before the job ends)."""
    wait_until(
        lambda: job.watcher.get_state(job.job_id, mode="force") == state,
        timeout_s,
        f"job {job.job_id} to reach {state} in sacct",
    )


# --- functions run inside the jobs ------------------------------------------------------------


def _add_and_describe(a: int, b: int) -> dict:
    return {
        "sum": a + b,
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "node": os.environ.get("SLURMD_NODENAME"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "cpus": os.environ.get("SLURM_CPUS_PER_TASK"),
    }


def _sleep_forever(marker: str) -> str:
    Path(marker).write_text("running\n")
    time.sleep(600)
    return "should never get here"


class _Counter(submitit.helpers.Checkpointable):
    """Counts to `total`, logging progress; on preemption it checkpoints and resumes."""

    def __init__(self, log_path: str, total: int, step_s: float) -> None:
        self.log_path = log_path
        self.total = total
        self.step_s = step_s
        self.step = 0

    def _log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def __call__(self) -> int:
        self._log(f"start {self.step} restart={os.environ.get('SLURM_RESTART_COUNT', '0')}")
        while self.step < self.total:
            time.sleep(self.step_s)
            self.step += 1
            self._log(f"step {self.step}")
        return self.step

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        self._log(f"checkpoint {self.step}")
        return submitit.helpers.DelayedSubmission(self)  # resubmit self with its current step


class _WaitForTimeLimit(submitit.helpers.Checkpointable):
    """Sleeps until the USR2 sent before the time limit; once checkpointed, finishes at once."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.checkpoints = 0

    def _log(self, line: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def __call__(self) -> str:
        self._log(f"start checkpoints={self.checkpoints}")
        if self.checkpoints == 0:
            time.sleep(300)  # interrupted by USR2 -> checkpoint() -> requeue -> exit
            return "no signal came"
        return f"resumed after {self.checkpoints} checkpoint(s)"

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        self.checkpoints += 1
        self._log(f"checkpoint {self.checkpoints}")
        return submitit.helpers.DelayedSubmission(self)


def _read_log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- tests --------------------------------------------------------------------------------------


def test_function_job_returns_result(slurm_cluster, tmp_path):
    job = _executor(tmp_path, slurm_cluster).submit(_add_and_describe, 2, 40)
    _wait_done(job, timeout_s=60)
    out = job.result()
    assert out["sum"] == 42
    assert out["job_id"] == job.job_id
    assert out["node"] == slurm_cluster.node
    assert out["partition"] == slurm_cluster.partition
    assert out["cpus"] == "1"
    _wait_state(job, "COMPLETED", timeout_s=30)


def test_scancel_running_job_raises_instead_of_hanging(slurm_cluster, tmp_path):
    marker = tmp_path / "running.txt"
    job = _executor(tmp_path, slurm_cluster).submit(_sleep_forever, str(marker))
    wait_until(marker.exists, 60, f"job {job.job_id} to start")
    subprocess.run(["scancel", job.job_id], check=True, timeout=30)
    t0 = time.monotonic()
    # submitit waits up to 15 s for a result pickle a slow shared filesystem might still show;
    # on this local disk that wait only slows the test down (submitit's own tests set it to 0).
    job._results_timeout_s = 1
    # Without accounting (sacct) submitit would wait here forever.
    _wait_done(job, timeout_s=60)
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="CANCELLED"):
        job.result()
    assert time.monotonic() - t0 < 60
    assert job.state.startswith("CANCELLED")


def test_checkpointable_job_is_requeued_and_resumes(slurm_cluster, tmp_path):
    log = tmp_path / "progress.log"
    total = 16
    job = _executor(tmp_path, slurm_cluster).submit(_Counter(str(log), total, 0.25))
    wait_until(lambda: "step 2" in _read_log(log), 60, f"job {job.job_id} progress")
    # Preemption path: SIGTERM (ignored by submitit) then USR2 -> checkpoint() -> scontrol requeue.
    job._interrupt()
    # The requeued job may restart only after cred_expire (10 s in the test cluster's config).
    _wait_done(job, timeout_s=90)
    assert job.result() == total
    lines = _read_log(log)
    starts = [line for line in lines if line.startswith("start ")]
    checkpoints = [line for line in lines if line.startswith("checkpoint ")]
    assert len(starts) == 2, lines
    assert len(checkpoints) == 1, lines
    ckpt_step = int(checkpoints[0].split()[1])
    assert 0 < ckpt_step < total, lines
    # The second run resumed from the checkpointed state, not from scratch.
    assert starts[1] == f"start {ckpt_step} restart=1", lines
    assert lines[-1] == f"step {total}", lines
    _wait_state(job, "COMPLETED", timeout_s=30)


def test_time_limit_usr2_requeues_checkpointable_job(slurm_cluster, tmp_path):
    log = tmp_path / "timeout.log"
    executor = _executor(tmp_path, slurm_cluster)
    # slurmctld checks time limits every 30 s and sends the --signal warning at the first check
    # where elapsed >= limit - delay - 30: with a 180 s limit and a 120 s delay that is 30-60 s
    # after the start, late enough for submitit to have installed its USR2 handler on a loaded
    # machine (a signal before that kills the job), and early enough that a check slurmctld
    # skips still leaves the warning well before the limit. submitit sees a time-out (not a
    # preemption) and requeues while its countdown (AutoExecutor default max_num_timeout=3) > 0.
    executor.update_parameters(timeout_min=3, slurm_signal_delay_s=120)
    job = executor.submit(_WaitForTimeLimit(str(log)))
    # USR2 at 30-60 s, requeued job pending ~12 s (cred_expire=10), then done at once: 45-80 s.
    _wait_done(job, timeout_s=170, log=log)
    assert job.result() == "resumed after 1 checkpoint(s)"
    assert _read_log(log) == ["start checkpoints=0", "checkpoint 1", "start checkpoints=1"]
    assert "this job is timed-out" in job.stderr()
    _wait_state(job, "COMPLETED", timeout_s=30)


@pytest.mark.parametrize(
    "params",
    [{"mem_gb": 10_000}, {"cpus_per_task": 64}],
    ids=["mem_10000GB", "cpus_64"],
)
def test_oversized_request_fails_at_submission(slurm_cluster, tmp_path, params):
    executor = _executor(tmp_path, slurm_cluster)
    executor.update_parameters(**params)
    with pytest.raises(submitit.core.utils.FailedJobError, match="sbatch: error"):
        executor.submit(_add_and_describe, 1, 1)
