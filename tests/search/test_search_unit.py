"""The Optuna search without training: search space, samplers, the trial side, the
asynchronous scheduler (with a fake launcher whose jobs sleep), retries and resume logic."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.sce_sweeps_optuna._impl import (
    AsyncOptunaSweeper,
    Param,
    counted_trials,
    param_from_override,
)
from hydra_plugins.sce_sweeps_optuna.config import make_sampler
from sce_sweeps.runtime.adapters.optuna_storage import set_user_attr
from sce_sweeps.runtime.search import main, trials_table
from sce_sweeps.runtime.trial import (
    ENV_TRIAL,
    HEARTBEAT_ATTR,
    RETRY_OF_ATTR,
    RUN_DIR_ATTR,
    STUDY_ATTR,
    TrialReporter,
    make_pruner,
    open_storage,
    trial_overrides,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _param(line: str) -> Param:
    return param_from_override(OverridesParser.create().parse_override(line))


def test_search_space_from_hydra_syntax():
    coeff = _param("loss.coeff=interval(0, 1)")
    assert coeff.distribution == FloatDistribution(0.0, 1.0)
    assert coeff.override(0.25) == "loss.coeff=0.25"
    temp = _param("loss.temp=tag(log, interval(0.05, 0.5))")
    assert temp.distribution == FloatDistribution(0.05, 0.5, log=True)
    epochs = _param("trainer.epochs=int(interval(2, 8))")
    assert epochs.distribution == IntDistribution(2, 8)
    queue = _param("loss.queue_size=choice(0, 1024, 4096)")
    assert queue.distribution == CategoricalDistribution([0, 1024, 4096])
    assert queue.override(1024) == "loss.queue_size=1024"
    assert queue.grid_values() == [0, 1024, 4096]
    names = _param("optim.name=choice(sgd, lars)")
    assert names.override("lars") == "optim.name=lars"
    steps = _param("loss.queue_size=range(0, 12, 4)")
    assert steps.distribution == IntDistribution(0, 12, step=4)
    assert steps.grid_values() == [0, 4, 8]  # hydra-optuna-sweeper's grid leaves out the stop
    floats = _param("loss.coeff=range(0, 1, 0.25)")
    assert floats.distribution == FloatDistribution(0.0, 1.0, step=0.25)
    assert coeff.grid_values() is None


def test_ranges_and_shuffle_sample_as_hydra_optuna_sweeper():
    """range() includes its stop; shuffle(range()) is categorical (hydra-optuna-sweeper)."""
    assert _param("x=range(1,3)").distribution == IntDistribution(1, 3)
    assert _param("x=range(0.5,5.5,step=1)").distribution == FloatDistribution(0.5, 5.5, step=1)
    shuffled = _param("x=shuffle(range(1,3))").distribution
    assert isinstance(shuffled, CategoricalDistribution)
    assert sorted(shuffled.choices) == [1, 2]


@pytest.mark.parametrize(
    "line",
    [
        "loss.coeff=tag(log, choice(0.1, 0.2))",
        "loss.coeff=range(5, 1)",
        "loss.coeff=interval(1, 1)",
        "loss.coeff=choice([1, 2], [3])",
    ],
)
def test_unsupported_sweeps_fail_naming_the_key(line):
    with pytest.raises(ValueError, match="loss.coeff"):
        _param(line)


def test_every_sampler_and_pruner_builds():
    kinds = {
        "tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": optuna.samplers.GPSampler,
        "random": optuna.samplers.RandomSampler,
        "nsgaii": optuna.samplers.NSGAIISampler,
    }
    for name, cls in kinds.items():
        assert isinstance(make_sampler(name, seed=0), cls)
    assert isinstance(make_sampler("grid", grid={"x": [1, 2]}), optuna.samplers.GridSampler)
    with pytest.raises(ValueError, match="grid"):
        make_sampler("grid", grid=None)
    with pytest.raises(ValueError, match="hydra.sweeper.sampler='bogus' is invalid"):
        make_sampler("bogus")
    qmc = make_sampler({"_target_": "optuna.samplers.QMCSampler", "seed": None}, seed=3)
    assert isinstance(qmc, optuna.samplers.QMCSampler) and qmc._seed == 3
    with pytest.raises(ValueError, match="_target_"):
        make_sampler({"seed": 1})
    pruners = {
        "median": optuna.pruners.MedianPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }
    for name, cls in pruners.items():
        assert isinstance(make_pruner(name), cls)
    with pytest.raises(ValueError, match="unknown pruner"):
        make_pruner("bogus")


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"n_jobs": 0}, "n_jobs"),
        ({"n_trials": 0}, "n_trials"),
        ({"direction": ["maximize", "minimize"], "objectives": ["a"]}, "direction"),
        ({"max_failure_rate": 1.5}, "max_failure_rate"),
        ({"direction": "up"}, "direction"),
        (
            {
                "objectives": ["knn_top1", "wall_time_s"],
                "direction": ["maximize", "minimize"],
                "pruner": "median",
            },
            "pruner",
        ),
        ({"heartbeat_interval": 10, "stale_after": 5}, "stale_after"),
    ],
)
def test_bad_settings_fail_naming_the_key(settings, key):
    with pytest.raises(ValueError, match=f"hydra.sweeper.{key}="):
        AsyncOptunaSweeper(**settings)


# ------------------------------------------------------------------ the trial side


def _study(tmp_path: Path, pruner: str = "median", **pruner_kwargs) -> optuna.Study:
    study = optuna.create_study(
        storage=open_storage(str(tmp_path / "optuna.journal")),
        study_name="s",
        direction="maximize",
    )
    study.set_user_attr(
        STUDY_ATTR,
        {
            "objectives": ["knn_top1"],
            "pruner": pruner,
            "pruner_kwargs": pruner_kwargs,
            "heartbeat_interval": 0.1,
        },
    )
    return study


def _reporter(tmp_path: Path, number: int) -> TrialReporter:
    """The reporter a job of trial ``number`` opens, with the environment Hydra gives it from
    the sweeper's overrides (hydra.job.env_set)."""
    env = {}
    for line in trial_overrides(str(tmp_path / "optuna.journal"), "s", number):
        key, value = line.removeprefix("++hydra.job.env_set.").split("=", 1)
        env[key] = value.strip("'")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        reporter = TrialReporter.open(tmp_path / str(number))
    assert reporter is not None
    assert TrialReporter.open(tmp_path) is None  # outside a search
    return reporter


