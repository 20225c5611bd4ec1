"""The sweeper and the trial reporter reach a study's trials through Optuna's private storage
attributes: the switch back to the public path (the storage object the study was made with, a
trial's id asked by number) reads and writes the same trials of a real journal storage."""

from __future__ import annotations

import optuna
import pytest

from sce_sweeps.runtime.adapters import optuna_storage as adapter
from sce_sweeps.runtime.trial import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("public", ["", "optuna", "all"])
def test_private_and_public_paths_see_the_same_trials(tmp_path, monkeypatch, public):
    monkeypatch.setenv("SCE_SWEEPS_PUBLIC_APIS", public)
    journal = str(tmp_path / "optuna.journal")
    other = adapter.create_study(open_storage(journal), study_name="other")
    other.ask()  # trial ids of the storage are not the trial numbers of "s"
    study = adapter.create_study(open_storage(journal), study_name="s")
    trials = [study.ask() for _ in range(3)]
    study.tell(trials[0], 1.0)
    for trial in trials:
        assert adapter.trial_id(study, trial) == adapter.trial_id(study, trial.number)
        assert adapter.trial_id(study, trial) == trial._trial_id
        assert adapter.get_trial(study, trial) == study.get_trials(deepcopy=False)[trial.number]
    assert adapter.storage_of(study) is (study._storage if not public else adapter._storages[study])
    adapter.set_user_attr(study, trials[1], "reason", "killed")
    assert study.get_trials()[1].user_attrs == {"reason": "killed"}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        adapter.set_user_attr(study, trials[0], "reason", "late")
    # a job's view: the study loaded by name in another storage object
    loaded = adapter.load_study(open_storage(journal), study_name="s")
    frozen = adapter.get_trial(loaded, study.get_trials()[2])
    assert frozen.number == 2 and frozen.state == optuna.trial.TrialState.RUNNING
