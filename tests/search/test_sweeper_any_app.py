"""The Optuna sweeper with a minimal Hydra app that knows nothing of sce_sweeps: a few lines
returning a float, run through Hydra's basic launcher and through launcher sce_local."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sce_sweeps.runtime.trial import open_storage

APP = """
import hydra


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    return -((float(cfg.x) - 0.3) ** 2)


if __name__ == "__main__":
    main()
"""


@pytest.mark.e2e
@pytest.mark.parametrize("launcher", ["basic", pytest.param("sce_local", marks=pytest.mark.slow)])
def test_sweeper_searches_a_minimal_app(tmp_path: Path, launcher: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    sweep_dir = tmp_path / "search"
    cmd = [sys.executable, "app.py", "-m", "hydra/sweeper=sce_optuna", f"hydra/launcher={launcher}"]
    cmd += ["+x=interval(0,1)", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    cmd += ["hydra.sweeper.pruner=none", "hydra.sweeper.seed=0", f"hydra.sweep.dir={sweep_dir}"]
    if launcher == "sce_local":
        cmd += ["hydra.launcher.poll_s=0.1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    storage = open_storage(str(sweep_dir / "optuna.journal"))
    study = optuna.load_study(study_name="search", storage=storage)  # named after the sweep dir
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    for trial in study.trials:
        assert trial.value == pytest.approx(-((trial.params["+x"] - 0.3) ** 2))
    with (sweep_dir / "trials.csv").open() as f:
        assert {row["state"] for row in csv.DictReader(f)} == {"completed"}
    assert (sweep_dir / "manifest.json").exists() == (launcher == "sce_local")


@pytest.mark.e2e
def test_space_is_checked_by_the_apps_own_check_before_any_trial(tmp_path: Path) -> None:
    """sce_sweeps' preset names its check (hydra.sweeper.validate); the sweeper knows no key."""
    from tests.support import run_cli

    sweep_dir = tmp_path / "search"
    proc = run_cli(
        "-m", "+sweep=optuna_search", "loss.coeff=interval(0,2)", f"hydra.sweep.dir={sweep_dir}",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "sce_sweeps: invalid search space: loss.coeff=2.0 is invalid: must be in [0, 1]"
    )
    assert not (sweep_dir / "optuna.journal").exists()
