"""The local and SLURM launchers of sce_sweeps, on one shared base.

:class:`SweepLauncher` does what both share, in :meth:`~SweepLauncher.launch`:

1. compose and validate every job (:func:`sce_sweeps.sweep.plan.plan_jobs`, each job composed
   once, by :class:`~hydra_plugins.sce_sweeps_launchers.compose.SweepComposer`); one invalid
   job stops the launch before anything runs, with one line per invalid job;
2. dry run: print the jobs, their resources and GPU-hours, and stop there;
3. create (or, on resume, reopen) ``manifest.json`` and skip the jobs a resume need not rerun;
4. submit through submitit, watch the jobs, record job ids and states in the manifest.

Several threads may call :meth:`~SweepLauncher.launch` at once (``thread_safe_launch``): the
asynchronous Optuna sweeper launches one trial per call from P threads. The manifest, the
count of running jobs (``max_parallel`` holds across all calls) and the GPU pool are shared
under one lock; each call waits for its own jobs only.

Jobs run :meth:`SweepLauncher.__call__` (Hydra's ``run_job`` in the job's run dir, on the
config the launcher composed), through a :class:`JobCall`, whose ``checkpoint()`` resubmits the
same call, so a job stopped by a preemption or a time limit is requeued and the trainer resumes
from the ``checkpoint.pt`` it wrote on the signal. What all the jobs of a submission share (the
launcher and Hydra's global state) is pickled once into one file beside submitit's, not once per
job.

What a job costs the launcher does not grow with the number of jobs: the manifest's entries are
found through an index, and the manifest is saved once a poll at most, less often when saving
it takes long (see :meth:`SweepLauncher._save`), except right after a SLURM submission, whose
job ids it must not lose.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.experimental.callback import Callback
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.sce_sweeps_launchers import warm
from sce_sweeps import progress
from sce_sweeps.runfiles import (
    HOST,
    Job,
    Manifest,
    RunFileError,
    RunState,
    Stall,
    SweepDirBusyError,
    claim_sweep_dir,
    clear_heartbeat,
    command_line,
    now,
    relative_run_dir,
    stall,
    try_read_result,
)
from sce_sweeps.sweep.status import jobs_, queued_slurm_jobs

log = logging.getLogger(__name__)

# Keys of our config that are not submitit parameters.
OWN_KEYS = (
    "dry_run",
    "resume",
    "max_parallel",
    "poll_s",
    "validate",
    "config_hash",
    "preload",
    "stall_after",
    "stalled",
    "check_data",
    "data_check",
)
# What the launcher does with a stalled job (hydra.launcher.stalled).
STALLED_ACTIONS = ("flag", "kill")
# Seconds a stalled local job has to checkpoint and stop after SIGTERM before it is killed.
KILL_GRACE_S = 30.0
# The jobs this process's launches were asked to run (or skip), by sweep dir: what a
# multirun's exit status covers (SweepExitStatus). Not the manifest's other jobs: an earlier
# launch's trial that the Optuna sweeper has since retried under a new number is not rerun.
_asked: dict[str, set[int]] = {}
# Jobs in the queue from which a poll asks squeue which are pending rather than checking each.
QUEUE_QUERY_FROM = 32
# Keys only SLURM understands: the local launcher ignores them.
SLURM_ONLY = (
    "partition",
    "qos",
    "comment",
    "constraint",
    "exclude",
    "gres",
    "cpus_per_gpu",
    "gpus_per_task",
    "mem_per_gpu",
    "mem_per_cpu",
    "account",
    "additional_parameters",
    "array_parallelism",
)


def _resume(sweep_dir: Path) -> str:
    return command_line("-m", "sce_sweeps.resume", sweep_dir)


def _status(sweep_dir: Path) -> str:
    return command_line("-m", "sce_sweeps.status", sweep_dir)


def _say(message: str) -> None:
    progress.clear()  # a progress bar on the terminal gives way to the message
    print(f"sce_sweeps: {message}", file=sys.stderr, flush=True)


class SubmissionError(RuntimeError):
    """The scheduler refused the jobs (or is not there); the message is its reason."""


def submission_reason(error: BaseException) -> str:
    """One line saying why a submission failed, in the scheduler's own words when it gave any
    (``sbatch: error: Batch job submission failed: ...``)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    ours = [line for line in lines if "error" in line.lower()]
    line = (ours or lines or [type(error).__name__])[-1]
    if isinstance(error, FileNotFoundError) or "Could not detect" in line:
        line = f"SLURM's commands are not installed on this machine ({line})"
    return line


