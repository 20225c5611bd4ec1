"""``hydra.launcher.detach=true``: the sweep's controller as a SLURM job on the local cluster,
requeued mid-sweep (``scontrol requeue``), resumes where the sweep stood: a search, a grid."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from sce_sweeps.runtime.record import SLURM_LIVE
from sce_sweeps.runtime.slurm import job_states
from sce_sweeps.runtime.status import main as status_main
from sce_sweeps.runtime.trial import HEARTBEAT_ATTR, open_storage
from tests.support import TINY, read_json, run_in_process, wait_until

# A Hydra app that knows nothing of SCE: three "epochs" of sleep, each
# reported to its Optuna trial (as the SCE trainer does, so that a trial's job tells the study
# even without its controller); every start of a job leaves a line in runs.txt.
APP = """
import os
import time

import hydra
from hydra.core.hydra_config import HydraConfig

from sce_sweeps.runtime.trial import TrialReporter


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    run_dir = HydraConfig.get().runtime.output_dir
    with open(os.path.join(run_dir, "runs.txt"), "a") as f:
        f.write(os.environ.get("SLURM_JOB_ID", "-") + "\\n")
    value = -((float(cfg.x) - 0.3) ** 2)
    reporter = TrialReporter.open(run_dir)  # None in a grid sweep
    # in a search, trials 1-3 are slow: running across the requeue of the controller
    slow = reporter is None or reporter.number in (1, 2, 3)
    for epoch in (1, 2, 3):
        time.sleep(float(cfg.epoch_s) if slow else 1.0)
        if reporter:
            reporter.on_epoch_end(epoch, {"objective": value})
    if reporter:
        reporter.finish("completed", {"objective": value})
    return value


if __name__ == "__main__":
    main()
"""
SLURM = ["hydra/launcher=sce_slurm", "hydra.launcher.partition=debug", "hydra.launcher.mem_gb=1"]
SLURM += ["hydra.launcher.poll_s=0.5"]


def detach(tmp_path: Path, sweep_dir: Path, *args: str) -> str:
    """Run the app's sweep with detach=true; check that it returns at once and says where to
    look; the controller's job id."""
    (tmp_path / "app.py").write_text(APP)
    cmd = [sys.executable, "app.py", "-m", *SLURM, *args, f"hydra.sweep.dir={sweep_dir}"]
    cmd.append("hydra.launcher.detach=true")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert took < 10, f"the detaching command took {took:.1f} s"
    controller = read_json(sweep_dir / "manifest.json")["controller"]
    assert f"SLURM job {controller}" in proc.stdout
    assert f"python -m sce_sweeps.cli status {sweep_dir}" in proc.stdout
    return controller


def status(sweep_dir: Path) -> tuple[int, dict]:
    proc = run_in_process(str(sweep_dir), "--json", main=status_main)
    return proc.returncode, json.loads(proc.stdout)


def requeue_when(controller: str, ready: object, what: str) -> None:
    wait_until(ready, 120, what, interval=0.3)
    subprocess.run(["scontrol", "requeue", controller], check=True, timeout=30)


def wait_for_end(controller: str, sweep_dir: Path) -> None:
    log = sweep_dir / f"controller-{controller}.log"

    def over() -> bool:
        state = job_states([controller]).get(controller, ("UNKNOWN", ""))[0]
        return state not in SLURM_LIVE and "controller start 2" in log.read_text()

    wait_until(over, 150, "the requeued controller to end", log=log, interval=0.5)
    assert "DUE TO JOB REQUEUE" in log.read_text()
    assert job_states([controller])[controller][0] == "COMPLETED", log.read_text()[-3000:]


def runs(sweep_dir: Path) -> dict[str, list[str]]:
    """By run dir, the SLURM jobs that started it."""
    return {p.parent.name: p.read_text().split() for p in sweep_dir.glob("*/runs.txt")}


