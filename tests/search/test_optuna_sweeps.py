"""Real Optuna searches through the CLI: on the local SLURM cluster with pruning, and a search
killed mid-way (SIGKILL) whose rerun resumes it without repeating a trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.sce_sweeps_optuna._impl import counted_trials
from sce_sweeps.runtime.trial import HEARTBEAT_ATTR, RETRY_OF_ATTR, open_storage
from tests.support import ROOT, TINY, read_json, read_metrics, run_cli, wait_until

pytestmark = pytest.mark.slow

# The project's launchers, which take P trials at once (thread_safe_launch): the SLURM one on
# the test cluster's profile (looking at its jobs every 0.5 s, not 5 s), the local one with room
# for the P=2 trials.
SLURM = ["launcher=slurm", "cluster=local", "hydra.launcher.poll_s=0.5"]
LOCAL = ["launcher=local", "hydra.launcher.max_parallel=2"]


def search_args(sweep_dir: Path, epochs: int, *extra: str, images: int = 256) -> list[str]:
    """A tiny search: a few hundred images, the preset's space with a queue that fits them."""
    smaller = {"dataset.train_samples": str(images), "dataset.test_samples": "128"}
    tiny = [o for o in TINY if o.split("=")[0] not in {*smaller, "trainer.epochs"}]
    return [
        "-m",
        "+sweep=optuna_search",
        *tiny,
        *(f"{k}={v}" for k, v in smaller.items()),
        f"trainer.epochs={epochs}",
        "tracker=none",
        "loss.queue_size=choice(0,128)",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def load_trials(sweep_dir: Path) -> list[FrozenTrial]:
    storage = open_storage(str(sweep_dir / "optuna.journal"))
    return optuna.load_study(study_name="optuna_search", storage=storage).get_trials()


def _checkpoint_epoch(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["epoch"]


@pytest.mark.slurm
def test_slurm_search_prunes_some_trials_and_completes(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "search"
    args = search_args(
        sweep_dir,
        4,
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_kwargs.n_startup_trials=2",
        "hydra.sweeper.pruner_kwargs.n_warmup_steps=0",
        *SLURM,
    )
    run_cli(*args, timeout=600)

    trials = load_trials(sweep_dir)
    assert len(trials) == 8 and len(counted_trials(trials)) == 8
    states = [t.state for t in trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states, states
    assert TrialState.FAIL not in states
    for trial in trials:
        run_dir = sweep_dir / str(trial.number)
        result = read_json(run_dir / "result.json")
        epochs = [row["epoch"] for row in read_metrics(run_dir)]
        assert result["slurm_job_id"], "each trial ran as a SLURM job"
        assert result["optuna"]["trial_number"] == trial.number
        assert result["optuna"]["state"] == trial.state.name
        assert result["optuna"]["params"] == trial.params
        assert sorted(trial.intermediate_values) == epochs  # kNN reported every epoch
        if trial.state == TrialState.PRUNED:  # stopped early, its state saved
            assert result["status"] == "pruned" and len(epochs) < 4
            assert _checkpoint_epoch(run_dir) == epochs[-1]
        else:
            assert result["status"] == "completed" and epochs == [1, 2, 3, 4]
            assert trial.value == result["knn_top1"]
    # asynchronous: some trial started while another was still running after its batch-mate
    # ended (a batch-synchronous sweeper never starts a trial while one runs)
    spans = [(t.datetime_start, t.datetime_complete) for t in trials]
    assert any(
        any(s0 < s < e0 for j, (s0, e0) in enumerate(spans) if j != i)
        for i, (s, _) in enumerate(spans[2:], start=2)
    )
    assert (sweep_dir / "trials.csv").exists()
    assert (sweep_dir / "optimization_results.yaml").exists()
    # the launcher's manifest: one SLURM job per trial, numbered by the trial, in its state
    jobs = {j["num"]: j for j in read_json(sweep_dir / "manifest.json")["jobs"]}
    assert sorted(jobs) == [t.number for t in trials]
    for trial in trials:
        assert len(jobs[trial.number]["job_ids"]) == 1
        state = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned"}[trial.state]
        assert jobs[trial.number]["state"] == state


@pytest.mark.parametrize("killed", ["sweeper", "sweeper_and_jobs"])
def test_killed_search_resumes_without_repeating_a_trial(tmp_path, killed):
    """SIGKILL the sweeper mid-search, alone (its jobs live on, as SLURM jobs do: the rerun
    waits for their verdicts) or with its jobs (the rerun finds their trials without a
    heartbeat, marks them FAIL and retries their parameters); rerun the same command with
    hydra.launcher.resume=true, as ``python -m sce_sweeps.cli resume`` does."""
    sweep_dir = tmp_path / "search"
    n_trials = 4
    args = search_args(
        sweep_dir,
        3,
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.stale_after=5",
        *LOCAL,
        images=1024 if killed == "sweeper" else 256,  # orphans that outlive a rerun's start
    )
    log = (tmp_path / "first.log").open("w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sce_sweeps", *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: the sweeper and its local jobs
    )

    def mid_search() -> bool:
        try:
            trials = load_trials(sweep_dir)
        except KeyError:  # no study yet
            return False
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if not running or not all(HEARTBEAT_ATTR in t.system_attrs for t in running):
            return False  # kill only when every running trial's job is training
        if killed == "sweeper":  # early: the orphans have most of their epochs ahead
            return len(running) == 2 and not any(t.intermediate_values for t in running)
        return len(done) >= 1

    try:
        wait_until(mid_search, 240, "the search to be half done", proc=proc, interval=0.5)
    finally:
        if killed == "sweeper":
            proc.kill()  # SIGKILL: its local jobs live on, as SLURM jobs would
        else:
            os.killpg(proc.pid, signal.SIGKILL)  # the jobs die with it
        proc.wait()
    before = {t.number: t for t in load_trials(sweep_dir)}
    finished_before = {n: t for n, t in before.items() if t.state.is_finished()}
    left_running = [n for n, t in before.items() if t.state == TrialState.RUNNING]
    assert left_running
    results_before = {n: (sweep_dir / str(n) / "result.json").read_text() for n in finished_before}

    rerun = run_cli(*args, "hydra.launcher.resume=true", timeout=400)  # = sce_sweeps.cli resume
    (tmp_path / "rerun.log").write_text(rerun.stdout + rerun.stderr)
    trials = load_trials(sweep_dir)
    counted = counted_trials(trials)
    assert len(counted) == n_trials
    assert all(t.state == TrialState.COMPLETE for t in counted)
    params = [tuple(sorted(t.params.items())) for t in counted]
    assert len(set(params)) == len(params), "a trial was repeated"
    for number, trial in finished_before.items():  # never rerun
        assert trials[number].state == trial.state
        assert trials[number].datetime_complete == trial.datetime_complete
        assert (sweep_dir / str(number) / "result.json").read_text() == results_before[number]
    for trial in counted:
        run_dir = sweep_dir / str(trial.number)
        assert read_json(run_dir / "result.json")["optuna"]["state"] == "COMPLETE"
        assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]
        assert sorted(trial.intermediate_values) == [1, 2, 3]  # reported even without pruner
    launched = len(list((sweep_dir / ".submitit").glob("*/*_submitted.pkl")))
    assert launched == len(trials)  # one job per trial: none launched twice

    retries = {t.user_attrs[RETRY_OF_ATTR]: t for t in trials if RETRY_OF_ATTR in t.user_attrs}
    if killed == "sweeper":  # the orphans gave their verdicts; nothing was failed or retried
        assert not retries and len(trials) == n_trials
        assert all(trials[n].state == TrialState.COMPLETE for n in left_running)
    else:  # the killed jobs' trials are FAIL and retried once with the same parameters
        assert set(retries) == set(left_running)
        for number in left_running:
            assert trials[number].state == TrialState.FAIL
            assert "no heartbeat" in trials[number].user_attrs["reason"]
            assert retries[number].params == trials[number].params
        assert len(trials) == n_trials + len(left_running)
