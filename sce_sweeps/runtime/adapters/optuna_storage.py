"""A study's storage and its trials' ids (``study._storage``, ``trial._trial_id``); the public
path keeps the storage the study was made with and asks it for a trial's id by number.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from sce_sweeps.runtime.adapters import private

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

_storages: weakref.WeakKeyDictionary[Any, BaseStorage] = weakref.WeakKeyDictionary()


def create_study(storage: BaseStorage, **kwargs: Any) -> optuna.Study:
    """``optuna.create_study(storage=storage, **kwargs)``, its storage kept for the public path."""
    import optuna

    return _kept(optuna.create_study(storage=storage, **kwargs), storage)


def load_study(storage: BaseStorage, **kwargs: Any) -> optuna.Study:
    """``optuna.load_study(storage=storage, **kwargs)``, its storage kept for the public path."""
    import optuna

    return _kept(optuna.load_study(storage=storage, **kwargs), storage)


def _kept(study: optuna.Study, storage: BaseStorage) -> optuna.Study:
    _storages[study] = storage
    return study


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage of a study made by :func:`create_study` or :func:`load_study`."""
    return study._storage if private("optuna") else _storages[study]


def trial_id(study: optuna.Study, trial: optuna.Trial | FrozenTrial | int) -> int:
    """The storage's id of a trial of ``study`` (given as a trial or by its number)."""
    if private("optuna") and not isinstance(trial, int):
        return trial._trial_id
    storage = storage_of(study)
    number = trial if isinstance(trial, int) else trial.number
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def get_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now."""
    return storage_of(study).get_trial(trial_id(study, trial))


def set_user_attr(study: optuna.Study, trial: Any, key: str, value: Any) -> None:
    """Set a user attribute of a trial, finished or not by this process."""
    storage_of(study).set_trial_user_attr(trial_id(study, trial), key, value)
