"""One sweep dir holding a run in every state: ``status``, the analysis tables and the Optuna
trial table label each run the same way, with the one vocabulary of sce_sweeps.runtime.record."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from sce_sweeps.analysis import ablation_table, collect
from sce_sweeps.runtime.record import (
    CHECKPOINT,
    RUN_MARKER,
    Job,
    Manifest,
    RunFileError,
    RunState,
    read_result,
    write_json_atomic,
    write_result,
)
from sce_sweeps.runtime.search import trials_table
from sce_sweeps.runtime.status import main as status_main
from sce_sweeps.runtime.trial import open_storage
from tests.support import run_in_process

# job number: (its run's state, what the run dir holds, what the manifest last saw, trial)
SWEEP = {
    0: (RunState.COMPLETED, "completed", RunState.COMPLETED, "COMPLETE"),
    1: (RunState.FAILED, "failed", RunState.FAILED, "FAIL"),
    2: (RunState.PRUNED, "pruned", RunState.PRUNED, "PRUNED"),
    3: (RunState.RUNNING, "started", RunState.RUNNING, "RUNNING"),  # its process lives
    4: (RunState.PENDING, None, RunState.PENDING, "RUNNING"),  # the launcher lives
    5: (RunState.NOT_SUBMITTED, None, RunState.NOT_SUBMITTED, "FAIL"),  # sbatch refused it
    6: (RunState.INTERRUPTED, "checkpoint", RunState.RUNNING, "RUNNING"),  # its process died
}


def _sweep(sweep_dir: Path, live_pid: int) -> None:
    manifest = Manifest.create(sweep_dir, "every_state", "local")
    manifest.pid = os.getpid()  # the launcher lives (this process)
    study = optuna.create_study(
        storage=open_storage(str(sweep_dir / "optuna.journal")), study_name="every_state"
    )
    for num, (_, files, seen, trial_state) in SWEEP.items():
        overrides = [f"loss.coeff={num / 8}", "seed=0"]
        job = Job(num, overrides, f"hash{num}", str(num), seen.value)
        if seen != RunState.PENDING and seen != RunState.NOT_SUBMITTED:
            job.job_ids = [str(live_pid if num == 3 else 999_999_990 + num)]
        if seen == RunState.NOT_SUBMITTED:
            job.reason = "sbatch: error: Batch job submission failed: More processors requested"
        manifest.jobs.append(job)
        run_dir = sweep_dir / str(num)
        if files is not None:
            (run_dir / RUN_MARKER).parent.mkdir(parents=True)
            (run_dir / RUN_MARKER).write_text(yaml.safe_dump(overrides))
        if files in ("completed", "failed", "pruned"):
            result = {"status": files, "config_hash": f"hash{num}", "epochs": 2, "reason": None}
            if files == "completed":
                result["knn_top1"] = 50.0 + num
            else:
                result["reason"] = "pruned by the study after epoch 1" if num == 2 else "NaN"
            write_result(run_dir, result)
        if files == "checkpoint":
            (run_dir / CHECKPOINT).write_bytes(b"a checkpoint")
        trial = study.ask()
        assert trial.number == num
        if trial_state == "COMPLETE":
            study.tell(trial, 50.0 + num)
        elif trial_state != "RUNNING":
            study.tell(trial, state=getattr(optuna.trial.TrialState, trial_state))
    manifest.save()


def test_status_analysis_and_trial_table_label_every_run_alike(tmp_path):
    sweep_dir = tmp_path / "every_state"
    # a live job process, whose command line names the sweep dir as submitit's local jobs' do
    job = subprocess.Popen(["sh", "-c", "sleep 120; :", sweep_dir.name])
    try:
        cmdline = Path(f"/proc/{job.pid}/cmdline")
        while sweep_dir.name.encode() not in cmdline.read_bytes():  # until it has exec'd
            time.sleep(0.01)
        _sweep(sweep_dir, job.pid)
        expected = [str(state) for state, *_ in SWEEP.values()]

        proc = run_in_process(str(sweep_dir), "--json", main=status_main)
        assert proc.returncode == 1, proc.stderr  # failed, not submitted, interrupted
        status = [j["state"] for j in json.loads(proc.stdout)["jobs"]]

        runs = collect([sweep_dir]).runs
        analysis = [runs.set_index("run")["status"][str(num)] for num in SWEEP]

        table = trials_table(str(sweep_dir))
        trials = list(table.sort_values("number")["state"])

        assert status == analysis == trials == expected
        assert list(table["trial_state"]) == [t for *_, t in SWEEP.values()]
        counts = ablation_table(collect([sweep_dir]), ["knn_top1"]).rows
        assert counts[["failed", "pruned", "unfinished"]].sum().to_dict() == {
            "failed": 1,
            "pruned": 1,
            "unfinished": 4,  # running, pending, not submitted, interrupted
        }
        table_text = run_in_process(str(sweep_dir), main=status_main).stdout
        assert (
            "7 jobs: 1 completed, 1 pruned, 1 running, 1 pending, 1 failed, 1 not submitted, "
            "1 interrupted"
        ) in table_text
        assert "sbatch: error: Batch job submission failed" in table_text
    finally:
        job.kill()
        job.wait()


def test_results_with_a_state_outside_the_vocabulary_are_refused(tmp_path):
    write_json_atomic({"status": "done"}, tmp_path / "result.json")
    allowed = "completed, pruned, failed"
    with pytest.raises(RunFileError, match=f"status 'done' is not one of {allowed}"):
        read_result(tmp_path)
    with pytest.raises(ValueError):
        write_result(tmp_path, {"status": "running"})  # a result is final
