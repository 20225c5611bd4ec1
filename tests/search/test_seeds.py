"""Seeds first-class in the search (``hydra.sweeper.seeds=k``): a trial is k jobs, one per seed;
its value is their mean, its curve the mean of theirs (what the pruner judges); a failed seed
job is launched again once. Real Hydra multiruns of small apps that know nothing of SCE."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sce_sweeps.runtime.search import main as trials_main
from sce_sweeps.runtime.trial import (
    ENV_SEED,
    MEAN_ATTR,
    N_ATTR,
    SEED_END_ATTR,
    SEED_EPOCH_ATTR,
    STD_ATTR,
    STUDY_ATTR,
    open_storage,
    trial_overrides,
)
from tests.search.test_search_unit import _sweeper
from tests.support import run_in_process

# Returns x + seed / 10; trial 1's seed 1 raises once, trial 2's seed 2 always (the attempts are
# counted in files: the basic launcher runs them in this process, one after the other).
RETURNING_APP = """
import os
from pathlib import Path

import hydra


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    trial, seed = int(os.environ["SCE_OPTUNA_TRIAL"]), int(cfg.seed)
    tries = Path(f"{cfg.attempts}/{trial}-{seed}")
    tries.mkdir(parents=True, exist_ok=True)
    (tries / str(len(list(tries.iterdir())))).touch()
    if (trial, seed) == (1, 1) and len(list(tries.iterdir())) == 1:
        raise RuntimeError("seed 1 of trial 1 fails on its first attempt")
    if (trial, seed) == (2, 2):
        raise RuntimeError("seed 2 of trial 2 always fails")
    return float(cfg.x) + seed / 10


if __name__ == "__main__":
    main()
"""

# Reports a constant per-seed curve through the trial reporter, the seeds in lockstep (an epoch
# starts once every seed has reported the one before), so that when the pruner stops a trial
# every one of its seed jobs is still running.
CURVES = {0: (0.5, 0.5, 0.5), 1: (0.1, 0.9, 0.8), 2: (0.9, 0.1, 0.1)}
EPOCHS = 5
REPORTING_APP = f"""
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from sce_sweeps.runtime.trial import SEED_EPOCH_ATTR, SEEDS_PRUNED_ATTR, TrialReporter

CURVES = {CURVES!r}


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    reporter = TrialReporter.open(Path(HydraConfig.get().runtime.output_dir))
    value = CURVES[reporter.number][int(cfg.seed)]
    for epoch in range(1, {EPOCHS} + 1):
        keys = [SEED_EPOCH_ATTR.format(seed=s, epoch=epoch - 1) for s in range(3)]
        deadline = time.monotonic() + 60  # not forever: a test that fails says why
        while epoch > 1 and time.monotonic() < deadline:
            attrs = reporter.storage.get_trial(reporter.trial_id).system_attrs
            if all(k in attrs for k in keys) or SEEDS_PRUNED_ATTR in attrs:
                break
            time.sleep(0.05)
        if reporter.on_epoch_end(epoch, {{"objective": value}}, last=epoch == {EPOCHS}):
            reporter.finish("pruned", {{"reason": reporter.stop_reason}})
            return value
    reporter.finish("completed", {{"objective": value}})
    return value


if __name__ == "__main__":
    main()
