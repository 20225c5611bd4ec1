"""What a real run tells its Optuna trial: a run that trained every epoch is never pruned, and a
pruned run records how far it got. The trial's identity reaches the app as the sweeper passes
it, through ``hydra.job.env_set`` overrides."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from sce_sweeps.runtime.trial import STUDY_ATTR, open_storage, trial_overrides
from tests.support import TINY, read_json, read_metrics, run_cli

pytestmark = pytest.mark.slow


def _study_with_a_leader(journal: Path, warmup_epochs: int) -> tuple[optuna.Study, int]:
    """A study whose median pruner prunes anything below 100 % after ``warmup_epochs``, and a
    new trial's number."""
    study = optuna.create_study(storage=open_storage(str(journal)), study_name="s",
                                direction="maximize")  # fmt: skip
    pruner = {"n_startup_trials": 1, "n_warmup_steps": warmup_epochs}
    spec = {"objectives": ["knn_top1"], "pruner": "median", "pruner_kwargs": pruner}
    study.set_user_attr(STUDY_ATTR, {**spec, "heartbeat_interval": 1.0})
    leader = study.ask()
    for epoch in (1, 2):
        leader.report(100.0, epoch)
    study.tell(leader, 100.0)
    return study, study.ask().number


def _run_trial(tmp_path: Path, warmup_epochs: int) -> tuple[dict, optuna.trial.FrozenTrial]:
    journal = tmp_path / "optuna.journal"
    study, number = _study_with_a_leader(journal, warmup_epochs)
    run_cli(
        *TINY, "tracker=none", f"hydra.run.dir={tmp_path / 'run'}",
        *trial_overrides(str(journal), "s", number),
    )  # fmt: skip
    study = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    return read_json(tmp_path / "run" / "result.json"), study.trials[number]


def test_a_run_that_trained_every_epoch_is_never_pruned(tmp_path):
    result, trial = _run_trial(tmp_path, warmup_epochs=2)  # judged from epoch 2, the last
    assert result["status"] == "completed" and result["epochs"] == 2
    assert trial.state.name == "COMPLETE" and trial.value == result["knn_top1"]
    assert trial.value < 100.0  # below the leader: the pruner would have stopped it
    assert trial.intermediate_values == {e: r["knn_top1"] for e, r in enumerate(
        read_metrics(tmp_path / "run"), start=1)}  # fmt: skip


def test_a_pruned_run_records_the_epochs_it_trained(tmp_path):
    result, trial = _run_trial(tmp_path, warmup_epochs=0)
    assert result["status"] == "pruned" and result["reason"] == "pruned by the study after epoch 1"
    assert result["epochs"] == 1 == len(read_metrics(tmp_path / "run"))
    assert result["last_knn_top1"] == trial.intermediate_values[1]
    assert result["optuna"]["state"] == trial.state.name == "PRUNED"