class JobCall:
    """What submitit runs for one job: :meth:`SweepLauncher.__call__` of the launcher pickled
    in ``shared`` (with Hydra's global state), a file written once for all the jobs of a
    submission, on the job's own arguments."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared

    def __call__(
        self, overrides: list[str], job_dir_key: str, num: int, job_id: str, config: bytes
    ) -> JobReturn:
        """Run the job; ``config``: its config, pickled (see :meth:`SweepLauncher._job_params`)."""
        launcher, state = pickle.loads(self.shared.read_bytes())
        return launcher(overrides, job_dir_key, num, job_id, state, pickle.loads(config))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Resubmit the same call (submitit calls it on a preemption or a time limit)."""
        import submitit

        _clear_heartbeat()  # the requeued job is watched from its own first beat
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def share(launcher: SweepLauncher, folder: Path) -> Path:
    """Pickle ``launcher`` and Hydra's global state (``Singleton.get_state()``) into one file
    of ``folder``, named after its content; return its path."""
    import cloudpickle  # as submitit pickles: the task function may live in __main__
    from hydra.core.plugins import Plugins
    from omegaconf.basecontainer import BaseContainer

    # Singleton.get_state() deep-copies what pickling copies anyway
    instances = {k: v for k, v in Singleton._instances.items() if k is not Plugins}
    state = {"instances": instances, "omegaconf_resolvers": dict(BaseContainer._resolvers)}
    blob = cloudpickle.dumps((launcher, state))
    path = folder / f"shared-{hashlib.sha1(blob).hexdigest()[:16]}.pkl"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    return path


_job_run_dir: Path | None = None  # in a job's process: its run dir