def test_trial_reports_prunes_beats_and_tells(tmp_path):
    study = _study(tmp_path, n_startup_trials=1)
    first = study.ask()
    first.report(50.0, 1)
    first.report(60.0, 2)
    study.tell(first, 60.0)

    pruned = study.ask()
    reporter = _reporter(tmp_path, pruned.number)
    # the median pruner compares the trial's best value so far with the median at that epoch
    assert not reporter.on_epoch_end(1, {"epoch": 1, "loss": 1.0, "knn_top1": 55.0})
    assert reporter.on_epoch_end(2, {"epoch": 2, "loss": 1.0, "knn_top1": 58.0})
    assert reporter.stop_status == "pruned"
    time.sleep(0.3)
    fields = reporter.finish("pruned", {"reason": reporter.stop_reason})
    assert fields["state"] == "PRUNED" and fields["trial_number"] == pruned.number
    frozen = study.trials[pruned.number]
    assert frozen.intermediate_values == {1: 55.0, 2: 58.0}
    assert frozen.system_attrs[HEARTBEAT_ATTR] > time.time() - 60
    assert frozen.user_attrs["run_dir"].endswith(str(pruned.number))

    done = study.ask()
    reporter = _reporter(tmp_path, done.number)
    assert reporter.finish("completed", {"knn_top1": 65.0, "wall_time_s": 3.0})["state"] == (
        "COMPLETE"
    )
    assert study.trials[done.number].value == 65.0

    failed = study.ask()
    reporter = _reporter(tmp_path, failed.number)
    assert reporter.finish("failed", {"reason": "NonFiniteLossError"})["state"] == "FAIL"
    assert study.trials[failed.number].user_attrs["reason"] == "NonFiniteLossError"

    nan = study.ask()
    assert (
        _reporter(tmp_path, nan.number).finish("completed", {"knn_top1": math.nan})["state"]
        == "FAIL"
    )
    assert _reporter(tmp_path, nan.number).finished  # a rerun job sees the verdict


