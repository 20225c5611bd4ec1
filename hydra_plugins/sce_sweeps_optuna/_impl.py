"""Asynchronous Optuna search over any Hydra launcher (docs/search.md): P threads each ask a
trial, launch ONE job for it (``initial_job_idx=trial.number``: run dir ``<sweep dir>/<number>``)
and wait for it. The job tells the study itself (:class:`.trial.TrialReporter`); the sweeper
gives a verdict only to a trial whose job ended without one. With ``seeds=k`` a trial is k jobs
at once, one per seed (job ``k * number + seed``), and its value is their mean."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.sce_sweeps_optuna.config import SCEOptunaSweeperConf, is_grid, make_sampler
from sce_sweeps.runtime import slurm
from sce_sweeps.runtime.adapters.hydra_config import job_error
from sce_sweeps.runtime.adapters.optuna_storage import (
    create_study,
    get_trial,
    set_user_attr,
    storage_of,
    trial_id,
)
from sce_sweeps.runtime.errors import ConfigError
from sce_sweeps.runtime.record import Manifest, RunFileError, SweepDirBusyError, claim_sweep_dir
from sce_sweeps.runtime.search import trials_table
from sce_sweeps.runtime.trial import (
    DEFAULT_OBJECTIVE,
    JOURNAL_NAME,
    N_ATTR,
    RETRY_OF_ATTR,
    RUN_DIR_ATTR,
    SEED_END_ATTR,
    SEED_JOB_ATTR,
    SEED_LAUNCHES_ATTR,
    STD_ATTR,
    STUDY_ATTR,
    RetryingStorage,
    last_sign_of_life,
    make_pruner,
    open_storage,
    seed_ends,
    tell_seeds,
    trial_overrides,
)

log = logging.getLogger(__name__)

RETRIES_ATTR = "retries"
GRID_STOP = "`Study.stop` is supposed to be invoked inside an objective function or a callback"


def tell(study: optuna.Study, number: int, values: Any = None, **kwargs: Any) -> None:
    """``study.tell`` outside ``study.optimize``: the grid sampler calls ``study.stop()``
    once its grid is used up, which Optuna refuses there (the trial is told all the same)."""
    try:
        study.tell(number, values, skip_if_finished=True, **kwargs)
    except RuntimeError as e:
        if GRID_STOP not in str(e):
            raise


@dataclass
class Param:
    """A searched parameter: its override key, distribution and, for choices, Hydra's encoding
    of each choice."""

    key: str
    distribution: BaseDistribution
    encoded: list[str] | None = None

    def override(self, value: Any) -> str:
        if self.encoded is not None:
            index = self.distribution.choices.index(value)
            return f"{self.key}={self.encoded[index]}"
        return f"{self.key}={value!r}"

    def extremes(self) -> list[Any]:
        """Every choice, or the bounds."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        return [dist.low, dist.high]

    def grid_values(self) -> list[Any] | None:
        """Every value, for the grid sampler (None: continuous); as in hydra-optuna-sweeper's
        grid, a range's stop is left out, though its sampled distribution includes it."""
        dist = self.distribution
        if isinstance(dist, CategoricalDistribution):
            return list(dist.choices)
        if isinstance(dist, IntDistribution) and not dist.log:
            return list(range(dist.low, dist.high, dist.step))
        if isinstance(dist, FloatDistribution) and dist.step is not None:
            count = int((dist.high - dist.low) // dist.step)
            return [dist.low + i * dist.step for i in range(count)]
        return None


def param_from_override(override: Override) -> Param:
    """The distribution of a sweep override, as hydra-optuna-sweeper samples it (``range``
    includes its stop); ConfigError for a sweep Optuna cannot sample."""
    key = override.get_key_element()
    value = override.value()
    tags = set(value.tags)
    if tags - {"log"}:
        log.warning("%s: ignoring tags %s (only 'log' means something here)", key, tags - {"log"})
    log_scale = "log" in tags
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if not low < high:
            raise ConfigError(f"{key}: interval(low, high) needs low < high")
        if isinstance(low, int) and isinstance(high, int):  # int(interval(...))
            return Param(key, IntDistribution(low, high, log=log_scale))
        return Param(key, FloatDistribution(float(low), float(high), log=log_scale))
    if log_scale:
        raise ConfigError(f"{key}: tag(log, ...) needs an interval")
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if step is None or step <= 0 or stop <= start:
            raise ConfigError(f"{key}: range(start, stop, step) needs start < stop and step > 0")
        if not value.shuffle:  # Optuna lowers a stop that is not start + k * step
            if all(isinstance(v, int) for v in (start, stop, step)):
                return Param(key, IntDistribution(start, stop, step=step))
            return Param(key, FloatDistribution(float(start), float(stop), step=float(step)))
    elif not isinstance(value, ChoiceSweep):
        raise ConfigError(f"{key}: unsupported sweep {override.input_line!r}")
    choices = list(override.sweep_iterator())
    if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
        raise ConfigError(f"{key}: choice() values must be numbers, strings, booleans or null")
    return Param(key, CategoricalDistribution(choices), list(override.sweep_string_iterator()))


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials that count towards n_trials: all but a FAIL replaced by a retry."""
    replaced = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    return [t for t in trials if t.state.is_finished() and t.number not in replaced]


@dataclass
class AsyncOptunaSweeper(SCEOptunaSweeperConf):
    """The sweeper's logic, behind the Hydra plugin :class:`..sweeper.SCEOptunaSweeper`; its
    fields are the config's keys."""

    def __post_init__(self) -> None:
        directions = [self.direction] if isinstance(self.direction, str) else self.direction
        self.directions = [str(getattr(d, "name", d)).lower() for d in directions]
        if self.objectives is None:  # the task's return value(s)
            n = len(self.directions)
            self.objectives = (
                [DEFAULT_OBJECTIVE] if n == 1 else [f"{DEFAULT_OBJECTIVE}_{i}" for i in range(n)]
            )
        if self.pruner is None:  # Optuna prunes single-objective studies only
            self.pruner = "median" if len(self.objectives) == 1 else "none"
        extend = self.custom_search_space
        self._extend_space = get_method(extend) if extend else None
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None
        self.space: dict[str, Param] = {}
        self.fixed: list[str] = []
        self.fixed_values: dict[str, str] = {}  # key=value overrides, as trial user attrs
        self.storage_str = ""
        self._settled = 0  # trials of this run with a verdict (not counting retried ones)
        self._failures: list[tuple[int, str, BaseException | None]] = []
        self._lock = threading.Lock()  # around ask / tell / the trial budget
        self._launch_lock: threading.Lock | None = None  # set for non-thread-safe launchers
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

        def bad(key: str, value: Any, allowed: str) -> ConfigError:
            return ConfigError(f"hydra.sweeper.{key}={value!r} is invalid: {allowed}")

        if self.n_trials < 1:
            raise bad("n_trials", self.n_trials, "must be >= 1")
        if self.n_jobs < 1:
            raise bad("n_jobs", self.n_jobs, "must be >= 1")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise bad("max_failure_rate", self.max_failure_rate, "must be in [0, 1]")
        if any(d not in ("maximize", "minimize") for d in self.directions):
            raise bad("direction", self.directions, "must be maximize or minimize (or a list)")
        if len(self.directions) != len(self.objectives):
            raise bad("direction", self.directions, f"needs one per objective {self.objectives}")
        if self.pruner != "none" and len(self.objectives) != 1:
            raise bad("pruner", self.pruner, "needs one objective: set hydra.sweeper.pruner=none")
        if self.max_retries < 0:
            raise bad("max_retries", self.max_retries, "must be >= 0")
        if self.seeds < 1:
            raise bad("seeds", self.seeds, "must be >= 1")
        if self.seeds > 1 and len(self.objectives) != 1:
            raise bad("seeds", self.seeds, "needs one objective (the mean of one value)")
        if self.heartbeat_interval <= 0 or self.stale_after <= self.heartbeat_interval:
            raise bad("stale_after", self.stale_after, "must be > heartbeat_interval > 0")

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        # hydra-submitit-launcher's own two launchers are thread-safe (each call builds its own
        # executor), not their subclasses, which may keep state between calls
        safe = getattr(self.launcher, "thread_safe_launch", None)
        if safe is None:
            with contextlib.suppress(ImportError):
                from hydra_plugins.hydra_submitit_launcher import submitit_launcher as sl

                safe = type(self.launcher) in (sl.LocalLauncher, sl.SlurmLauncher)
        if not safe:
            self._launch_lock = threading.Lock()

    def _parse(self, arguments: list[str]) -> None:
        """Search space from ``params`` and the command line (which wins, key by key)."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{k}={v}" for k, v in (self.params or {}).items()] + list(arguments)
        merged = {o.get_key_element().lstrip("+~"): o for o in parser.parse_overrides(lines)}
        for override in merged.values():
            key = override.get_key_element()
            if override.is_delete():
                self.fixed.append(str(override.input_line))
            elif override.is_sweep_override():
                self.space[key] = param_from_override(override)
            else:
                value = override.get_value_element_as_str()
                self.fixed.append(f"{key}={value}")
                self.fixed_values[key] = value
        if self.seeds > 1 and self.seed_key.lstrip("+~") in merged:
            raise ConfigError(
                f"hydra.sweeper.seeds={self.seeds} sets {self.seed_key} in each trial's jobs: "
                f"drop {self.seed_key} from the overrides and the search space"
            )

    def _extremes(self) -> Iterator[list[str]]:
        """Override lists setting one parameter to an extreme, the others to their first."""
        if not self.space:
            yield list(self.fixed)
        first = {k: p.override(p.extremes()[0]) for k, p in self.space.items()}
        for key, param in self.space.items():
            for value in param.extremes():
                yield [*self.fixed, *{**first, key: param.override(value)}.values()]

    def _check_space(self) -> None:
        """Compose and validate every extreme of the space now, not in the middle of the search."""
        assert self.hydra_context is not None and self.config is not None
        check = get_method(self.validate) if self.validate else None
        loader = self.hydra_context.config_loader
        for overrides in self._extremes():
            cfg = loader.load_sweep_config(self.config, overrides)
            if check is None:
                continue
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            try:
                check(cfg)
            except Exception as e:
                line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"sce_sweeps: invalid search space: {line}", file=sys.stderr)
                raise SystemExit(2) from None

    def _open_study(self, sweep_dir: Path) -> optuna.Study:
        storage = self.storage or str(sweep_dir / JOURNAL_NAME)
        if "://" not in storage:
            storage = str(Path(storage).expanduser().resolve())
        self.storage_str = storage
        self.study_name = self.study_name or sweep_dir.name
        try:
            study = create_study(
                RetryingStorage(open_storage(storage), self.stale_after),
                study_name=self.study_name,
                pruner=make_pruner(self.pruner, self.pruner_kwargs),
                directions=self.directions,
                load_if_exists=True,
            )
        except ValueError as e:  # a corrupt line inside the journal: nothing is written
            print(
                f"sce_sweeps: {storage}: unreadable Optuna study ({type(e).__name__}: {e}); "
                "left as it is",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        found = [d.name.lower() for d in study.directions]
        if found != self.directions:
            raise ConfigError(
                f"study {self.study_name!r} in {storage} optimises {found}, "
                f"not hydra.sweeper.direction={self.directions}"
            )
        grid = (
            {k: p.grid_values() for k, p in self.space.items()} if is_grid(self.sampler) else None
        )
        # reseeded by the trials of a resumed study, which must not replay the first draws
        done = len(study.get_trials(deepcopy=False))
        study.sampler = make_sampler(
            self.sampler, self.sampler_kwargs, self.seed, grid, reseed=7919 * done
        )
        if grid and self.n_trials > (size := math.prod(len(v) for v in grid.values())):
            log.info("n_trials %d lowered to the grid's %d points", self.n_trials, size)
            self.n_trials = size
        # stale_after: how long a job retries a storage that does not answer
        shared = (
            "objectives",
            "directions",
            "pruner",
            "pruner_kwargs",
            "heartbeat_interval",
            "stale_after",
        )
        spec = {k: getattr(self, k) for k in shared}
        if self.seeds > 1:  # a study of one seed per trial keeps the spec it always had
            spec["seeds"] = self.seeds
        before = study.user_attrs.get(STUDY_ATTR, {}).get("seeds", 1)
        if done and before != self.seeds:  # its trials' values would mean something else
            raise ConfigError(
                f"study {self.study_name!r} in {storage} ran {before} seed(s) per trial, "
                f"not hydra.sweeper.seeds={self.seeds}"
            )
        study.set_user_attr(STUDY_ATTR, spec)
        return study

    def sweep(self, arguments: list[str]) -> list[FrozenTrial]:
        """Run the search; return the study's trials."""
        assert self.config is not None and self.launcher is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._parse(arguments)
        self._check_space()
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        try:  # one search per sweep dir at a time (its journal, its run dirs)
            claim_sweep_dir(sweep_dir)
        except SweepDirBusyError as e:
            print(f"sce_sweeps: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._open_study(sweep_dir)
        self.optimize(study)
        self._summarise(study, sweep_dir)
        self._raise_if_too_many_failures()
        return study.get_trials()

    def optimize(self, study: optuna.Study) -> None:
        """Keep P trials running until n_trials count; watch the trials left RUNNING."""
        trials = study.get_trials(deepcopy=False)
        self._inherited = [t for t in trials if t.state == TrialState.RUNNING]
        self._in_flight = {t.number for t in self._inherited}
        self._budget = self.n_trials
        if self.n_trials_per_run:  # n_trials more than the earlier runs ran or left running
            self._budget += len(counted_trials(trials)) + len(self._inherited)
        self._workers = workers = self.n_jobs if self._launch_lock is None else 1
        if self._launch_lock is not None and self.n_jobs > 1:
            name = type(self.launcher).__name__
            log.warning("%s is not thread-safe: one trial at a time, not %d", name, self.n_jobs)
        log.info(
            "Optuna study %r in %s: %d of %d trials done, %d left running by an earlier run; "
            "%d at a time",
            study.study_name,
            self.storage_str,
            len(counted_trials(trials)),
            self._budget,
            len(self._inherited),
            workers,
        )
        threads = [
            threading.Thread(
                target=self._worker, args=(study,), name=f"optuna-worker-{i}", daemon=True
            )  # daemon: Ctrl-C ends the sweeper; its running jobs are watched on the next run
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=1.0)
        if self._errors:
            raise self._errors[0]

    def _worker(self, study: optuna.Study) -> None:
        try:
            while True:
                with self._lock:
                    job = self._next(study)
                if job is None:
                    return
                action, trial = job
                try:
                    action(study, trial)
                finally:
                    with self._lock:
                        self._in_flight.discard(trial.number)
        except BaseException as e:  # stop the others: a broken storage is fatal
            self._errors.append(e)
            self._stop.set()

    def _next(self, study: optuna.Study) -> tuple[Callable[..., None], Any] | None:
        """Under the lock: watch an inherited trial, or run a new one; None when all are done."""
        if self._stop.is_set():
            return None
        if self._inherited:
            return self._watch, self._inherited.pop()
        done = len(counted_trials(study.get_trials(deepcopy=False)))
        if done + len(self._in_flight) >= self._budget:
            return None
        sampler = study.sampler
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
            return None
        trial = study.ask({k: p.distribution for k, p in self.space.items()})
        self._in_flight.add(trial.number)
        for key, value in self.fixed_values.items():  # as hydra-optuna-sweeper records them
            trial.set_user_attr(key, value)
        if self._extend_space is not None:  # define-by-run: (cfg, trial) suggests more
            self._extend_space(self.config, trial)
            overlap = sorted(set(trial.params) & set(self.fixed_values))
            if overlap:
                raise ConfigError(
                    f"hydra.sweeper.custom_search_space={self.custom_search_space} suggests "
                    f"{overlap}, which the overrides fix: drop one of them"
                )
        return self._run, trial

    def _param_overrides(self, trial: optuna.Trial | FrozenTrial) -> list[str]:
        """``key=value`` of each parameter, then of those a custom_search_space suggested."""
        params = [self.space[k].override(trial.params[k]) for k in self.space]
        extra = [f"{k}={v}" for k, v in trial.params.items() if k not in self.space]
        return params + extra

    def _overrides(self, trial: optuna.Trial | FrozenTrial, seed: int | None = None) -> list[str]:
        """A job's overrides: the trial's, and with ``seed`` (seeds > 1) its seed's."""
        tags = trial_overrides(self.storage_str, str(self.study_name), trial.number, seed)
        seeded = [] if seed is None else [f"{self.seed_key}={seed}"]
        return [*self.fixed, *self._param_overrides(trial), *seeded, *tags]

    def _run(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Launch one job for the trial (one per seed), wait for it, settle the trial."""
        assert self.launcher is not None
        if self.seeds > 1:
            self._run_seeds(study, trial, range(self.seeds))
            return
        overrides = self._param_overrides(trial)
        retry = trial.user_attrs.get(RETRY_OF_ATTR)
        again = f" (retry of {retry})" if retry is not None else ""
        log.info("trial %d%s starts: %s", trial.number, again, " ".join(overrides))
        returned: Any = None
        error: BaseException | None = None
        died = False
        job = self._overrides(trial)
        start = time.monotonic()
        try:
            with self._launch_lock or contextlib.nullcontext():
                ret = self.launcher.launch([job], initial_job_idx=trial.number)[0]
            if ret.status == JobStatus.COMPLETED:
                returned = ret.return_value
            else:  # the task raised: a failed trial, not retried
                error = job_error(ret) or RuntimeError(f"job status {ret.status.name}")
        except Exception as e:  # the job died (e.g. submitit's UncompletedJobError)
            error, died = e, True
        except BaseException as e:  # the launcher gave up (SystemExit): so does the search
            self._fail(study, get_trial(study, trial), repr(e), retry=True)
            raise
        self._settle(study, trial, returned, error, time.monotonic() - start, died)

    def _run_seeds(
        self, study: optuna.Study, trial: optuna.Trial | FrozenTrial, seeds: Sequence[int]
    ) -> None:
        """Run the trial's jobs of ``seeds`` at once, each launched again up to max_retries times
        when it fails; tell the trial their mean, or FAIL it with the reason of a seed that kept
        failing."""
        overrides = " ".join(self._param_overrides(trial))
        log.info("trial %d starts, seeds %s: %s", trial.number, list(seeds), overrides)
        start = time.monotonic()
        failed: dict[int, str] = {}
        errors: list[BaseException] = []

        def run(seed: int) -> None:
            try:
                reason = self._run_seed(study, trial, seed)
            except BaseException as e:  # the launcher gave up: so does the search
                errors.append(e)
            else:
                if reason is not None:
                    failed[seed] = reason

        threads = [
            threading.Thread(target=run, args=(s,), name=f"trial-{trial.number}-seed-{s}")
            for s in seeds
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:  # the trial stays RUNNING: a rerun launches the seeds it still lacks
            raise errors[0]
        frozen = get_trial(study, trial)
        error: BaseException | None = None
        if failed:
            seed, reason = min(failed.items())
            tries = self.max_retries + 1
            self._fail(study, frozen, f"seed {seed} failed {tries} time(s), last: {reason}")
        elif not tell_seeds(study, trial_id(study, frozen), self.seeds):
            error = RuntimeError("its seed jobs ended without a verdict")
        self._settle(study, frozen, None, error, time.monotonic() - start)

    def _run_seed(self, study: optuna.Study, trial: Any, seed: int) -> str | None:
        """Launch the trial's job of ``seed`` until it ends without failing, at most
        1 + max_retries times over the whole search: the launches are counted on the trial, so
        a restarted controller goes on with the count. The last failure's reason, or None."""
        key = SEED_LAUNCHES_ATTR.format(seed=seed)
        reason: str | None = None
        while True:
            frozen = get_trial(study, trial)
            launches = int(frozen.system_attrs.get(key, 0))
            if launches > self.max_retries:  # spent, by this controller or an earlier one
                end = frozen.system_attrs.get(SEED_END_ATTR.format(seed=seed)) or {}
                return reason or str(end.get("reason") or "its last job ended without a verdict")
            if launches:
                why = reason or "in an earlier run of the search"
                log.warning("trial %d seed %d failed (%s): again", trial.number, seed, why)
            storage_of(study).set_trial_system_attr(trial_id(study, frozen), key, launches + 1)
            reason = self._launch_seed(study, trial, seed)
            if reason is None or get_trial(study, trial).state.is_finished():
                return None  # done, or the trial has its verdict (another seed failed)

    def _launch_seed(self, study: optuna.Study, trial: Any, seed: int) -> str | None:
        """Launch one seed job and wait for it; the reason it failed, or None. The job records
        its end itself (its trial reporter); for an app without one, the sweeper records what
        the task returned."""
        assert self.launcher is not None
        job = self._overrides(trial, seed)
        error: BaseException | None = None
        returned: Any = None
        with self._launch_lock or contextlib.nullcontext():
            number = self.seeds * trial.number + seed
            try:
                ret = self.launcher.launch([job], initial_job_idx=number)[0]
            except Exception as e:  # the job died (e.g. submitit's UncompletedJobError)
                error = e
        if error is None and ret.status == JobStatus.COMPLETED:
            returned = ret.return_value
        elif error is None:  # the task raised
            error = job_error(ret) or RuntimeError(f"job status {ret.status.name}")
        if error is not None:
            return f"{type(error).__name__}: {error}"
        frozen = get_trial(study, trial)
        key = SEED_END_ATTR.format(seed=seed)
        end = frozen.system_attrs.get(key)
        if end is None:  # the task returned but did not report (no TrialReporter)
            end = self._returned_end(returned)
            storage_of(study).set_trial_system_attr(trial_id(study, frozen), key, end)
        return None if end["state"] != TrialState.FAIL.name else str(end["reason"] or "failed")

    @staticmethod
    def _returned_end(returned: Any) -> dict[str, Any]:
        """A seed job's end record from what its task returned: a finite float, or FAIL."""
        try:
            value = float(returned)
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value):
            return {"state": TrialState.COMPLETE.name, "value": value, "reason": None}
        reason = f"Return value must be a finite float. Got '{returned}'."
        return {"state": TrialState.FAIL.name, "value": None, "reason": reason}

    def _settle(
        self,
        study: optuna.Study,
        trial: Any,
        returned: Any,
        error: BaseException | None,
        seconds: float,
        died: bool = False,
    ) -> None:
        """Log the job's verdict, or give one: what the task returned, FAIL if it raised, FAIL
        and a retry if its job ``died``; count it towards max_failure_rate."""
        frozen = get_trial(study, trial)
        retried = False
        if not frozen.state.is_finished():
            if error is None and RUN_DIR_ATTR in frozen.user_attrs:
                # its job opened the trial's reporter, which tells a verdict whatever the run
                # does, yet none came: the job died (launcher=local|slurm return NaN for a job
                # killed without a return, where hydra-submitit-launcher raises)
                error, died = RuntimeError("its job ended without telling a verdict"), True
            if error is None:  # the task returned but did not tell (no TrialReporter)
                self._tell_returned(study, frozen, returned)
            else:
                retried = self._fail(study, frozen, f"{type(error).__name__}: {error}", died)
            frozen = get_trial(study, frozen)
        if not retried:
            self._count(frozen, error)
        values = frozen.values if frozen.values is not None else ""
        log.info(
            "trial %d %s %s after %.0f s (%d epochs reported)",
            frozen.number,
            frozen.state.name,
            values,
            seconds,
            len(frozen.intermediate_values),
        )

    def _tell_returned(self, study: optuna.Study, frozen: FrozenTrial, returned: Any) -> None:
        """Tell one float per objective, as hydra-optuna-sweeper checks it; else FAIL."""
        many = len(self.objectives) > 1
        try:
            values = [float(v) for v in returned] if many else [float(returned)]
        except (TypeError, ValueError):
            what = "a list or tuple of float-castable values" if many else "float-castable"
            self._fail(study, frozen, f"Return value must be {what}. Got '{returned}'.")
            return
        if len(values) != len(self.objectives):
            self._fail(
                study,
                frozen,
                "The number of the values and the number of the objectives are mismatched. "
                f"Expect {len(self.objectives)}, but actually {len(values)}.",
            )
        elif not all(math.isfinite(v) for v in values):
            self._fail(study, frozen, f"non-finite return value {values}")
        else:
            with self._lock:
                tell(study, frozen.number, values)

    def _fail(
        self, study: optuna.Study, frozen: FrozenTrial, reason: str, retry: bool = False
    ) -> bool:
        """Mark a trial FAIL with its ``reason`` unless its job told first; with ``retry`` (its
        job died), enqueue its parameters again while retries are left. True when retried."""
        with self._lock:
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                set_user_attr(study, frozen, "reason", reason)
            tell(study, frozen.number, state=TrialState.FAIL)
            if get_trial(study, frozen).state != TrialState.FAIL:
                return False  # the job's own verdict came first
            retries = int(frozen.user_attrs.get(RETRIES_ATTR, 0))
            if not retry or retries >= self.max_retries:
                left = "; no retries left" if retry else ""
                log.warning("trial %d FAIL (%s)%s", frozen.number, reason, left)
                return False
            study.enqueue_trial(
                frozen.params,
                user_attrs={RETRY_OF_ATTR: frozen.number, RETRIES_ATTR: retries + 1},
            )
        log.warning("trial %d FAIL (%s); its parameters are queued again", frozen.number, reason)
        return True

    def _count(self, frozen: FrozenTrial, error: BaseException | None) -> None:
        """Count a settled trial; once more than max_failure_rate of at least n_jobs of this
        run's trials failed (hydra-optuna-sweeper judges batches of n_jobs), none starts."""
        with self._lock:
            self._settled += 1
            if frozen.state == TrialState.FAIL:
                reason = str(frozen.user_attrs.get("reason", "failed"))
                self._failures.append((frozen.number, reason, error))
            failed = len(self._failures)
            if failed / max(self._settled, self._workers) > self.max_failure_rate:
                if not self._stop.is_set():
                    log.error(
                        "Failed %d times out of %d with max_failure_rate=%s: no new trials",
                        failed,
                        self._settled,
                        self.max_failure_rate,
                    )
                self._stop.set()

    def _raise_if_too_many_failures(self) -> None:
        """At the end: raise the first failure when over max_failure_rate of this run's failed."""
        failed, settled, rate = len(self._failures), self._settled, self.max_failure_rate
        if not failed or failed / settled <= rate:
            return
        number, reason, error = self._failures[0]
        log.error("Failed %d times out of %d with max_failure_rate=%s", failed, settled, rate)
        if error is not None:
            raise error
        raise ValueError(
            f"trial {number} failed: {reason} (hydra.sweeper.max_failure_rate={rate}; raise it "
            "to go on after failed trials)"
        )

    def _watch(self, study: optuna.Study, frozen: FrozenTrial) -> None:
        """Wait for a trial left RUNNING until its job tells, or goes stale: then FAIL, retry."""
        poll = min(max(1.0, self.heartbeat_interval / 2), 10.0)
        start = time.monotonic()
        log.info("trial %d was left RUNNING: watching its job", frozen.number)
        while not self._stop.is_set():
            frozen = get_trial(study, frozen)
            if frozen.state.is_finished():
                self._settle(study, frozen, None, None, time.monotonic() - start)
                return
            quiet = time.time() - last_sign_of_life(frozen)
            if quiet > self.stale_after and not any(map(slurm.job_alive, self._jobs_of(frozen))):
                if self.seeds > 1:  # run again only its seeds without a verdict
                    ends = seed_ends(frozen, self.seeds)
                    ok = (TrialState.COMPLETE.name, TrialState.PRUNED.name)
                    todo = [s for s in range(self.seeds) if ends.get(s, {}).get("state") not in ok]
                    log.info("trial %d: no heartbeat for %.0f s", frozen.number, quiet)
                    self._run_seeds(study, frozen, todo)
                elif not self._fail(study, frozen, f"no heartbeat for {quiet:.0f} s", retry=True):
                    self._count(get_trial(study, frozen), None)
                return
            time.sleep(poll)

    def _jobs_of(self, frozen: FrozenTrial) -> list[str | None]:
        """The SLURM jobs of a trial (with seeds, one per seed job ``k * number + seed``): the
        ids its jobs told, else the one the launcher recorded for a job that has not started
        yet (so has not told its id): a requeued controller must wait for it, not run it again."""
        if self.seeds > 1:
            keys = [SEED_JOB_ATTR.format(seed=s) for s in range(self.seeds)]
            told = [frozen.system_attrs.get(key) for key in keys]
        else:
            told = [frozen.user_attrs.get("slurm_job_id")]
        if all(told) or self.config is None:
            return told
        try:
            manifest = Manifest.load(str(self.config.hydra.sweep.dir))
        except RunFileError:
            return told
        if manifest is None or manifest.launcher != "slurm":
            return told
        recorded = {job.num: job.job_ids[-1] for job in manifest.jobs if job.job_ids}
        first = self.seeds * frozen.number
        return [job or recorded.get(first + s) for s, job in enumerate(told)]

    def _summarise(self, study: optuna.Study, sweep_dir: Path) -> None:
        """Write optimization_results.yaml and trials.csv to the sweep dir; log the best."""
        trials = study.get_trials(deepcopy=False)
        counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        # hydra-optuna-sweeper's fields first: name, best_params, best_value or solutions
        summary: dict[str, Any] = {"name": "optuna"}
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete and len(self.directions) == 1:
            best = study.best_trial
            summary.update(best_params=best.params, best_value=best.value, best_trial=best.number)
            spread = ""
            if self.seeds > 1 and STD_ATTR in best.user_attrs:  # the mean's spread over seeds
                summary.update(best_std=best.user_attrs[STD_ATTR], best_n=best.user_attrs[N_ATTR])
                spread = f" ± {summary['best_std']:.4g} (n={summary['best_n']})"
            log.info("best trial %d: %s%s %s", best.number, best.value, spread, best.params)
        elif complete:
            front = study.best_trials
            summary["solutions"] = [{"params": t.params, "values": t.values} for t in front]
            summary["solution_trials"] = [t.number for t in front]
            log.info("Pareto front: trials %s", summary["solution_trials"])
        summary.update(
            study_name=study.study_name,
            storage=self.storage_str,
            n_trials=self.n_trials,
            states={k: v for k, v in counts.items() if v},
        )
        log.info("trial states: %s", summary["states"])
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
        trials_table(self.storage_str, study.study_name, sweep_dir).to_csv(
            sweep_dir / "trials.csv", index=False
        )