def _clear_heartbeat() -> None:
    if _job_run_dir is not None:
        clear_heartbeat(_job_run_dir)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM in a job: SLURM kills the job KillWait seconds later (scancel, scontrol
    requeue, preemption, time limit). The trainer calls this once its checkpoint is saved;
    stopping now, without a result, beats racing the kill: a requeued job resumes from the
    checkpoint instead of finding a run finished by a job SLURM has already requeued."""
    _say("SIGTERM: stopped after saving a checkpoint; a requeued job resumes from it")
    _clear_heartbeat()
    raise SystemExit(128 + signum)


class SweepLauncher(BaseSubmititLauncher):
    """Validation, manifest, dry run and resume around a submitit executor."""

    _EXECUTOR = "abstract"
    # launch() may be called from several threads at once (see the module's docstring).
    thread_safe_launch = True

    def __init__(self, **params: Any) -> None:
        self.options = {k: params.pop(k) for k in OWN_KEYS if k in params}
        stalled, stall_after = self.options.get("stalled", "flag"), self.options.get("stall_after")
        if stalled not in STALLED_ACTIONS:
            _say(f"hydra.launcher.stalled={stalled}: must be one of {', '.join(STALLED_ACTIONS)}")
            raise SystemExit(2)
        if stall_after is not None and not float(stall_after) > 0:
            _say(f"hydra.launcher.stall_after={stall_after}: must be a number of seconds > 0")
            raise SystemExit(2)
        super().__init__(**params)
        self.manifest: Manifest | None = None  # once launched
        self._lock = threading.RLock()  # the manifest, the running count, the GPU pool
        self._active = 0  # jobs submitted and not over, over all launch() calls
        self._composer: Any = None  # composes the jobs (SweepComposer), once set up
        self._entries: dict[int, Job] = {}  # the manifest's jobs by number
        self._saved_at, self._save_s = 0.0, 0.0  # the manifest's last save: when, how long
        self._unsaved = False  # changes that _save() put off
        self._flagged: set[int] = set()  # jobs said to be stalled
        self._stopping: dict[int, tuple[Stall, float]] = {}  # stalled jobs being ended, deadline

    def __getstate__(self) -> dict[str, Any]:
        """What a job receives (submitit pickles the launcher): no lock, no manifest."""
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state.pop("warm", None)
        state["manifest"], state["_composer"], state["_entries"] = None, None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # --- what each launcher does its own way -----------------------------------------------

    def _executor(self, sweep_dir: Path) -> Any:
        raise NotImplementedError

    def _room(self, active: int) -> int:
        """How many more jobs may be submitted now, with ``active`` submitted and not over."""
        raise NotImplementedError

    def _submit(self, executor: Any, jobs: list[Any], shared: Path) -> list[Any]:
        """Submit ``jobs`` (PlannedJob) as :class:`JobCall` of ``shared``; return their
        submitit jobs."""
        raise NotImplementedError

    def _released(self, job: Any) -> None:
        """Called when a submitted job is over."""

    def _queued(self, sjobs: list[Any]) -> set[str]:
        """Ids of those of ``sjobs`` known to be still waiting to start, which a poll skips."""
        return set()

    def _describe_params(self) -> dict[str, Any]:
        return {**self.params, **self.options}

    # --- shared -------------------------------------------------------------------------------

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[str, Any],
        config: DictConfig | None = None,
    ) -> JobReturn:
        """Run one job (in the job's process): Hydra's run_job in its run dir, on ``config``,
        the job's config as the launcher composed it (None: compose it here, as Hydra does)."""
        # submitit only logs SIGTERM ("bypass"); stop instead, once the trainer has saved.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        if config is None:
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        import submitit

        Singleton.set_state(singleton_state)
        setup_globals()
        with open_dict(config.hydra.job):
            config.hydra.job.id = submitit.JobEnvironment().job_id
            config.hydra.job.num = job_num
        global _job_run_dir
        _job_run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        _clear_heartbeat()  # an earlier attempt's (requeued without a signal)
        assert self.hydra_context is not None and self.task_function is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=config,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
        )

    def _job_params(self, job: Any) -> tuple[Any, ...]:
        """The arguments of a :class:`JobCall` (run in the job) for a planned job; its config
        pickled here by the C pickler, ten times faster than submitit's cloudpickle."""
        config = pickle.dumps(job.config)
        return (job.overrides, "hydra.sweep.dir", job.num, f"job_id_for_{job.num}", config)

    def _save(self, manifest: Manifest, now_: bool = True) -> None:
        """Save the manifest; with ``now_=False``, only if the last save is older than a poll
        and than 20 times the time a save takes (at most 5% of the time goes to saving it,
        whatever the number of jobs)."""
        since = time.monotonic() - self._saved_at
        if not now_ and since < max(float(self.options.get("poll_s", 2.0)), 20 * self._save_s):
            self._unsaved = True
            return
        start = time.monotonic()
        manifest.save()
        self._saved_at = time.monotonic()
        self._save_s, self._unsaved = self._saved_at - start, False

    def _sweep_name(self) -> str:
        assert self.config is not None
        name = OmegaConf.select(self.config, "sweep_name", default=None)
        return str(name or self.config.hydra.job.name)

    def _open_manifest(self, sweep_dir: Path) -> Manifest:
        """This launch's manifest: the one of an earlier batch of this sweep, the sweep dir's
        (resume), or a new one. Claims the sweep dir first: one launcher process at a time."""
        if self.manifest is not None:
            return self.manifest
        try:
            if not self.options.get("dry_run"):
                claim_sweep_dir(sweep_dir)
            existing = Manifest.load(sweep_dir)
        except (SweepDirBusyError, RunFileError) as e:
            _say(str(e))
            raise SystemExit(2) from None
        if self.options.get("resume"):
            if existing is None:
                _say(f"nothing to resume: no manifest.json in {sweep_dir}")
                raise SystemExit(2)
            return existing
        if existing is not None:
            _say(
                f"{sweep_dir} already holds a sweep (manifest.json): resume it with "
                f"`{_resume(sweep_dir)}` or hydra.launcher.resume=true"
            )
            raise SystemExit(2)
        return Manifest.create(sweep_dir, self._sweep_name(), self.kind)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        with self._lock:  # composing, validating, recording: one call at a time
            planned = self._plan(job_overrides, initial_job_idx)
        if planned is None:  # dry run
            return []
        manifest, jobs, returns, todo = planned
        returns.update(self._run(todo, manifest))
        with self._lock:
            self._summary(manifest, jobs)
        return [returns[job.num] for job in jobs]

    def _plan(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> tuple[Any, list[Any], dict[int, JobReturn], list[Any]] | None:
        """Plan, validate and record the jobs of one launch() call; None for a dry run."""
        from sce_sweeps.sweep import plan
        from sce_sweeps.sweep.status import sweep_status

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        first_launch = self.manifest is None
        manifest = self._open_manifest(sweep_dir)
        resumed = self.options.get("resume") and first_launch
        if self._composer is None:
            from hydra_plugins.sce_sweeps_launchers.compose import SweepComposer

            self._composer = SweepComposer(self.hydra_context.config_loader, self.config)
        try:
            jobs = plan.plan_jobs(
                self._composer,
                [list(o) for o in job_overrides],
                initial_job_idx,
                manifest,
                self.options.get("validate"),
                self.options.get("config_hash"),
            )
        except BaseException:  # an override that does not compose: Hydra's error follows
            if first_launch and not manifest.path.exists():
                plan.remove_unused_sweep_dir(sweep_dir)
            raise
        if resumed:
            previous = {s.num: s for s in sweep_status(manifest)}
            for job in jobs:
                job.previous = previous.get(job.num)

        invalid = plan.invalid_job_lines(jobs)
        if invalid:
            for line in invalid:
                _say(line)
            _say(f"{len(invalid)} of {jobs_(len(jobs))} are invalid; nothing was launched")
            if first_launch and not manifest.path.exists():
                plan.remove_unused_sweep_dir(sweep_dir)
            raise SystemExit(2)

        if self.options.get("dry_run"):
            params, name = self._describe_params(), self._sweep_name()
            report = plan.describe(jobs, params, self.kind, name, sweep_dir, bool(resumed))
            data_ok = True
            if params.get("check_data"):
                data, data_ok = plan.check_data(jobs, params.get("data_check"))
                report = "\n".join([report, *data])
            if not manifest.path.exists():
                plan.remove_unused_sweep_dir(sweep_dir)
            print(report, flush=True)
            if not data_ok:  # a damaged dataset: the sweep would fail, say so by the status
                raise SystemExit(1)
            return None

        self.manifest = manifest
        manifest.stall_after = self.options.get("stall_after")
        _asked.setdefault(os.path.realpath(sweep_dir), set()).update(job.num for job in jobs)
        if resumed:
            manifest.pid, manifest.resumes = os.getpid(), manifest.resumes + 1
        returns = {job.num: self._skipped(job) for job in jobs if job.skip}
        todo = [job for job in jobs if not job.skip]
        self._entries = {entry.num: entry for entry in manifest.jobs}
        for job in todo:
            self._record(manifest, job)
        manifest.jobs.sort(key=lambda j: j.num)
        self._save(manifest)
        if resumed:
            _say(
                f"resuming {sweep_dir}: {jobs_(len(todo))} to run, {len(returns)} skipped "
                f"(finished or still queued/running)"
            )
        return manifest, jobs, returns, todo

    def _record(self, manifest: Manifest, job: Any) -> None:
        """Add ``job`` to the manifest as pending (its entry, if it has one, is reset)."""
        entry = self._entries.get(job.num)
        if entry is None:
            run_dir = relative_run_dir(job.run_dir, manifest.sweep_dir)
            entry = Job(job.num, job.overrides, job.config_hash, run_dir)
            self._entries[job.num] = entry
            manifest.jobs.append(entry)
        entry.state, entry.reason, entry.finished_at = RunState.PENDING, None, None

    def _skipped(self, job: Any) -> JobReturn:
        """The return of a job a resume does not rerun: its result's objective, else NaN."""
        from sce_sweeps.sweep.plan import task_config

        value = job.previous.knn_top1 if job.previous.knn_top1 is not None else math.nan
        _say(f"job #{job.num}: {job.previous.state}, not rerun ({job.run_dir})")
        return JobReturn(
            overrides=job.overrides,
            cfg=task_config(job.config),
            hydra_cfg=job.config,
            working_dir=str(job.run_dir),
            task_name=str(self.config.hydra.job.name),
            status=JobStatus.COMPLETED,
            _return_value=float(value),
        )

    def _run(self, jobs: list[Any], manifest: Any) -> dict[int, JobReturn]:
        """Submit ``jobs`` as room allows, watch them, keep the manifest up to date."""
        if not jobs:
            return {}
        waiting, running, returns = list(jobs), {}, {}
        poll_s = float(self.options.get("poll_s", 2.0))
        try:
            with self._lock:
                try:
                    executor = self._executor(manifest.sweep_dir)
                except Exception as e:  # e.g. no SLURM on this machine
                    self._not_submitted(manifest, waiting, e)
                shared = share(self, Path(manifest.sweep_dir) / ".submitit")
            while waiting or running:
                with self._lock:
                    self._poll(manifest, waiting, running, returns, executor, shared)
                    progress.show(manifest, final=not (waiting or running))
                if waiting or running:
                    time.sleep(poll_s)
            with self._lock:
                if self._unsaved:
                    self._save(manifest)
        except KeyboardInterrupt:
            with self._lock:
                self._save(manifest)
            where = "keep running on SLURM" if self.kind == "slurm" else "were stopped"
            _say(
                f"interrupted: {len(running)} started jobs {where}; see "
                f"`{_status(manifest.sweep_dir)}`, resume with `{_resume(manifest.sweep_dir)}`"
            )
            raise
        except SubmissionError as e:
            _say(
                f"not submitted: {e}; {jobs_(len(waiting))} not submitted (manifest.json says "
                f"so); fix it, then `{_resume(manifest.sweep_dir)}`"
            )
            raise SystemExit(2) from None
        return returns

    def _not_submitted(self, manifest: Manifest, jobs: list[Any], error: Exception) -> None:
        """Record ``jobs`` as not submitted, with the scheduler's reason; raise it."""
        reason = submission_reason(error)
        for job in jobs:
            entry = self._entries[job.num]
            entry.state, entry.reason = RunState.NOT_SUBMITTED, reason
        self._save(manifest)
        raise SubmissionError(reason) from error

    def _poll(
        self,
        manifest: Any,
        waiting: list[Any],
        running: dict[int, tuple[Any, Any]],
        returns: dict[int, JobReturn],
        executor: Any,
        shared: Path,
    ) -> None:
        """One look at this call's jobs (under the lock): settle those that are over, submit
        waiting ones as room allows; ``waiting``, ``running`` and ``returns`` are updated."""
        changed = submitted_ids = False
        queued = self._queued([sjob for _, sjob in running.values()])
        for num, (job, sjob) in list(running.items()):
            entry = self._entries[num]
            if sjob.job_id in queued:
                continue
            if sjob.done():
                returns[num] = self._finish(entry, job, sjob)
                self._released(job)
                self._active -= 1
                del running[num]
                changed = True
            elif entry.state == RunState.PENDING and sjob.state == "RUNNING":
                entry.state, changed = RunState.RUNNING, True
            elif entry.state == RunState.RUNNING:
                self._watch(manifest, entry, sjob)
        room = min(len(waiting), self._room(self._active))
        if room > 0:
            batch = waiting[:room]
            try:
                submitted = self._submit(executor, batch, shared)
            except Exception as e:  # sbatch refused (resources, partition, account...)
                self._not_submitted(manifest, waiting, e)
            del waiting[:room]
            for job, sjob in zip(batch, submitted):
                entry = self._entries[job.num]
                entry.job_ids.append(str(sjob.job_id))
                entry.state = RunState.RUNNING if self.kind == "local" else RunState.PENDING
                entry.submitted_at, entry.log = now(), str(sjob.paths.stderr)
                running[job.num] = (job, sjob)
                self._active += 1
            changed, submitted_ids = True, self.kind == "slurm"
        if changed:  # SLURM job ids at once: a resume must find the jobs it submitted
            self._save(manifest, now_=submitted_ids)

    def _finish(self, entry: Any, job: Any, sjob: Any) -> JobReturn:
        """Record how a job ended; a job that died without a return gets NaN, not an error."""
        entry.finished_at = now()
        ended = self._stopping.pop(job.num, None)  # (its stall, deadline): ended by _watch
        self._flagged.discard(job.num)
        try:
            ret = sjob.results()[0]
            if ended is not None and ret.status != JobStatus.COMPLETED:
                raise RuntimeError(str(ended[0]))
        except Exception as e:  # cancelled, killed, out of memory: no JobReturn came back
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            entry.state, entry.reason = RunState.FAILED, f"{type(e).__name__}: {reason}"
            if ended is not None:
                entry.reason = str(ended[0])
            ret = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
            ret.return_value = math.nan
        else:
            result = try_read_result(job.run_dir) or {}
            entry.state = RunState(result.get("status", RunState.COMPLETED))
            entry.reason = result.get("reason")
            if ret.status == JobStatus.FAILED:
                entry.state, entry.reason = RunState.FAILED, repr(ret._return_value)
            elif isinstance(ret.return_value, (int, float)):
                entry.objective = float(ret.return_value)
        detail = (
            f"kNN top-1 {entry.objective:.2f}%"
            if entry.state == RunState.COMPLETED and entry.objective is not None
            else entry.reason or "-"
        )
        _say(f"job #{job.num} {entry.state}: {detail} [{job.run_dir}]")
        return ret

    def _watch(self, manifest: Manifest, entry: Job, sjob: Any) -> None:
        """Flag a running job whose heartbeat is older than its limit (said once, until it
        beats again); with ``stalled=kill``, end it: SIGTERM first (a process that can still
        checkpoint does), then :meth:`_end_stalled` once the grace period is over."""
        if entry.num in self._stopping:
            found, deadline = self._stopping[entry.num]
            if time.monotonic() > deadline:
                self._end_stalled(sjob, found, force=True)
            return
        found = stall(manifest.run_dir(entry), self.options.get("stall_after"))
        if found is None:
            self._flagged.discard(entry.num)
            return
        kill = self.options.get("stalled") == "kill"
        if entry.num not in self._flagged:
            self._flagged.add(entry.num)
            then = "ending it" if kill else "hydra.launcher.stalled=kill would end it"
            _say(f"job #{entry.num} {found}; {then} [{manifest.run_dir(entry)}]")
        if kill:
            self._stopping[entry.num] = (found, time.monotonic() + KILL_GRACE_S)
            self._end_stalled(sjob, found, force=False)

    def _end_stalled(self, sjob: Any, found: Stall, force: bool) -> None:
        """Stop a stalled job: SIGTERM (``force``: SIGKILL) to its process where it runs on
        this host, else ``scancel`` (SLURM sends SIGTERM, then SIGKILL after KillWait)."""
        sig = signal.SIGKILL if force else signal.SIGTERM
        if found.pid and found.host == HOST:
            for signum in (signal.SIGCONT, sig):  # a stopped process handles SIGTERM once woken
                with contextlib.suppress(OSError):
                    os.kill(int(found.pid), signum)
        if self.kind == "slurm" or force:
            with contextlib.suppress(Exception):
                sjob.cancel(check=False)

    def _summary(self, manifest: Any, jobs: list[Any]) -> None:
        """The launch's last line: its jobs by state, and those whose tracking failed."""
        states: dict[str, int] = {}
        for job in jobs:
            state = self._entries[job.num].state
            states[state] = states.get(state, 0) + 1
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        # a run that trained but whose tracking failed (e.g. its Aim merge) says so in its result
        untracked = [
            job.num
            for job in jobs
            if (try_read_result(manifest.sweep_dir / job.run_dir) or {}).get("tracking")
        ]
        if len(jobs) == 1 and not untracked:
            return  # its own line said it all
        if untracked:
            listed = ", ".join(f"#{n}" for n in untracked[:5]) + ", ..." * (len(untracked) > 5)
            counts += f"; tracking failed for {jobs_(len(untracked))} ({listed})"
        _say(
            f"sweep {manifest.sweep_name}: {jobs_(len(jobs))}: {counts}; "
            f"`{_status(manifest.sweep_dir)}` shows each"
        )


class SweepExitStatus(Callback):
    """Ends a multirun (``python -m sce_sweeps -m ...``, and so its resume) with the exit
    status of ``python -m sce_sweeps.status`` over the jobs it was asked to run, once the
    sweeper is done: 0 when every one completed or was pruned, 1 when any failed, was not
    submitted or never ran, 3 when some that an earlier launch submitted are still queued or
    running. ``conf/launcher`` selects it (``hydra.callbacks.sweep_exit_status``); a dry run,
    or a multirun that raised, is left as it is.

    Before the sweeper writes into an existing sweep dir that cannot be written (a read-only
    filesystem), it says in one line what a resume would do and exits (0: nothing to do, 2:
    jobs to rerun), as ``python -m sce_sweeps.resume`` does."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from sce_sweeps.sweep.resume import say_if_read_only

        code = say_if_read_only(str(config.hydra.sweep.dir), "sce_sweeps")
        if code is not None:  # before Hydra writes multirun.yaml into it
            raise SystemExit(code)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from sce_sweeps.sweep.status import exit_code, sweep_status

        if sys.exc_info()[0] is not None or OmegaConf.select(config, "hydra.launcher.dry_run"):
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            manifest = Manifest.load(sweep_dir)
        except RunFileError:
            return
        asked = _asked.get(os.path.realpath(sweep_dir))
        if manifest is None or not asked:
            return
        manifest.jobs = [job for job in manifest.jobs if job.num in asked]
        statuses = sweep_status(manifest, launcher_alive=False)  # this launch is over
        code = exit_code(statuses)
        if code == 0:
            return
        states: dict[str, int] = {}
        for s in statuses:
            if s.state not in (RunState.COMPLETED, RunState.PRUNED):
                states[s.state] = states.get(s.state, 0) + 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        then = (
            f"rerun them with `{_resume(sweep_dir)}`"
            if code == 1
            else "an earlier launch submitted them"
        )
        _say(
            f"exit status {code}: {counts} of {jobs_(len(statuses))}; see "
            f"`{_status(sweep_dir)}`; {then}"
        )
        raise SystemExit(code)


class LocalLauncher(SweepLauncher):
    """Runs each job in its own process on this machine (submitit's local executor), at most
    ``max_parallel`` at once, each with its own GPU(s) when the machine has GPUs."""

    _EXECUTOR = "local"
    kind = "local"

    def _gpus(self) -> tuple[list[int], int]:
        """(this machine's visible GPUs, GPUs per job)."""
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            ids = [x.strip() for x in env.split(",") if x.strip()]
            gpus = [int(x) for x in ids] if all(x.isdigit() for x in ids) else list(range(len(ids)))
        elif not any(Path("/dev").glob("nvidia[0-9]*")) and not Path("/dev/kfd").exists():
            gpus = []  # no NVIDIA or AMD GPU device: no need to import torch (seconds)
        else:
            try:
                import torch

                gpus = list(range(torch.cuda.device_count()))
            except Exception:  # no torch, no driver
                gpus = []
        per_job = self.params.get("gpus_per_node")
        if per_job is None:  # one GPU per process (trainer.devices) where there are GPUs
            per_job = int(self.params.get("tasks_per_node") or 1) if gpus else 0
        per_job = int(per_job)
        if per_job > len(gpus):
            _say(f"each job asks for {per_job} GPUs but this machine has {len(gpus)}")
            raise SystemExit(2)
        return gpus, per_job

    def _executor(self, sweep_dir: Path) -> Any:
        import submitit

        if not hasattr(self, "free_gpus"):  # the first launch() call: one pool for all calls
            defaults = SlurmQueueConf()
            ignored = {
                k: self.params[k]
                for k in SLURM_ONLY
                if self.params.get(k) and self.params[k] != getattr(defaults, k)
            }
            if ignored:
                listed = ", ".join(f"{k}={v}" for k, v in ignored.items())
                _say(f"launcher=local ignores what only SLURM understands: {listed}")
            self.free_gpus, self.gpus_per_job = self._gpus()
            self.gpus_of: dict[int, list[int]] = {}
            self.warm = self._start_server()
        executor = submitit.LocalExecutor(
            folder=Path(self.params["submitit_folder"]).absolute(),
            max_num_timeout=self.params["max_num_timeout"],
        )
        executor.update_parameters(
            timeout_min=self.params["timeout_min"],
            signal_delay_s=self.params["signal_delay_s"],
            tasks_per_node=self.params.get("tasks_per_node") or 1,
            stderr_to_stdout=self.params.get("stderr_to_stdout", False),
            setup=self.params.get("setup") or [],
        )
        return executor

    def _start_server(self) -> warm.Server | None:
        """The warm-start server of this launcher's jobs (``preload``; see :mod:`.warm`), or
        None where jobs start in a fresh interpreter."""
        preload = self.options.get("preload")
        if preload is None or self.params.get("setup"):
            return None
        server = warm.Server(list(dict.fromkeys([*warm.JOB_MODULES, *preload])))
        atexit.register(server.stop)
        return server

    def _room(self, active: int) -> int:
        room = int(self.options.get("max_parallel", 2)) - active
        if self.gpus_per_job:
            room = min(room, len(self.free_gpus) // self.gpus_per_job)
        return room

    def _submit(self, executor: Any, jobs: list[Any], shared: Path) -> list[Any]:
        submitted, call = [], JobCall(shared)
        if self.warm is not None:
            if self.warm.ready():
                executor.python = self.warm.python()
            else:
                _say("warm start is off: the server could not import hydra.launcher.preload")
                self.warm = None
        for job in jobs:
            gpus = self.free_gpus[: self.gpus_per_job]
            self.free_gpus = self.free_gpus[self.gpus_per_job :]
            self.gpus_of[job.num] = gpus
            executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
            submitted.append(executor.submit(call, *self._job_params(job)))
        return submitted

    def _released(self, job: Any) -> None:
        self.free_gpus = sorted(self.free_gpus + self.gpus_of.pop(job.num, []))

    def _describe_params(self) -> dict[str, Any]:
        gpus, per_job = self._gpus()
        return {**super()._describe_params(), "gpus_per_node": per_job}


class SlurmLauncher(SweepLauncher):
    """Submits the jobs to SLURM as one job array (hydra-submitit-launcher's submitit_slurm),
    at most ``array_parallelism`` running at once; jobs requeue on preemption and time limits."""

    _EXECUTOR = "slurm"
    kind = "slurm"

    def _executor(self, sweep_dir: Path) -> Any:
        import submitit

        params = dict(self.params)
        folder = Path(params.pop("submitit_folder")).absolute()
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
        )
        return executor

    def _queued(self, sjobs: list[Any]) -> set[str]:
        """With many jobs in the queue, one squeue call says which are still pending: a poll
        then looks for the results of the few that may have ended (submitit's ``done()``
        stats files, job by job), not of all of the array's jobs."""
        if len(sjobs) <= QUEUE_QUERY_FROM:
            return set()
        return queued_slurm_jobs([str(sjob.job_id) for sjob in sjobs]) or set()

    def _room(self, active: int) -> int:
        return sys.maxsize  # SLURM queues them all; array_parallelism caps how many run

    def _submit(self, executor: Any, jobs: list[Any], shared: Path) -> list[Any]:
        params = [self._job_params(job) for job in jobs]
        submitted = executor.map_array(JobCall(shared), *zip(*params))
        ids = ", ".join(str(j.job_id) for j in submitted)
        _say(f"submitted {jobs_(len(submitted), 'SLURM job')}: {ids}")
        return submitted