"""


def search(
    tmp_path: Path, app: str, *overrides: str
) -> tuple[Path, list[optuna.trial.FrozenTrial]]:
    """Run ``app`` under the sweeper with ``overrides``; its sweep dir and trials."""
    (tmp_path / "app.py").write_text(app)
    sweep_dir = tmp_path / "search"
    cmd = [sys.executable, "app.py", "-m", "hydra/sweeper=sce_optuna", "hydra.sweeper.seed=0"]
    cmd += ["hydra.sweeper.seed_key=+seed", f"hydra.sweep.dir={sweep_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]
    storage = open_storage(str(sweep_dir / "optuna.journal"))
    return sweep_dir, optuna.load_study(study_name="search", storage=storage).get_trials()


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_trial_is_k_seed_jobs_its_value_their_mean_a_failed_seed_retried_once(tmp_path):
    sweep_dir, trials = search(
        tmp_path,
        RETURNING_APP,
        "+x=interval(0,1)",
        f"+attempts={tmp_path / 'attempts'}",
        "hydra.sweeper.seeds=3",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=none",
        "hydra.sweeper.max_failure_rate=1.0",
    )
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]
    for trial in trials[:2]:  # seeds 0, 1, 2: x, x + 0.1, x + 0.2
        x = trial.params["+x"]
        assert trial.value == pytest.approx(x + 0.1)
        assert trial.user_attrs[MEAN_ATTR] == pytest.approx(x + 0.1)
        assert trial.user_attrs[STD_ATTR] == pytest.approx(0.1)
        assert trial.user_attrs[N_ATTR] == 3
        ends = [trial.system_attrs[SEED_END_ATTR.format(seed=s)] for s in range(3)]
        assert [e["value"] for e in ends] == pytest.approx([x, x + 0.1, x + 0.2])
    attempts = {p.name: len(list(p.iterdir())) for p in (tmp_path / "attempts").iterdir()}
    assert attempts == {**{f"{t}-{s}": 1 for t in range(3) for s in range(3)}, "1-1": 2, "2-2": 2}
    failed = trials[2]
    assert failed.user_attrs["reason"] == (
        "seed 2 failed 2 time(s), last: RuntimeError: seed 2 of trial 2 always fails"
    )
    # job k * trial + seed: its own run dir, its seed in its overrides
    for trial in trials:
        for seed in range(3):
            overrides = (
                sweep_dir / str(3 * trial.number + seed) / ".hydra/overrides.yaml"
            ).read_text()
            assert f"- +seed={seed}\n" in overrides

    out = run_in_process(str(sweep_dir), main=trials_main)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert "mean ± std (n)" in header
    x0 = trials[0].params["+x"]
    assert f"{x0 + 0.1:.4g} ± 0.1 (3)" in rows[0]
    assert "seed 2 of trial 2 always fails" in rows[2]
    with (sweep_dir / "trials.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["state"] for r in table] == ["completed", "completed", "failed"]
    assert float(table[1]["user_attrs_value_mean"]) == pytest.approx(trials[1].value)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_pruner_judges_the_mean_of_the_seeds_and_stops_them_all(tmp_path):
    """Trial 1's seed 0 alone (0.1) would be pruned against trial 0 (0.5), its mean (0.6) is
    not; trial 2's seed 0 alone (0.9) would not be, its mean (0.37) is."""
    sweep_dir, trials = search(
        tmp_path,
        REPORTING_APP,
        "+x=interval(0,1)",
        "hydra/launcher=sce_local",
        "hydra.launcher.poll_s=0.1",
        "hydra.launcher.max_parallel=3",  # a trial's three seed jobs at once
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.seeds=3",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.pruner=median",
        "+hydra.sweeper.pruner_kwargs.n_startup_trials=1",
        "+hydra.sweeper.pruner_kwargs.n_warmup_steps=0",
    )
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    ]
    assert trials[1].value == pytest.approx(0.6)
    assert trials[1].intermediate_values == pytest.approx({e: 0.6 for e in range(1, EPOCHS + 1)})
    pruned = trials[2]
    assert pruned.intermediate_values == pytest.approx({1: 1.1 / 3})
    assert pruned.user_attrs[MEAN_ATTR] == pytest.approx(1.1 / 3)
    for seed in range(3):  # every seed job stopped, pruned, well before the last epoch
        assert pruned.system_attrs[SEED_END_ATTR.format(seed=seed)]["state"] == "PRUNED"
        reported = [
            e
            for e in range(1, EPOCHS + 1)
            if SEED_EPOCH_ATTR.format(seed=seed, epoch=e) in pruned.system_attrs
        ]
        assert reported[-1] <= 3, reported
    assert len(list(sweep_dir.glob(".submitit/*/*_submitted.pkl"))) == 9  # no seed job twice


def test_one_seed_per_trial_keeps_the_jobs_and_the_study_as_they_were(tmp_path):
    from hydra_plugins.sce_sweeps_optuna._impl import AsyncOptunaSweeper

    tags = trial_overrides("/s/optuna.journal", "study", 4)
    assert not any(ENV_SEED in t for t in tags)
    sweeper = AsyncOptunaSweeper(sampler="random", seed=0)
    study = sweeper._open_study(tmp_path)
    assert "seeds" not in study.user_attrs[STUDY_ATTR]


