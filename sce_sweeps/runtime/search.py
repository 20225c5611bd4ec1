"""The trial table of an Optuna search: ``python -m sce_sweeps.cli trials <sweep dir>``, one
row per trial with its run's state as ``status`` shows it (docs/search.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sce_sweeps.runtime.record import Manifest, RunFileError, RunState
from sce_sweeps.runtime.status import sweep_status
from sce_sweeps.runtime.trial import (
    JOURNAL_NAME,
    MEAN_ATTR,
    N_ATTR,
    STD_ATTR,
    STUDY_ATTR,
    open_storage,
)

if TYPE_CHECKING:
    import optuna
    import pandas as pd

# A trial without a job in the sweep's manifest (e.g. run by another launcher): its state.
TRIAL_STATES = {
    "COMPLETE": RunState.COMPLETED,
    "PRUNED": RunState.PRUNED,
    "FAIL": RunState.FAILED,
    "RUNNING": RunState.RUNNING,
    "WAITING": RunState.PENDING,
}


def trials_table(
    storage: str, study_name: str | None = None, sweep_dir: Path | None = None
) -> pd.DataFrame:
    """The trials of a study in ``storage`` (a sweep dir, journal file or URL), each with its run's
    state from ``sweep_dir`` (default: ``storage`` if a dir) and Optuna's as ``trial_state``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = Path(storage) / JOURNAL_NAME if Path(storage).is_dir() else Path(storage)
    if "://" not in storage and not journal.is_file():
        raise FileNotFoundError(f"no Optuna journal at {journal}")
    opened = open_storage(storage if "://" in storage else str(journal), repair=False)
    if study_name is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        if len(names) != 1:
            raise ValueError(f"{storage} holds studies {names}: name one with study_name")
        study_name = names[0]
    study = optuna.load_study(study_name=study_name, storage=opened)
    frame = study.trials_dataframe(
        attrs=("number", "state", "value", "params", "user_attrs", "duration")
    )
    if len(frame):
        trials = study.get_trials(deepcopy=False)
        if sweep_dir is None and Path(storage).is_dir():
            sweep_dir = Path(storage)
        manifest = Manifest.load(sweep_dir) if sweep_dir is not None else None
        # the launchers number a trial's job by the trial's number; a trial of several seeds
        # has several jobs: its state is the study's
        seeds = int(study.user_attrs.get(STUDY_ATTR, {}).get("seeds", 1))
        jobs = {s.num: s.state for s in sweep_status(manifest)} if manifest and seeds == 1 else {}
        states = [str(jobs.get(t.number, TRIAL_STATES[t.state.name])) for t in trials]
        frame = frame.rename(columns={"state": "trial_state"})
        frame.insert(1, "state", states)
        if seeds > 1:
            frame.insert(frame.columns.get_loc("value") + 1, "mean ± std (n)", spread(trials))
        frame["epochs_reported"] = [len(t.intermediate_values) for t in trials]
    return frame


def spread(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Each trial's mean ± std (n) over its seeds, as its user attributes hold them."""
    cells = []
    for trial in trials:
        attrs = trial.user_attrs
        known = MEAN_ATTR in attrs and STD_ATTR in attrs
        cell = f"{attrs[MEAN_ATTR]:.4g} ± {attrs[STD_ATTR]:.2g} ({attrs[N_ATTR]})" if known else ""
        cells.append(cell)
    return cells


def main(argv: list[str] | None = None) -> int:
    """``python -m sce_sweeps.cli trials LOCATION [--study NAME] [--csv PATH]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sce_sweeps.cli trials",
        description="Tabulate the trials of an Optuna study.",
    )
    parser.add_argument("location", help="a sweep dir, a journal file or a database URL")
    parser.add_argument("--study", default=None, help="study name (if the storage has several)")
    parser.add_argument("--csv", default=None, help="also write the table to this CSV file")
    args = parser.parse_args(argv)
    try:
        frame = trials_table(args.location, args.study)
    except (FileNotFoundError, ValueError, RunFileError) as e:
        print(f"sce_sweeps.cli trials: {e}", file=sys.stderr)
        return 2
    if args.csv:
        frame.to_csv(args.csv, index=False)
    print(frame.to_string(index=False) if len(frame) else "no trials yet")
    return 0
