"""8 concurrent jobs writing one sweep's Aim repo (through the project's AimTracker, merging
live) and one Optuna journal (opened as the sweeper opens it), 4 of them SIGKILLed at random
moments and resumed as a requeued job resumes (tracker run hash and progress from their own
state file): every run ends up in the sweep's repo once, with all its steps in order, and
every trial COMPLETE in the journal with all its intermediate values."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from sce_sweeps.runtime import record
from sce_sweeps.runtime.trial import open_storage
from tests.faults.kill import TABLE, Row
from tests.support import ROOT, job_context

pytestmark = pytest.mark.slow

JOBS, STEPS, KILLED = 8, 40, (1, 3, 4, 6)


def _job(sweep: Path, k: int) -> None:
    from sce_sweeps.runtime.tracking import AimTracker

    state_path = sweep / f"job{k}.json"
    state = record.read_json(state_path) or {"step": 0, "hash": None, "trial": None}
    storage = open_storage(str(sweep / "optuna.journal"))
    study = optuna.create_study(storage=storage, study_name="faults", load_if_exists=True)
    if state["trial"] is None:
        state["trial"] = study.ask().number
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, state["trial"])
    tracker = AimTracker(
        sweep / f"run{k}" / "aim",
        sweep / "aim",
        state["hash"],
        {"job": {"num": k}},
        experiment="faults",
        name=f"job {k}",
        system_metrics=False,
        images=False,
        sync_interval_s=0.0,  # merge live as often as the time share allows
    )
    state["hash"] = tracker.run_hash
    for step in range(state["step"], STEPS):
        value = float(k * 1000 + step)
        tracker.log({"loss": value}, step, 1, {"subset": "train"})
        storage.set_trial_intermediate_value(trial_id, step, value)
        state["step"] = step + 1
        record.write_json_atomic(state, state_path)  # what a checkpoint records
        time.sleep(0.1)
    tracker.close("completed")
    study.tell(state["trial"], float(k))
    os._exit(0)


def test_eight_jobs_share_the_aim_repo_and_the_journal_through_kills(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.monotonic()
    ctx = job_context()
    jobs = {k: ctx.Process(target=_job, args=(tmp_path, k)) for k in range(JOBS)}
    for job in jobs.values():
        job.start()
    rng = random.Random(0)
    targets = {k: rng.randint(2, STEPS // 2) for k in KILLED}  # somewhere in the job's steps
    killed_at: dict[int, int] = {}
    deadline = time.monotonic() + 180
    while len(killed_at) < len(KILLED):
        assert time.monotonic() < deadline, f"jobs did not reach steps {targets}: {killed_at}"
        for k in set(KILLED) - set(killed_at):
            if (record.read_json(tmp_path / f"job{k}.json") or {"step": 0})["step"] < targets[k]:
                continue
            assert jobs[k].is_alive(), f"job {k} ended before it was killed"
            os.kill(jobs[k].pid, signal.SIGKILL)
            jobs[k].join()
            killed_at[k] = record.read_json(tmp_path / f"job{k}.json")["step"]
            jobs[k] = ctx.Process(target=_job, args=(tmp_path, k))  # requeued: it resumes
            jobs[k].start()
        time.sleep(0.005)
    for job in jobs.values():
        job.join(timeout=300)
    assert [job.exitcode for job in jobs.values()] == [0] * JOBS

    read = [sys.executable, "-m", "tests.tracking.aim_read", str(tmp_path / "aim")]
    read = subprocess.run(read, cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    runs = sorted(json.loads(read.stdout), key=lambda r: r["params"]["job"]["num"])
    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.load_study(study_name="faults", storage=storage)
    trials = {t.value: t for t in study.get_trials()}
    lost = 0
    for k in range(JOBS):
        run = runs[k] if k < len(runs) else None
        ok = run is not None and run["params"]["job"]["num"] == k
        ok = ok and run["params"]["status"] == "completed"
        (loss,) = [m for m in run["metrics"] if m["name"] == "loss"] if ok else [None]
        ok = ok and loss["steps"] == list(range(STEPS))
        ok = ok and loss["values"] == [k * 1000 + s for s in range(STEPS)]
        trial = trials.get(float(k))
        ok = ok and trial is not None and trial.state == optuna.trial.TrialState.COMPLETE
        ok = ok and sorted(trial.intermediate_values) == list(range(STEPS))
        lost += not ok
    row = Row(
        f"{JOBS} concurrent jobs: one Aim repo + one journal",
        len(KILLED),
        lost,
        sum(1 for k in KILLED if jobs[k].exitcode == 0),
        f"{time.monotonic() - start:.0f} s; killed at steps {sorted(killed_at.values())}; "
        f"{len(runs)} runs in the repo, {len(trials)} trials",
    )
    TABLE.append(row)
    print(row)
    assert len(runs) == JOBS and len(trials) == JOBS
    assert (row.lost, row.resumable) == (0, len(KILLED))