def trials_so_far(sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
    """The trials of the search in ``sweep_dir`` (its study is named after the dir); none before
    its controller has made the study (the journal file can exist before the study is in it)."""
    if not (sweep_dir / "optuna.journal").exists():
        return []
    storage = open_storage(str(sweep_dir / "optuna.journal"))
    try:
        study = optuna.load_study(study_name=sweep_dir.name, storage=storage)
    except KeyError:  # the study is not recorded yet
        return []
    return study.get_trials(deepcopy=False)


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_detached_search_survives_its_controller_requeued(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "search"
    # trials 1-3 outlive the requeued controller's restart (SLURM delays it by about 10 s)
    args = ["hydra/sweeper=sce_optuna", "+x=interval(0,1)", "+epoch_s=8"]
    args += ["hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=4", "hydra.sweeper.pruner=none"]
    args += ["hydra.sweeper.seed=0", "hydra.sweeper.heartbeat_interval=1"]
    args += ["hydra.sweeper.stale_after=5"]
    controller = detach(tmp_path, sweep_dir, *args)
    code, report = status(sweep_dir)
    assert code == 3 and report["controller"]["job_id"] == controller  # live, no job yet
    assert report["controller"]["state"] in ("PENDING", "RUNNING")
    table = run_in_process(str(sweep_dir), main=status_main).stdout.splitlines()
    assert table[2].startswith(f"controller: SLURM job {controller} ")

    def mid_search() -> bool:
        trials = trials_so_far(sweep_dir)
        done = [t for t in trials if t.state.is_finished()]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        # every running trial's job has started: requeued, the controller must wait for them
        started = running and all(HEARTBEAT_ATTR in t.system_attrs for t in running)
        return bool(done) and bool(started)

    requeue_when(controller, mid_search, "a trial done and others running")
    wait_for_end(controller, sweep_dir)
    log = (sweep_dir / f"controller-{controller}.log").read_text()
    assert "was left RUNNING: watching its job" in log  # the restarted controller adopted them

    study = optuna.load_study(
        study_name="search", storage=open_storage(str(sweep_dir / "optuna.journal"))
    )
    counted = [t for t in study.trials if t.state.is_finished() and "retry_of" not in t.user_attrs]
    assert len(counted) == 8 and all(t.state.name == "COMPLETE" for t in counted)
    started = runs(sweep_dir)
    assert all(started[str(t.number)] for t in counted)
    assert all(len(jobs) == 1 for jobs in started.values()), f"a trial ran twice: {started}"
    launched = len(list((sweep_dir / ".submitit").glob("*/*_submitted.pkl")))
    assert launched == len(started)  # every job submitted started once; none submitted twice
    code, report = status(sweep_dir)
    assert report["controller"]["state"] == "COMPLETED"


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_detached_search_of_seeds_survives_its_controller_requeued(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "seeds"
    # 3 trials of 2 seed jobs each (job k*n+s); trials 1 and 2 outlive the controller's restart
    args = ["hydra/sweeper=sce_optuna", "+x=interval(0,1)", "+epoch_s=8"]
    args += ["hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=none"]
    args += ["hydra.sweeper.seeds=2", "hydra.sweeper.seed_key=+seed", "hydra.sweeper.seed=0"]
    args += ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.stale_after=5"]
    controller = detach(tmp_path, sweep_dir, *args)

    def mid_search() -> bool:
        trials = trials_so_far(sweep_dir)
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        done = [t for t in trials if t.state.is_finished()]
        # every seed job of the trials so far has started
        return bool(done) and bool(running) and len(runs(sweep_dir)) == 2 * len(trials)

    requeue_when(controller, mid_search, "a trial done and others running")
    wait_for_end(controller, sweep_dir)
    log = (sweep_dir / f"controller-{controller}.log").read_text()
    assert "was left RUNNING: watching its job" in log

    trials = trials_so_far(sweep_dir)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(t.user_attrs["value_n"] == 2 for t in trials)
    assert [t.value for t in trials] == [t.user_attrs["value_mean"] for t in trials]
    started = runs(sweep_dir)
    assert sorted(started, key=int) == [str(n) for n in range(6)]  # 3 trials x 2 seeds
    assert all(len(jobs) == 1 for jobs in started.values()), f"a seed job ran twice: {started}"
    launched = len(list((sweep_dir / ".submitit").glob("*/*_submitted.pkl")))
    assert launched == 6  # none submitted twice


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_detached_grid_watches_the_jobs_of_its_requeued_controller(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "grid"
    # one short job, one that outlives the controller's requeue (SLURM delays its restart)
    controller = detach(tmp_path, sweep_dir, "+x=0.1", "+epoch_s=1,8")

    def one_done() -> bool:
        jobs = read_json(sweep_dir / "manifest.json")["jobs"]
        return any(job["state"] == "completed" for job in jobs)

    requeue_when(controller, one_done, "the short job to complete")
    wait_for_end(controller, sweep_dir)

    started = runs(sweep_dir)
    assert sorted(started) == ["0", "1"] and all(len(jobs) == 1 for jobs in started.values())
    log = (sweep_dir / f"controller-{controller}.log").read_text()
    assert "job #1: watching SLURM job" in log  # the restarted controller waited for it
    code, report = status(sweep_dir)
    assert code == 0, report
    assert [job["state"] for job in report["jobs"]] == ["completed", "completed"]


def test_detach_is_refused_by_the_local_launcher(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "launcher=local", "hydra.launcher.detach=true"]
    proc = run_in_process(*args, f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2
    assert "hydra.launcher.detach=true needs launcher=slurm" in proc.stderr
    assert not sweep_dir.exists()


@pytest.mark.slurm
def test_a_controller_sbatch_refuses_is_one_line_and_leaves_no_sweep_dir(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY, "launcher=slurm", "hydra.launcher.partition=nosuch"]
    proc = run_in_process(*args, "hydra.launcher.detach=true", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "sce_sweeps: the controller was not submitted: "
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    )
    assert not sweep_dir.exists()
