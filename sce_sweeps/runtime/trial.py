"""What an Optuna trial does inside its job (:class:`TrialReporter` tells the study its verdict
itself, even when the sweeper is gone), and the study helpers the sweeper shares with it."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sce_sweeps.runtime.overrides import quote
from sce_sweeps.runtime.record import locked

if TYPE_CHECKING:  # optuna is imported lazily: single runs never need it
    import optuna

log = logging.getLogger(__name__)

ENV_STORAGE, ENV_STUDY, ENV_TRIAL = "SCE_OPTUNA_STORAGE", "SCE_OPTUNA_STUDY", "SCE_OPTUNA_TRIAL"
ENV_SEED = "SCE_OPTUNA_SEED"  # which seed of its trial a job runs (searches with seeds > 1)


def trial_overrides(
    storage: str, study_name: str, number: int, seed: int | None = None
) -> list[str]:
    """The overrides that make a job trial ``number`` (its ``seed``-th seed job, when the trial
    has several): environment variables Hydra sets for it."""
    values = {ENV_STORAGE: storage, ENV_STUDY: study_name, ENV_TRIAL: str(number)}
    if seed is not None:
        values[ENV_SEED] = str(seed)
    return [f"++hydra.job.env_set.{k}={quote(v)}" for k, v in values.items()]


JOURNAL_NAME = "optuna.journal"  # the default storage, in the sweep dir
STUDY_ATTR = "sce_sweeps"  # study user attribute: objectives, pruner, heartbeat interval
HEARTBEAT_ATTR = "sce_heartbeat"  # trial system attribute: time.time() of the last beat
RETRY_OF_ATTR = "retry_of"  # trial user attribute: number of the killed trial it replaces
RUN_DIR_ATTR = "run_dir"  # trial user attribute: set by the job's reporter when it opens

# A trial of k seeds (docs/search.md, Seeds): trial system attributes, each written by one job
SEED_END_ATTR = "sce_seed_{seed}"  # a seed job's end: {"state", "value", "reason"}
SEED_EPOCH_ATTR = "sce_seed_{seed}_epoch_{epoch}"  # a seed job's objective after an epoch
SEED_JOB_ATTR = "sce_seed_{seed}_slurm_job_id"
SEED_LAUNCHES_ATTR = "sce_seed_{seed}_launches"  # how often the sweeper launched a seed job
SEEDS_PRUNED_ATTR = "sce_seeds_pruned"  # the epoch after which the seeds' mean was pruned
# trial user attributes of a trial of k seeds: its value's mean over seeds, their std and n
MEAN_ATTR, STD_ATTR, N_ATTR = "value_mean", "value_std", "value_n"

STALE_AFTER_S = 300.0  # hydra.sweeper.stale_after's default
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
# The objective when the sweeper is given none: the value the task function returns.
DEFAULT_OBJECTIVE = "objective"


def open_storage(storage: str, repair: bool = True) -> optuna.storages.BaseStorage:
    """Open a study storage: a journal file, a ``redis://`` journal or a database URL; a journal
    file's torn tail is repaired first (:func:`repair_journal`) unless not ``repair``."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    if storage.startswith(("redis://", "rediss://")):
        return optuna.storages.JournalStorage(JournalRedisBackend(storage))
    if "://" in storage:
        return open_database(storage)
    path = Path(storage).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if repair:
        repair_journal(path)
    return optuna.storages.JournalStorage(
        JournalFileBackend(str(path), lock_obj=JournalRecordLock(str(path)))
    )