def test_trial_given_up_by_the_sweeper_stops_its_job(tmp_path):
    study = _study(tmp_path, pruner="none")
    trial = study.ask()
    reporter = _reporter(tmp_path, trial.number)
    study.tell(trial.number, state=TrialState.FAIL)  # e.g. marked stale meanwhile
    time.sleep(0.3)  # the heartbeat finds out
    assert reporter.on_epoch_end(1, {"epoch": 1, "loss": 1.0, "knn_top1": 50.0})
    assert reporter.stop_status == "failed" and "FAIL" in reporter.stop_reason
    assert reporter.finish("failed", {})["state"] == "FAIL"


# ------------------------------------------------------------------ the scheduler


class FakeLauncher:
    """Runs each job in the calling thread: sleeps durations[n], returns -(x - 0.3)^2, or
    raises for the trial numbers in ``die`` (a job killed from outside)."""

    thread_safe_launch = True

    def __init__(self, durations: dict[int, float], die: set[int] = frozenset()) -> None:
        self.durations = durations
        self.die = set(die)
        self.times: dict[int, tuple[float, float]] = {}
        self.overrides: dict[int, list[str]] = {}

    def launch(self, job_overrides, initial_job_idx):
        (overrides,) = job_overrides
        number = initial_job_idx
        assert f"++hydra.job.env_set.{ENV_TRIAL}='{number}'" in overrides
        start = time.monotonic()
        time.sleep(self.durations.get(number, 0.05))
        self.times[number] = (start, time.monotonic())
        self.overrides[number] = list(overrides)
        if number in self.die:
            raise RuntimeError(f"job of trial {number} was killed")
        x = float(next(o for o in overrides if o.startswith("x=")).split("=")[1])
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=-((x - 0.3) ** 2))]


def _sweeper(tmp_path: Path, launcher: FakeLauncher, **settings) -> tuple:
    settings = {"n_trials": 5, "n_jobs": 2, "pruner": "none", "seed": 0, **settings}
    settings.setdefault("heartbeat_interval", 0.2)
    settings.setdefault("stale_after", 1.0)
    sweeper = AsyncOptunaSweeper(**settings)
    sweeper.launcher = launcher
    sweeper.space = {"x": Param("x", FloatDistribution(0.0, 1.0))}
    sweeper.storage_str = str(tmp_path / "optuna.journal")
    sweeper.study_name = "s"
    study = optuna.create_study(
        storage=open_storage(sweeper.storage_str),
        study_name="s",
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
        load_if_exists=True,
    )
    return sweeper, study


def test_a_new_trial_starts_as_soon_as_any_ends(tmp_path):
    launcher = FakeLauncher({0: 1.5, 1: 0.2, 2: 0.2, 3: 0.2, 4: 0.2})
    sweeper, study = _sweeper(tmp_path, launcher)
    sweeper.optimize(study)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    end_of_0 = launcher.times[0][1]
    # trials 1-4 ran one after the other beside the long trial 0, never waiting for it (a
    # batch-synchronous loop starts trial 2 after 0 ends; benchmarks/optuna_async.py times both)
    assert all(launcher.times[n][0] < end_of_0 for n in (1, 2, 3, 4))
    assert all("SCE_OPTUNA_STORAGE=" in " ".join(o) for o in launcher.overrides.values())


def test_killed_job_is_failed_and_retried_with_the_same_params(tmp_path):
    launcher = FakeLauncher({}, die={1})
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=4)
    sweeper.optimize(study)
    trials = study.trials
    assert trials[1].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == 1]
    assert retry.params == trials[1].params and retry.state == TrialState.COMPLETE
    assert len(counted_trials(trials)) == 4 and len(trials) == 5


class NaNLauncher(FakeLauncher):
    """Returns NaN for the trial numbers in ``die``, as launcher=local|slurm return for a job
    that died; the job of trial 1 opened its trial first, as a TrialReporter does."""

    study: optuna.Study

    def launch(self, job_overrides, initial_job_idx):
        number = initial_job_idx
        if number not in self.die:
            return super().launch(job_overrides, initial_job_idx)
        if number == 1:
            set_user_attr(self.study, 1, RUN_DIR_ATTR, "run")
        return [JobReturn(status=JobStatus.COMPLETED, _return_value=math.nan)]


