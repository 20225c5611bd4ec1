"""A search run's ``result.json`` carries its trial's verdict as the study holds it, also when
the job is killed right after telling the study (the window between the tell and a second write
of the result left a COMPLETE trial whose result had no verdict)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sce_sweeps.app import _finish
from sce_sweeps.runtime.adapters.optuna_storage import create_study, trial_id
from sce_sweeps.runtime.record import RunState
from sce_sweeps.runtime.trial import STUDY_ATTR, TrialReporter, open_storage
from tests.support import read_json

METRICS = {"knn_top1": 61.5, "loss": 5.0, "epochs": 2, "wall_time_s": 3.0}


class Killed(BaseException):
    """The job's end right after the study heard its verdict."""


def _reporter(tmp_path: Path) -> tuple[optuna.Study, TrialReporter]:
    study = create_study(open_storage(str(tmp_path / "optuna.journal")), study_name="s")
    study.set_user_attr(STUDY_ATTR, {"objectives": ["knn_top1"], "heartbeat_interval": 60.0})
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(0.1, 1.0)})
    return study, TrialReporter(study, trial_id(study, trial), tmp_path / "run")


def test_a_job_killed_after_telling_the_study_leaves_the_verdict_in_its_result(
    tmp_path, monkeypatch
):
    study, reporter = _reporter(tmp_path)
    tell = reporter.finish

    def tell_then_die(status, result):
        tell(status, result)
        raise Killed

    monkeypatch.setattr(reporter, "finish", tell_then_die)
    with pytest.raises(Killed):
        _finish(tmp_path / "run", {"config_hash": "h"}, METRICS, RunState.COMPLETED, None, reporter)
    assert study.trials[0].state.name == "COMPLETE"
    record = read_json(tmp_path / "run" / "result.json")["optuna"]
    assert record["state"] == "COMPLETE" and record["params"] == study.trials[0].params


def test_a_verdict_the_study_gave_first_replaces_the_runs_own(tmp_path):
    study, reporter = _reporter(tmp_path)
    study.tell(0, state=optuna.trial.TrialState.FAIL)  # e.g. marked stale by the sweeper
    _finish(tmp_path / "run", {"config_hash": "h"}, METRICS, RunState.COMPLETED, None, reporter)
    assert read_json(tmp_path / "run" / "result.json")["optuna"]["state"] == "FAIL"