def open_database(url: str, attempts: int = 10) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on the database ``url``. The first opening of a database creates
    Optuna's tables, and processes doing that at once collide ("Table ... already exists", a
    duplicate alembic version): the ones that lose try again and find the tables made."""
    import random

    import optuna
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    for _ in range(attempts - 1):
        try:
            return optuna.storages.RDBStorage(url)
        except SQLAlchemyError as e:
            if not (isinstance(e, IntegrityError) or "already exists" in str(e)):
                raise
            time.sleep(random.uniform(0.1, 0.5))  # apart, not all at once again
    return optuna.storages.RDBStorage(url)


def transient(error: BaseException) -> bool:
    """Whether a storage error may pass if the call is repeated: a database server that is
    unreachable, restarting or busy (Optuna's RDBStorage raises these as the cause of its
    StorageInternalError), or a connection error of a ``redis://`` journal."""
    exc = sys.modules.get("sqlalchemy.exc")  # loaded with a database storage only
    kinds: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    if exc is not None:
        kinds += (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def cause(error: BaseException) -> str:
    """The first line of the innermost cause of ``error``, with its type (Optuna's
    StorageInternalError says only that a commit failed; its cause says why)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


class RetryingStorage:
    """A study storage whose calls are repeated while they fail on a :func:`transient` error,
    for up to ``seconds``: a database server restarting under a job must not fail its run.
    Any other error, or a transient one past ``seconds``, is raised. Optuna's studies take it
    as they take any storage object but an RDBStorage, which alone they wrap in their cache:
    a database is read without that cache (more queries, the same trials)."""

    def __init__(self, storage: optuna.storages.BaseStorage, seconds: float) -> None:
        self.storage = storage
        self.seconds = seconds

    def __getattr__(self, name: str) -> Any:
        if name == "storage":  # not set yet (a copy being made): no endless recursion
            raise AttributeError(name)
        method = getattr(self.storage, name)
        if not callable(method):
            return method

        def retried(*args: Any, **kwargs: Any) -> Any:
            deadline, wait = time.monotonic() + self.seconds, 0.5
            while True:
                try:
                    return method(*args, **kwargs)
                except Exception as e:
                    if not transient(e) or time.monotonic() + wait > deadline:
                        raise
                    log.warning("storage: %s failed (%s); again in %.1f s", name, cause(e), wait)
                    time.sleep(wait)
                    wait = min(2 * wait, 10.0)

        return retried


class JournalRecordLock:
    """The lock Optuna's ``JournalFileBackend`` takes to append: :func:`locked` on
    ``<journal>.flock`` (Optuna's own lock files outlive a killed writer, and the others wait)."""

    def __init__(self, filepath: str) -> None:
        self._path = filepath + ".flock"
        self._held = contextlib.ExitStack()

    def acquire(self) -> bool:
        self._held.enter_context(locked(self._path))
        return True

    def release(self) -> None:
        self._held.close()


def repair_journal(path: Path) -> Path | None:
    """Cut off a journal's torn last line (which the next append would be glued onto for good),
    keeping a copy of the whole file beside it."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with locked(f"{path}.flock"), path.open("rb+") as f:  # JournalRecordLock's: no writer races
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return None
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        copy = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        copy.write_bytes(data)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    print(
        f"sce_sweeps: {path}: cut off a torn last line ({len(data) - keep} bytes, a writer "
        f"killed mid-append); the file as it was is kept as {copy.name}",
        file=sys.stderr,
        flush=True,
    )
    return copy


def _accepted(cls: type, kwargs: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """The keyword arguments ``cls`` takes; the others are dropped with a warning (a preset's
    median-pruner settings must not break ``hydra.sweeper.pruner=hyperband``)."""
    import inspect

    kwargs = dict(kwargs or {})
    params = inspect.signature(cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return kwargs
    dropped = sorted(set(kwargs) - set(params))
    if dropped:
        log.warning("%s: ignoring %s (not arguments of %s)", what, dropped, cls.__name__)
    return {k: v for k, v in kwargs.items() if k in params}


def make_pruner(name: str, kwargs: dict[str, Any] | None = None) -> optuna.pruners.BasePruner:
    """The pruner called ``name`` (one of :data:`PRUNERS`); steps are epochs."""
    import optuna

    if name == "none":  # whatever pruner_kwargs a preset set for another pruner
        return optuna.pruners.NopPruner()
    classes = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,  # pruner_kwargs.percentile: how strict
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }
    if name not in classes:
        raise ValueError(f"unknown pruner {name!r}: must be one of {', '.join(PRUNERS)}")
    return classes[name](**_accepted(classes[name], kwargs, "pruner_kwargs"))


def seed_summary(values: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value) and n, as trial user attributes."""
    import statistics

    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {MEAN_ATTR: statistics.fmean(values), STD_ATTR: std, N_ATTR: len(values)}


def seed_ends(trial: optuna.trial.FrozenTrial, seeds: int) -> dict[int, dict[str, Any]]:
    """The seed jobs of ``trial`` that ended, by seed: their end records."""
    ends = {s: trial.system_attrs.get(SEED_END_ATTR.format(seed=s)) for s in range(seeds)}
    return {s: end for s, end in ends.items() if end is not None}


def epoch_values(trial: optuna.trial.FrozenTrial, seeds: int, epoch: int) -> list[float] | None:
    """The ``seeds`` values reported after ``epoch``, in seed order; None until all are in."""
    keys = [SEED_EPOCH_ATTR.format(seed=s, epoch=epoch) for s in range(seeds)]
    if not all(k in trial.system_attrs for k in keys):
        return None
    return [float(trial.system_attrs[k]) for k in keys]


def tell_seeds(study: optuna.Study, trial_id: int, seeds: int) -> bool:
    """Tell a trial of ``seeds`` seed jobs its verdict once every one ended: COMPLETE with their
    mean, or PRUNED; its user attributes get mean, std and n. A failed seed is the sweeper's to
    retry: nothing is told. Whoever calls it last (a job, the sweeper) tells the same; True once
    the trial has a verdict."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = _storage_of(study)
    trial = storage.get_trial(trial_id)
    if trial.state.is_finished():
        return True
    ends = seed_ends(trial, seeds)
    pruned = SEEDS_PRUNED_ATTR in trial.system_attrs  # then a failed seed changes nothing
    failed = any(e["state"] == TrialState.FAIL.name for e in ends.values())
    if len(ends) < seeds or (failed and not pruned):
        return False
    if pruned:  # the means it was pruned on
        state, values = TrialState.PRUNED, None
        at = epoch_values(trial, seeds, int(trial.system_attrs[SEEDS_PRUNED_ATTR]))
        summary = seed_summary(at) if at else {}
    else:
        state = TrialState.COMPLETE
        summary = seed_summary([float(ends[s]["value"]) for s in range(seeds)])
        values = [summary[MEAN_ATTR]]
    try:
        for key, value in summary.items():
            storage.set_trial_user_attr(trial_id, key, value)
    except UpdateFinishedTrialError:
        return True
    study.tell(trial.number, values, state=state, skip_if_finished=True)
    return True


def _storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    from sce_sweeps.runtime.adapters.optuna_storage import storage_of

    return storage_of(study)


def last_sign_of_life(trial: optuna.trial.FrozenTrial) -> float:
    """time.time() of the trial's last heartbeat, or of its start if it never beat."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return max(float(trial.system_attrs.get(HEARTBEAT_ATTR, 0.0)), started)


class TrialReporter:
    """The Optuna trial a run belongs to, seen from inside its job: :meth:`open` it, call
    :meth:`on_epoch_end` after each epoch and :meth:`finish` once with the run's status."""

    def __init__(
        self, study: optuna.Study, trial_id: int, run_dir: Path, seed: int | None = None
    ) -> None:
        import optuna

        from sce_sweeps.runtime.adapters.optuna_storage import storage_of

        self.study = study
        self.storage = storage_of(study)
        self.trial_id = trial_id
        self.trial = optuna.Trial(study, trial_id)
        self.number = self.trial.number
        spec = study.user_attrs.get(STUDY_ATTR, {})
        self.objectives: list[str] = list(spec.get("objectives", [DEFAULT_OBJECTIVE]))
        # Optuna keeps intermediate values (and prunes) for single-objective studies only
        self.reports = len(self.objectives) == 1
        self.prunes = self.reports and spec.get("pruner", "none") != "none"
        # one of the trial's k seed jobs: it reports under its seed, the trial gets the means
        self.seeds = int(spec.get("seeds", 1))
        self.seed = seed if self.seeds > 1 else None
        self.state = self.storage.get_trial(trial_id).state
        self.stop_status = "pruned"  # what a Stopped raised by on_epoch_end means
        self.stop_reason: str | None = None
        self._abandoned = threading.Event()
        self._stop_beating = threading.Event()
        interval = float(spec.get("heartbeat_interval", 30.0))
        self._beat_thread = threading.Thread(
            target=self._beat, args=(interval,), name=f"optuna-heartbeat-{self.number}", daemon=True
        )
        if not self.finished:
            job_id = os.environ.get("SLURM_JOB_ID")
            if self.seed is None:
                self._set_user_attr(RUN_DIR_ATTR, str(run_dir))
                if job_id:
                    self._set_user_attr("slurm_job_id", job_id)
            elif job_id:  # each seed job's own, for the sweeper's liveness check
                self._set_system_attr(SEED_JOB_ATTR.format(seed=self.seed), job_id)
            self._beat_thread.start()

    @classmethod
    def open(cls, run_dir: str | Path) -> TrialReporter | None:
        """The trial this job runs (:func:`trial_overrides`); None outside a search."""
        if os.environ.get(ENV_TRIAL) is None:
            return None
        import optuna

        from sce_sweeps.runtime.adapters.optuna_storage import load_study, trial_id

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = RetryingStorage(open_storage(os.environ[ENV_STORAGE]), STALE_AFTER_S)
        sampler = optuna.samplers.RandomSampler()  # a job never samples
        study = load_study(storage, study_name=os.environ[ENV_STUDY], sampler=sampler)
        spec = study.user_attrs.get(STUDY_ATTR, {})
        # past stale_after the sweeper counts the job as dead: no use retrying longer
        storage.seconds = float(spec.get("stale_after", STALE_AFTER_S))
        study.pruner = make_pruner(spec.get("pruner", "none"), spec.get("pruner_kwargs"))
        seed = int(os.environ[ENV_SEED]) if os.environ.get(ENV_SEED) else None
        return cls(study, trial_id(study, int(os.environ[ENV_TRIAL])), Path(run_dir), seed)

    @property
    def finished(self) -> bool:
        """The trial already has its verdict (e.g. a rerun job, or marked stale)."""
        return self.state.is_finished()

    def _set_user_attr(self, key: str, value: Any, system: bool = False) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            if system:
                self.storage.set_trial_system_attr(self.trial_id, key, value)
            else:
                self.storage.set_trial_user_attr(self.trial_id, key, value)
        except UpdateFinishedTrialError:
            self._abandoned.set()

    def _set_system_attr(self, key: str, value: Any) -> None:
        self._set_user_attr(key, value, system=True)

    def _beat(self, interval: float) -> None:
        """Beat the trial's heartbeat every ``interval`` seconds until :meth:`finish`."""
        from optuna.exceptions import UpdateFinishedTrialError

        while True:
            try:
                self.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            except UpdateFinishedTrialError:
                self._abandoned.set()  # someone else gave the verdict: stop training
                return
            except Exception as e:  # a storage hiccup must not kill the run
                log.warning("trial %d: heartbeat failed: %s", self.number, e)
            if self._stop_beating.wait(interval):
                return

    def on_epoch_end(self, epoch: int, row: dict[str, Any], last: bool = False) -> bool:
        """Report the epoch's objective (if ``row`` has it) and, but after the ``last`` epoch, ask
        the pruner; True stops the run."""
        from optuna.exceptions import UpdateFinishedTrialError

        metric = self.objectives[0]
        if self.seed is not None and not self._abandoned.is_set():
            try:
                if self._seed_epoch_end(epoch, row.get(metric), last):
                    return True
            except UpdateFinishedTrialError:
                self._abandoned.set()
        elif not self._abandoned.is_set() and self.reports and metric in row:
            try:
                self.trial.report(float(row[metric]), epoch)
                if self.prunes and not last and self.trial.should_prune():
                    self.stop_reason = f"pruned by the study after epoch {epoch}"
                    return True
            except UpdateFinishedTrialError:
                self._abandoned.set()
        if self._abandoned.is_set() and not last:
            state = self.storage.get_trial(self.trial_id).state.name
            self.stop_status = "failed"
            self.stop_reason = f"trial {self.number} was marked {state} in the study meanwhile"
            return True
        return False

    def _seed_epoch_end(self, epoch: int, value: Any, last: bool) -> bool:
        """A seed job's epoch: record its value; once all k seeds reached ``epoch``, report their
        mean and ask the pruner about it (two jobs doing it at once tell the same); True when
        the trial's seeds were pruned (by this job or another)."""
        if value is not None:
            self._set_system_attr(SEED_EPOCH_ATTR.format(seed=self.seed, epoch=epoch), float(value))
        trial = self.storage.get_trial(self.trial_id)
        values = epoch_values(trial, self.seeds, epoch)
        if values is not None and epoch not in trial.intermediate_values:
            mean = sum(values) / len(values)
            self.storage.set_trial_intermediate_value(self.trial_id, epoch, mean)
            if self.prunes and not last:
                trial = self.storage.get_trial(self.trial_id)
                if self.study.pruner.prune(self.study, trial):
                    self._set_system_attr(SEEDS_PRUNED_ATTR, epoch)
                    trial = self.storage.get_trial(self.trial_id)
        pruned = trial.system_attrs.get(SEEDS_PRUNED_ATTR)
        if pruned is None or last:
            return False
        self.stop_reason = f"pruned by the study after epoch {pruned} (mean of {self.seeds} seeds)"
        return True

    def _verdict(
        self, status: str, result: dict[str, Any]
    ) -> tuple[optuna.trial.TrialState, list[float] | None]:
        from optuna.trial import TrialState

        if status == "completed":
            values = [float(result.get(key, math.nan)) for key in self.objectives]
            if all(math.isfinite(v) for v in values):
                return TrialState.COMPLETE, values
            result.setdefault("reason", f"non-finite objective {self.objectives}")
            return TrialState.FAIL, None
        return (TrialState.PRUNED if status == "pruned" else TrialState.FAIL), None

    def record(self, status: str, result: dict[str, Any]) -> dict[str, Any]:
        """The trial's fields for ``result.json`` as :meth:`finish` will tell them."""
        return self._fields(self._verdict(status, result)[0], self.trial.params)

    def _fields(self, state: optuna.trial.TrialState, params: dict[str, Any]) -> dict[str, Any]:
        fields = {
            "study": self.study.study_name,
            "trial_number": self.number,
            "state": state.name,
            "params": params,
        }
        if self.seed is not None:  # the state is this seed job's, not yet the trial's
            fields["seed"] = self.seed
        return fields

    def finish(self, status: str, result: dict[str, Any]) -> dict[str, Any]:
        """Tell the study the verdict (unless it has one); the fields as the study holds them."""
        from optuna.trial import TrialState

        self._stop_beating.set()
        if self._beat_thread.is_alive():
            self._beat_thread.join(timeout=30)
        state, values = self._verdict(status, result)
        if self.seed is not None:  # its reason in its own record: another attempt may succeed
            return self._finish_seed(state, values, result)
        if state != TrialState.COMPLETE and result.get("reason"):
            self._set_user_attr("reason", str(result["reason"]))
        if "wall_time_s" in result:
            self._set_user_attr("wall_time_s", float(result["wall_time_s"]))
        if not self._abandoned.is_set():
            self.study.tell(self.number, values, state=state, skip_if_finished=True)
        final = self.storage.get_trial(self.trial_id)
        self.state = final.state
        return self._fields(final.state, final.params)

    def _finish_seed(
        self,
        state: optuna.trial.TrialState,
        values: list[float] | None,
        result: dict[str, Any],
    ) -> dict[str, Any]:
        """Record this seed job's end; the last of the trial's seeds to end tells the trial."""
        from optuna.trial import TrialState

        end = {
            "state": state.name,
            "value": values[0] if values else None,
            "reason": None if state == TrialState.COMPLETE else result.get("reason"),
        }
        if not self._abandoned.is_set():
            self._set_system_attr(SEED_END_ATTR.format(seed=self.seed), end)
            tell_seeds(self.study, self.trial_id, self.seeds)
        self.state = self.storage.get_trial(self.trial_id).state
        return self._fields(state, self.trial.params)