def test_job_that_opened_its_trial_and_died_is_retried_whatever_it_returned(tmp_path):
    launcher = NaNLauncher({}, die={1, 3})  # 2 is the retry of 1, asked next
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=4, max_failure_rate=1.0)
    launcher.study = study
    sweeper.optimize(study)
    trials = study.trials
    (retry,) = [t for t in trials if RETRY_OF_ATTR in t.user_attrs]
    assert retry.user_attrs[RETRY_OF_ATTR] == 1 and retry.params == trials[1].params
    assert trials[1].state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    # a task that returned NaN without opening its trial: FAIL, not retried
    assert trials[3].state == TrialState.FAIL
    assert "non-finite" in trials[3].user_attrs["reason"]
    assert len(counted_trials(trials)) == 4 and len(trials) == 5


def test_no_retry_when_retries_are_used_up(tmp_path):
    launcher = FakeLauncher({}, die={0})
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=3, max_retries=0, max_failure_rate=1)
    sweeper.optimize(study)
    assert [t.state for t in study.trials].count(TrialState.FAIL) == 1
    assert len(study.trials) == 3  # the failed trial counts


def test_too_many_failures_stop_the_search(tmp_path):
    """max_failure_rate is judged against at least n_jobs trials (hydra-optuna-sweeper judges
    each batch of n_jobs): at 0.0 no trial starts after a failure, the running one ends, and
    the search raises the failure; at 0.5 one failure in the first two trials is allowed."""
    launcher = FakeLauncher({1: 0.3}, die={0})
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=6, max_retries=0)
    sweeper.optimize(study)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    with pytest.raises(RuntimeError, match="job of trial 0 was killed"):
        sweeper._raise_if_too_many_failures()
    half = tmp_path / "half"
    half.mkdir()
    sweeper, study = _sweeper(half, launcher, n_trials=4, max_retries=0, max_failure_rate=0.5)
    sweeper.optimize(study)
    assert len(study.trials) == 4
    sweeper._raise_if_too_many_failures()  # 1 of 4 failed


def test_grid_search_tells_its_last_trial_without_error(tmp_path):
    """The grid sampler calls study.stop() once its grid is used up; outside
    study.optimize Optuna raises RuntimeError there. The search ends cleanly."""
    # n_trials as the sweeper lowers it to the grid's size
    sweeper, study = _sweeper(tmp_path, FakeLauncher({}), n_trials=2)
    sweeper.space = {"x": _param("x=choice(0.1, 0.3)")}
    study.sampler = optuna.samplers.GridSampler({"x": [0.1, 0.3]})
    sweeper.optimize(study)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["x"] for t in study.trials) == [0.1, 0.3]


@pytest.mark.parametrize(("per_run", "total"), [(False, 3), (True, 6)])
def test_rerunning_adds_trials_only_with_n_trials_per_run(tmp_path, per_run, total):
    """By default n_trials counts the whole study (a rerun resumes); n_trials_per_run=true
    adds n_trials at each run, as hydra-optuna-sweeper does."""
    for _ in range(2):
        sweeper, study = _sweeper(tmp_path, FakeLauncher({}), n_trials=3, n_trials_per_run=per_run)
        sweeper.optimize(study)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * total


def test_trials_left_running_are_watched_or_given_up(tmp_path):
    launcher = FakeLauncher({})
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=4)
    dead = study.ask({"x": FloatDistribution(0.0, 1.0)})  # its job was killed with the sweeper
    alive = study.ask({"x": FloatDistribution(0.0, 1.0)})  # its job still runs, then tells
    storage = study._storage

    def job() -> None:
        for _ in range(8):
            storage.set_trial_system_attr(alive._trial_id, HEARTBEAT_ATTR, time.time())
            time.sleep(0.2)
        study.tell(alive.number, 0.5)

    thread = threading.Thread(target=job)
    thread.start()
    sweeper.optimize(study)
    thread.join()
    trials = study.trials
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[alive.number].state == TrialState.COMPLETE
    assert alive.number not in launcher.times and dead.number not in launcher.times
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == dead.number]
    assert retry.params == trials[dead.number].params
    assert len(counted_trials(trials)) == 4


def test_trials_table_and_cli(tmp_path, capsys):
    launcher = FakeLauncher({})
    sweeper, study = _sweeper(tmp_path, launcher, n_trials=3)
    sweeper.optimize(study)
    frame = trials_table(str(tmp_path))
    assert list(frame["number"]) == [0, 1, 2] and "params_x" in frame
    assert set(frame["state"]) == {"completed"} and set(frame["trial_state"]) == {"COMPLETE"}
    assert main([str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    assert "completed" in capsys.readouterr().out
    assert (tmp_path / "t.csv").read_text().startswith("number,")