class SeedLauncher:
    """Runs a seed job in the calling thread: returns x + seed / 10, records (trial, seed)."""

    thread_safe_launch = True

    def __init__(self) -> None:
        self.launched: list[tuple[int, int]] = []

    def launch(self, job_overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        (overrides,) = job_overrides
        values = dict(o.split("=", 1) for o in overrides)
        seed = int(values["seed"])
        self.launched.append(divmod(initial_job_idx, 3))
        assert divmod(initial_job_idx, 3)[1] == seed
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=float(values["x"]) + seed / 10)]


def test_a_resumed_search_runs_only_the_seeds_a_trial_still_lacks(tmp_path):
    """A trial left RUNNING by a killed search, its seed 0 done, seeds 1 and 2 killed: the rerun
    launches seeds 1 and 2 of it again, not seed 0, and tells the trial the mean of the three."""
    from optuna.distributions import FloatDistribution

    launcher = SeedLauncher()
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=2, n_jobs=1, seeds=3)
    left = study.ask({"x": FloatDistribution(0.0, 1.0)})
    end = {"state": "COMPLETE", "value": 1.0, "reason": None}
    study._storage.set_trial_system_attr(left._trial_id, SEED_END_ATTR.format(seed=0), end)
    sweeper.optimize(study)
    trials = study.trials
    assert sorted(launcher.launched) == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    x = trials[0].params["x"]
    assert trials[0].state == TrialState.COMPLETE
    assert trials[0].value == pytest.approx((1.0 + 2 * x + 0.3) / 3)
    assert trials[0].user_attrs[N_ATTR] == 3
    assert len(trials) == 2 and trials[1].state == TrialState.COMPLETE


class ControllerGone(BaseException):
    """The controller's own process ends (a kill, a requeue) while a seed job is launched."""


class FailingSeedLauncher(SeedLauncher):
    """Seed 1's job dies at every launch; at seed 1's launch number ``gone_at`` the controller
    itself goes instead."""

    def __init__(self, gone_at: int | None = None) -> None:
        super().__init__()
        self.gone_at = gone_at

    def launch(self, job_overrides, initial_job_idx):
        trial, seed = divmod(initial_job_idx, 3)
        if seed != 1:
            return super().launch(job_overrides, initial_job_idx)
        self.launched.append((trial, seed))
        if self.launched.count((trial, seed)) == self.gone_at:
            raise ControllerGone
        raise RuntimeError(f"seed job {seed} of trial {trial} was killed")


def test_a_restarted_controller_does_not_give_a_failed_seed_its_retries_again(tmp_path):
    """Seed 1 died, and the controller went while its retry ran: the retry was its last launch
    (max_retries=1). The restarted controller fails the trial with the reason; before, its count
    started again and seed 1 was launched twice more."""
    first = FailingSeedLauncher(gone_at=2)
    sweeper, study = _sweeper(tmp_path, first, n_trials=1, n_jobs=1, seeds=3)
    with pytest.raises(ControllerGone):
        sweeper.optimize(study)
    assert first.launched.count((0, 1)) == 2 and study.trials[0].state == TrialState.RUNNING

    again = FailingSeedLauncher()
    sweeper, study = _sweeper(tmp_path, again, n_trials=1, n_jobs=1, seeds=3)
    sweeper.optimize(study)
    assert (0, 1) not in again.launched  # its two launches were spent
    (trial,) = study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["reason"].startswith("seed 1 failed 2 time(s), last: ")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_sce_app_trains_a_trials_seeds_and_is_told_their_mean(tmp_path):
    """The tiny SCE app (its own `seed` key, its trial reporter): 2 trials x 3 seed jobs."""
    from tests.search.test_optuna_sweeps import LOCAL, load_trials, search_args
    from tests.support import read_json, run_cli

    sweep_dir = tmp_path / "search"
    settings = ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1", "hydra.sweeper.seeds=3"]
    run_cli(*search_args(sweep_dir, 2, *settings, *LOCAL, "hydra.launcher.max_parallel=3"))
    trials = load_trials(sweep_dir)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        results = [
            read_json(sweep_dir / str(3 * trial.number + s) / "result.json") for s in range(3)
        ]
        assert [r["params"]["seed"] for r in results] == [0, 1, 2]
        assert [r["optuna"]["seed"] for r in results] == [0, 1, 2]
        top1 = [r["knn_top1"] for r in results]
        assert trial.value == pytest.approx(sum(top1) / 3)
        assert trial.user_attrs[N_ATTR] == 3 and sorted(trial.intermediate_values) == [1, 2]
