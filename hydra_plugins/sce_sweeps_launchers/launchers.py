"""The local and SLURM launchers of sce_sweeps: every job composed and checked before any runs,
dry run, ``manifest.json``, resume, requeue (:meth:`JobCall.checkpoint`). The Optuna sweeper
calls :meth:`SweepLauncher.launch` from several threads: one lock guards what they share."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import math
import os
import pickle
import shlex
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.experimental.callback import Callback
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.sce_sweeps_launchers import warm
from hydra_plugins.sce_sweeps_launchers.config import LocalSweepLauncherConf
from sce_sweeps.runtime import plan, progress, slurm
from sce_sweeps.runtime.adapters.hydra_config import job_error
from sce_sweeps.runtime.record import (
    FINISHED,
    HOST,
    LIVE,
    Job,
    Manifest,
    RunFileError,
    RunState,
    Stall,
    SweepDirBusyError,
    atomic_write,
    claim_sweep_dir,
    clear_heartbeat,
    command_line,
    ledger_start,
    ledger_update,
    now,
    relative_run_dir,
    release_sweep_dir,
    stall,
    try_read_result,
)
from sce_sweeps.runtime.status import exit_code, jobs_, sweep_status


def _fields(conf: type) -> list[str]:
    return [f.name for f in dataclasses.fields(conf)]


OWN_KEYS = set(_fields(LocalSweepLauncherConf)) - set(_fields(SlurmQueueConf))  # not submitit's
LOCAL_KEYS = {*_fields(BaseQueueConf), "_target_", "signal_delay_s", "max_num_timeout", "setup"}
SLURM_ONLY = [k for k in _fields(SlurmQueueConf) if k not in LOCAL_KEYS]  # local ignores them
STALLED_ACTIONS = ("flag", "kill")  # what to do with a stalled job (hydra.launcher.stalled)
KILL_GRACE_S = 30.0  # seconds a stalled job has to checkpoint after SIGTERM, before SIGKILL
QUEUE_QUERY_FROM = 32  # jobs in the queue from which a poll asks squeue which are pending
# By sweep dir, the jobs this process was asked to run (not retried trials): SweepExitStatus's.
_asked: dict[str, set[int]] = {}


def _cli(command: str, sweep_dir: Path) -> str:
    return command_line("-m", "sce_sweeps.cli", command, sweep_dir)


def _say(message: str) -> None:
    progress.clear()  # a progress bar on the terminal gives way to the message
    print(f"sce_sweeps: {message}", file=sys.stderr, flush=True)


def _exit(message: str, code: int = 2) -> NoReturn:
    _say(message)
    raise SystemExit(code)


def _counts(states: Iterable[str]) -> str:
    """``1 completed, 2 failed``: how many of ``states`` are each state."""
    return ", ".join(f"{n} {state}" for state, n in sorted(Counter(states).items()))


class JobCall:
    """What submitit runs: the launcher pickled in ``shared`` (one file per submission)."""

    def __init__(self, shared: Path) -> None:
        self.shared = shared

    def __call__(self, num: int, config: bytes) -> JobReturn:
        # the config comes pickled by the C pickler: ten times faster than submitit's cloudpickle
        launcher, state = pickle.loads(self.shared.read_bytes())
        return launcher(num, state, pickle.loads(config))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Resubmit the same call (submitit calls it on a preemption or a time limit)."""
        import submitit

        _clear_heartbeat()  # the requeued job is watched from its own first beat
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def share(launcher: SweepLauncher, folder: Path) -> Path:
    """Pickle ``launcher`` and Hydra's global state into a file of ``folder`` named after it."""
    import cloudpickle  # as submitit pickles: the task function may live in __main__
    from hydra.core.plugins import Plugins
    from omegaconf.basecontainer import BaseContainer

    # Singleton.get_state() deep-copies what pickling copies anyway
    instances = {k: v for k, v in Singleton._instances.items() if k is not Plugins}
    state = {"instances": instances, "omegaconf_resolvers": dict(BaseContainer._resolvers)}
    blob = cloudpickle.dumps((launcher, state))
    path = folder / f"shared-{hashlib.sha1(blob).hexdigest()[:16]}.pkl"
    if not path.exists():
        with atomic_write(path, sync=False) as f:
            f.write(blob)
    return path


_job_run_dir: Path | None = None  # in a job's process: its run dir


def _clear_heartbeat() -> None:
    if _job_run_dir is not None:
        clear_heartbeat(_job_run_dir)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM, once the checkpoint is saved: stop without a result rather than race SLURM's
    kill, so that the requeued job resumes from the checkpoint instead of a finished run."""
    _say("SIGTERM: stopped after saving a checkpoint; a requeued job resumes from it")
    _clear_heartbeat()
    raise SystemExit(128 + signum)


class SweepLauncher(BaseSubmititLauncher):
    """The launch around a subclass's ``_executor()`` and ``_submit(executor, jobs, shared)``."""

    thread_safe_launch = True  # see the module's docstring

    def __init__(self, **params: Any) -> None:
        self.options = {k: params.pop(k) for k in OWN_KEYS if k in params}
        stalled, stall_after = self.options.get("stalled", "flag"), self.options.get("stall_after")
        if stalled not in STALLED_ACTIONS:
            _exit(f"hydra.launcher.stalled={stalled}: must be one of {', '.join(STALLED_ACTIONS)}")
        if stall_after is not None and not float(stall_after) > 0:
            _exit(f"hydra.launcher.stall_after={stall_after}: must be a number of seconds > 0")
        if self.options.get("detach") and self.kind != "slurm":
            _exit(
                f"hydra.launcher.detach=true needs launcher=slurm: the controller it detaches "
                f"is a SLURM job (launcher={self.kind} runs the sweep in this process)"
            )
        super().__init__(**params)
        self.manifest: Manifest | None = None  # once launched
        self._lock = threading.RLock()  # the manifest, the running count, the GPU pool
        self._active = 0  # jobs submitted and not over, over all launch() calls
        self._composer: Any = None  # composes the jobs (SweepComposer), once set up
        self._entries: dict[int, Job] = {}  # the manifest's jobs by number
        self._saved_at, self._save_s, self._unsaved = 0.0, 0.0, False  # last save; put off
        self._flagged: set[int] = set()  # jobs said to be stalled
        self._stopping: dict[int, tuple[Stall, float]] = {}  # stalled jobs being ended, deadline
        self._adopted: dict[int, Any] = {}  # jobs of an earlier launch to watch, by number

    def __getstate__(self) -> dict[str, Any]:
        """What a job receives: no lock, no manifest, no server."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_lock", "warm")}
        state["manifest"], state["_composer"], state["_entries"] = None, None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def _room(self, active: int) -> int:
        """How many more jobs may be submitted now, with ``active`` submitted and not over."""
        return sys.maxsize

    def _released(self, job: Any) -> None:
        """Called when a submitted job is over."""

    def _adoptable(self, manifest: Manifest, jobs: list[Any]) -> dict[int, Any]:
        """Those of ``jobs`` an earlier launch left queued or running that this resume watches
        to their end instead of skipping (by number, their submitit jobs); none by default."""
        return {}

    def _queued(self, sjobs: list[Any]) -> set[str]:
        """Ids of those of ``sjobs`` known to be still waiting to start, which a poll skips."""
        return set()

    def _describe_params(self) -> dict[str, Any]:
        return {**self.params, **self.options}

    def __call__(self, num: int, singleton_state: dict[str, Any], config: DictConfig) -> JobReturn:
        """Run job ``num`` (in its process) on the config the launcher composed for it."""
        import submitit

        # submitit only logs SIGTERM ("bypass"); stop instead, once the trainer has saved.
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        Singleton.set_state(singleton_state)
        setup_globals()
        environment = submitit.JobEnvironment()
        with open_dict(config.hydra.job):
            config.hydra.job.id = environment.job_id
            config.hydra.job.num = num
        global _job_run_dir
        _job_run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        _clear_heartbeat()  # an earlier attempt's (requeued without a signal)
        if environment.global_rank == 0:  # one attempt per job, whatever its tasks
            ledger_start(_job_run_dir, cpus=self.params.get("cpus_per_task"))
        assert self.hydra_context is not None and self.task_function is not None
        try:
            return run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        finally:
            ledger_update(_job_run_dir, end=True)

    def _save(self, manifest: Manifest, now_: bool = True) -> None:
        """Save the manifest; ``now_=False``: only after a poll and 20 saves' time (<= 5%)."""
        since = time.monotonic() - self._saved_at
        if not now_ and since < max(float(self.options.get("poll_s", 2.0)), 20 * self._save_s):
            self._unsaved = True
            return
        start = time.monotonic()
        manifest.save()
        self._saved_at = time.monotonic()
        self._save_s, self._unsaved = self._saved_at - start, False

    def _open_manifest(self, sweep_dir: Path) -> Manifest:
        """This sweep's manifest, the sweep dir's (resume) or a new one, once the dir is claimed."""
        if self.manifest is not None:
            return self.manifest
        try:
            if not self.options.get("dry_run"):
                claim_sweep_dir(sweep_dir)
            existing = Manifest.load(sweep_dir)
        except (SweepDirBusyError, RunFileError) as e:
            _exit(str(e))
        if self.options.get("resume"):
            if existing is None:
                _exit(f"nothing to resume: no manifest.json in {sweep_dir}")
            return existing
        if existing is not None:
            _exit(
                f"{sweep_dir} already holds a sweep (manifest.json): resume it with "
                f"`{_cli('resume', sweep_dir)}` or hydra.launcher.resume=true"
            )
        name = OmegaConf.select(self.config, "sweep_name", default=None)
        return Manifest.create(sweep_dir, str(name or self.config.hydra.job.name), self.kind)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
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
        from sce_sweeps.runtime.adapters.hydra_config import sweep_composer

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        first_launch = self.manifest is None
        manifest = self._open_manifest(sweep_dir)
        # the app's primary metric, for status and the value a skipped job returns
        manifest.metric = OmegaConf.select(self.config, "record.metric", default=None)
        manifest.mode = OmegaConf.select(self.config, "record.mode", default="max")
        resumed = bool(self.options.get("resume") and first_launch)
        if self._composer is None:
            self._composer = sweep_composer(self.hydra_context.config_loader, self.config)
        try:
            overrides = [list(o) for o in job_overrides]
            hooks = self.options.get("validate"), self.options.get("config_hash")
            jobs = plan.plan_jobs(self._composer, overrides, initial_job_idx, manifest, *hooks)
            invalid = plan.invalid_job_lines(jobs)
            for line in invalid:
                _say(line)
            if invalid:
                _exit(f"{len(invalid)} of {jobs_(len(jobs))} are invalid; nothing was launched")
        except BaseException:  # e.g. an override that does not compose: Hydra's error follows
            if first_launch and not manifest.path.exists():
                plan.remove_unused_sweep_dir(sweep_dir)
            raise
        if resumed:
            # having claimed the sweep dir, this process is its one launcher (and the live
            # controller job of a detached sweep is this process): none other will start a job
            other = None if self.options.get("dry_run") else False
            previous = {s.num: s for s in sweep_status(manifest, launcher_alive=other)}
            for job in jobs:
                job.previous = previous.get(job.num)

        if self.options.get("dry_run"):
            params = self._describe_params()
            name = manifest.sweep_name
            existing = manifest if manifest.path.exists() else None  # its runs' ledgers
            report = plan.describe(jobs, params, self.kind, name, sweep_dir, resumed, existing)
            data, data_ok = [], True
            if params.get("check_data"):
                data, data_ok = plan.check_data(jobs, params.get("data_check"))
            if not manifest.path.exists():
                plan.remove_unused_sweep_dir(sweep_dir)
            print("\n".join([report, *data]), flush=True)
            if not data_ok:  # a damaged dataset: the sweep would fail, say so by the status
                raise SystemExit(1)
            return None

        self.manifest = manifest
        manifest.stall_after = self.options.get("stall_after")
        _asked.setdefault(os.path.realpath(sweep_dir), set()).update(job.num for job in jobs)
        if resumed:  # this process launches now (a detached sweep's controller: on a node)
            manifest.pid, manifest.host = os.getpid(), HOST
            manifest.resumes += 1
        adopted = self._adoptable(manifest, jobs) if resumed else {}
        self._adopted.update(adopted)
        todo = [job for job in jobs if not job.skip or job.num in adopted]
        skipped = [job for job in jobs if job.skip and job.num not in adopted]
        returns = {job.num: self._skipped(job) for job in skipped}
        self._entries = {entry.num: entry for entry in manifest.jobs}
        for job in todo:  # pending, a rerun's entry reset
            if job.num in adopted:
                continue  # its entry stands: the job it records is the one watched
            entry = self._entries.get(job.num)
            if entry is None:
                run_dir = relative_run_dir(job.run_dir, manifest.sweep_dir)
                entry = Job(job.num, job.overrides, job.config_hash, run_dir)
                self._entries[job.num] = entry
                manifest.jobs.append(entry)
            entry.state, entry.reason, entry.finished_at = RunState.PENDING, None, None
        manifest.jobs.sort(key=lambda j: j.num)
        self._save(manifest)
        if resumed:
            watched = f", {len(adopted)} of an earlier launch watched" if adopted else ""
            _say(
                f"resuming {sweep_dir}: {jobs_(len(todo) - len(adopted))} to run{watched}, "
                f"{len(returns)} skipped (finished or still queued/running)"
            )
        return manifest, jobs, returns, todo

    def _skipped(self, job: Any) -> JobReturn:
        """The return of a job a resume does not rerun: its result's ``record.metric`` or NaN."""
        _say(f"job #{job.num}: {job.previous.state}, not rerun ({job.run_dir})")
        ret = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
        ret.return_value = math.nan if job.previous.value is None else float(job.previous.value)
        return ret

    def _run(self, jobs: list[Any], manifest: Any) -> dict[int, JobReturn]:
        """Submit ``jobs`` as room allows, watch them (polls hold the lock), record them."""
        if not jobs:
            return {}
        waiting, returns = list(jobs), {}
        running: dict[int, tuple[Any, Any]] = {}
        try:
            with self._lock:
                try:
                    executor = self._executor()
                except Exception as e:  # e.g. no SLURM on this machine
                    self._not_submitted(manifest, waiting, e)
                shared = share(self, Path(manifest.sweep_dir) / ".submitit")
            for job in [job for job in waiting if job.num in self._adopted]:
                waiting.remove(job)
                running[job.num] = (job, self._adopted.pop(job.num))
                self._active += 1
                _say(f"job #{job.num}: watching SLURM job {running[job.num][1].job_id} to its end")
            while waiting or running:
                with self._lock:
                    changed = submitted_ids = False
                    queued = self._queued([sjob for _, sjob in running.values()])
                    for num, (job, sjob) in list(running.items()):
                        entry = self._entries[num]
                        if sjob.job_id in queued:
                            continue
                        if sjob.done():
                            returns[num] = self._finish(entry, job, sjob, manifest)
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
                        except Exception as e:  # sbatch refused (resources, partition...)
                            self._not_submitted(manifest, waiting, e)
                        del waiting[:room]
                        for job, sjob in zip(batch, submitted):
                            entry = self._entries[job.num]
                            entry.job_ids.append(str(sjob.job_id))
                            entry.state = (
                                RunState.PENDING if self.kind == "slurm" else RunState.RUNNING
                            )
                            entry.submitted_at, entry.log = now(), str(sjob.paths.stderr)
                            running[job.num] = (job, sjob)
                            self._active += 1
                        changed, submitted_ids = True, self.kind == "slurm"
                    if changed:  # SLURM job ids at once: a resume must find the jobs it submitted
                        self._save(manifest, now_=submitted_ids)
                    progress.show(manifest, final=not (waiting or running))
                if waiting or running:
                    time.sleep(float(self.options.get("poll_s", 2.0)))
            with self._lock:
                if self._unsaved:
                    self._save(manifest)
        except KeyboardInterrupt:
            with self._lock:
                self._save(manifest)
            where = "keep running on SLURM" if self.kind == "slurm" else "were stopped"
            _say(
                f"interrupted: {len(running)} started jobs {where}; see "
                f"`{_cli('status', manifest.sweep_dir)}`, resume with "
                f"`{_cli('resume', manifest.sweep_dir)}`"
            )
            raise
        return returns

    def _not_submitted(self, manifest: Manifest, jobs: list[Any], error: Exception) -> None:
        """Record ``jobs`` as not submitted, with the scheduler's reason; say so and exit 2."""
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        ours = [line for line in lines if "error" in line.lower()]
        reason = (ours or lines or [type(error).__name__])[-1]
        if isinstance(error, FileNotFoundError) or "Could not detect" in reason:
            reason = f"SLURM's commands are not installed on this machine ({reason})"
        for job in jobs:
            entry = self._entries[job.num]
            entry.state, entry.reason = RunState.NOT_SUBMITTED, reason
        self._save(manifest)
        _exit(
            f"not submitted: {reason}; {jobs_(len(jobs))} not submitted (manifest.json says "
            f"so); fix it, then `{_cli('resume', manifest.sweep_dir)}`"
        )

    def _finish(self, entry: Any, job: Any, sjob: Any, manifest: Any) -> JobReturn:
        """Record how a job ended; a job that died without a return gets NaN, not an error."""
        entry.finished_at = now()
        ended = self._stopping.pop(job.num, None)  # (its stall, deadline): ended by _watch
        self._flagged.discard(job.num)
        try:
            ret, error = sjob.results()[0], None
        except Exception as e:  # cancelled, killed, out of memory: no JobReturn came back
            first = (str(e).strip() or type(e).__name__).splitlines()[0]
            ret, error = None, f"{type(e).__name__}: {first}"
        if ret is None or (ended is not None and ret.status != JobStatus.COMPLETED):
            entry.state, entry.reason = RunState.FAILED, str(ended[0]) if ended else error
            ret = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
            ret.return_value = math.nan
        else:
            result = try_read_result(job.run_dir) or {}
            entry.state = RunState(result.get("status", RunState.COMPLETED))
            entry.reason = result.get("reason")
            if ret.status == JobStatus.FAILED:
                entry.state, entry.reason = RunState.FAILED, repr(job_error(ret))
            elif isinstance(ret.return_value, (int, float)):
                entry.objective = float(ret.return_value)
        detail = entry.reason or "-"
        if entry.state == RunState.COMPLETED and entry.objective is not None:
            detail = f"{manifest.metric or 'objective'} {entry.objective:g}"
        _say(f"job #{job.num} {entry.state}: {detail} [{job.run_dir}]")
        return ret

    def _watch(self, manifest: Manifest, entry: Job, sjob: Any) -> None:
        """Flag a stalled job (said once); with ``stalled=kill``, SIGTERM it, later SIGKILL."""
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
        """SIGTERM (``force``: SIGKILL) to a stalled job's process here; on SLURM, ``scancel``."""
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
        counts = _counts(self._entries[job.num].state for job in jobs)
        # a run that trained but whose tracking failed (e.g. its Aim merge) says so in its result
        results = [try_read_result(manifest.sweep_dir / job.run_dir) or {} for job in jobs]
        untracked = [job.num for job, result in zip(jobs, results) if result.get("tracking")]
        if len(jobs) == 1 and not untracked:
            return  # its own line said it all
        if untracked:
            listed = ", ".join(f"#{n}" for n in untracked[:5]) + ", ..." * (len(untracked) > 5)
            counts += f"; tracking failed for {jobs_(len(untracked))} ({listed})"
        _say(
            f"sweep {manifest.sweep_name}: {jobs_(len(jobs))}: {counts}; "
            f"`{_cli('status', manifest.sweep_dir)}` shows each"
        )


class SweepExitStatus(Callback):
    """Ends a multirun with the exit status of ``sce_sweeps.cli status`` over its jobs (0, 1, 3);
    into a sweep dir that cannot be written, exits as ``sce_sweeps.cli resume`` would (0, 2)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from sce_sweeps.runtime.resume import say_if_read_only

        code = say_if_read_only(str(config.hydra.sweep.dir), "sce_sweeps")
        if code is not None:  # before Hydra writes multirun.yaml into it
            raise SystemExit(code)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
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
        counts = _counts(s.state for s in statuses if s.state not in FINISHED)
        then = "an earlier launch submitted them"
        if code == 1:
            then = f"rerun them with `{_cli('resume', sweep_dir)}`"
        _exit(
            f"exit status {code}: {counts} of {jobs_(len(statuses))}; see "
            f"`{_cli('status', sweep_dir)}`; {then}",
            code,
        )


class LocalLauncher(SweepLauncher):
    """Runs jobs in processes of this machine, ``max_parallel`` at once, each with its GPU(s)."""

    kind = "local"

    def _gpus(self) -> tuple[list[int], int]:
        """(this machine's visible GPUs, GPUs per job)."""
        env, gpus = os.environ.get("CUDA_VISIBLE_DEVICES"), []
        if env is not None:
            ids = [x.strip() for x in env.split(",") if x.strip()]
            gpus = [int(x) for x in ids] if all(x.isdigit() for x in ids) else list(range(len(ids)))
        # torch takes seconds to import: only where there is an NVIDIA or AMD GPU device
        elif any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists():
            with contextlib.suppress(Exception):  # no torch, no driver
                import torch

                gpus = list(range(torch.cuda.device_count()))
        per_job = int(self.params.get("tasks_per_node") or 1) if gpus else 0  # a GPU per process
        if self.params.get("gpus_per_node") is not None:
            per_job = int(self.params["gpus_per_node"])
        if per_job > len(gpus):
            _exit(f"each job asks for {per_job} GPUs but this machine has {len(gpus)}")
        return gpus, per_job

    def _executor(self) -> Any:
        import submitit

        if not hasattr(self, "free_gpus"):  # the first launch() call: one pool for all calls
            defaults = SlurmQueueConf()
            ignored = [
                f"{k}={self.params[k]}"
                for k in SLURM_ONLY
                if self.params.get(k) and self.params[k] != getattr(defaults, k)
            ]
            if ignored:
                _say(f"launcher=local ignores what only SLURM understands: {', '.join(ignored)}")
            self.free_gpus, self.gpus_per_job = self._gpus()
            self.gpus_of: dict[int, list[int]] = {}
            preload = self.options.get("preload")
            self.warm: warm.Server | None = None
            if preload is not None and not self.params.get("setup"):
                self.warm = warm.Server(list(dict.fromkeys([*warm.JOB_MODULES, *preload])))
                atexit.register(self.warm.stop)
        if self.warm is not None and not self.warm.ready():
            _say("warm start is off: the server could not import hydra.launcher.preload")
            self.warm = None
        executor = submitit.LocalExecutor(
            folder=Path(self.params["submitit_folder"]).absolute(),
            max_num_timeout=self.params["max_num_timeout"],
            python=self.warm.python() if self.warm is not None else None,
        )
        executor.update_parameters(
            timeout_min=self.params["timeout_min"],
            signal_delay_s=self.params["signal_delay_s"],
            tasks_per_node=self.params.get("tasks_per_node") or 1,
            stderr_to_stdout=self.params.get("stderr_to_stdout", False),
            setup=self.params.get("setup") or [],
        )
        return executor

    def _room(self, active: int) -> int:
        room = int(self.options.get("max_parallel", 2)) - active
        if self.gpus_per_job:
            room = min(room, len(self.free_gpus) // self.gpus_per_job)
        return room

    def _submit(self, executor: Any, jobs: list[Any], shared: Path) -> list[Any]:
        submitted = []
        for job in jobs:
            gpus = self.free_gpus[: self.gpus_per_job]
            self.free_gpus = self.free_gpus[self.gpus_per_job :]
            self.gpus_of[job.num] = gpus
            executor.update_parameters(gpus_per_node=len(gpus), visible_gpus=gpus)
            submitted.append(executor.submit(JobCall(shared), job.num, pickle.dumps(job.config)))
        return submitted

    def _released(self, job: Any) -> None:
        self.free_gpus = sorted(self.free_gpus + self.gpus_of.pop(job.num, []))

    def _describe_params(self) -> dict[str, Any]:
        return {**super()._describe_params(), "gpus_per_node": self._gpus()[1]}


class SlurmLauncher(SweepLauncher):
    """Submits the jobs to SLURM as a job array, ``array_parallelism`` running at once."""

    kind = "slurm"

    def _executor(self) -> Any:
        import submitit

        params = dict(self.params)
        folder = Path(params.pop("submitit_folder")).absolute()
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        generic = set(_fields(BaseQueueConf))
        executor.update_parameters(
            **{k if k in generic else f"slurm_{k}": v for k, v in params.items()}
        )
        return executor

    def setup(self, **kwargs: Any) -> None:
        super().setup(**kwargs)
        if self.options.get("detach") and not self.options.get("dry_run"):
            self._detach()

    def _detach(self) -> NoReturn:
        """Submit this sweep's controller as a small requeueable SLURM job, and exit 0 at once:
        the job runs this command again, resuming and not detached, so that a requeued or
        preempted controller goes on where the sweep stood (docs/sweeps.md)."""
        from sce_sweeps.runtime.resume import resume_command

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        manifest = self._open_manifest(sweep_dir)  # claims the dir; a resume's, or a new one
        if manifest.controller and slurm.job_alive(manifest.controller):
            _exit(f"{sweep_dir} already has a live controller, SLURM job {manifest.controller}")
        command = resume_command(manifest, ["hydra.launcher.detach=false"])
        script = "\n".join(
            [
                "#!/bin/bash",
                f"# the controller of sweep {manifest.sweep_name}: a requeued job resumes it",
                f"cd {shlex.quote(manifest.cwd)} || exit 1",
                'echo "sce_sweeps: controller start $((${SLURM_RESTART_COUNT:-0} + 1)) on '
                '$(hostname) at $(date)"',
                f"exec {shlex.join(command)}",
                "",
            ]
        )
        try:  # held until its id is in the manifest and this process lets go of the dir
            job_id = slurm.submit_script(script, self._controller_options(manifest, sweep_dir))
        except RuntimeError as e:
            plan.remove_unused_sweep_dir(sweep_dir)  # a new sweep's: nothing written but the lock
            _exit(f"the controller was not submitted: {str(e).strip().splitlines()[-1]}")
        manifest.controller = job_id
        self._save(manifest)
        release_sweep_dir(sweep_dir)
        if not slurm.release(job_id):
            _exit(f"controller SLURM job {job_id} is held: `scontrol release {job_id}` starts it")
        print(
            f"sce_sweeps: detached: the controller of sweep {manifest.sweep_name} is SLURM job "
            f"{job_id} (log: {sweep_dir / f'controller-{job_id}.log'})\n"
            f"  {_cli('status', sweep_dir)}",
            flush=True,
        )
        raise SystemExit(0)

    def _controller_options(self, manifest: Manifest, sweep_dir: Path) -> list[str]:
        """sbatch's options for the controller job: ``hydra.launcher.controller``, whose
        partition, account and qos default to the launcher's."""
        own = self.options.get("controller") or {}
        options = [
            "--hold",
            "--requeue",
            f"--job-name={manifest.sweep_name}-controller",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={int(own.get('cpus') or 1)}",
            f"--mem={int(float(own.get('mem_gb') or 2.0) * 1024)}M",
            f"--output={sweep_dir / 'controller-%j.log'}",
            "--open-mode=append",  # a requeued controller's lines follow the earlier ones
        ]
        for key in ("partition", "account", "qos"):
            value = own.get(key) or self.params.get(key)
            if value:
                options.append(f"--{key}={value}")
        if own.get("time_min"):
            options.append(f"--time={int(own['time_min'])}")
        return options

    def _adoptable(self, manifest: Manifest, jobs: list[Any]) -> dict[int, Any]:
        """In a detached sweep's controller (this process runs as its SLURM job), restarted:
        the jobs it submitted before, still queued or running, to wait for, not rerun."""
        import submitit

        if not manifest.controller or manifest.controller != os.environ.get("SLURM_JOB_ID"):
            return {}
        found = {}
        for job in jobs:
            previous = job.previous
            if previous and previous.state in LIVE and previous.job_id and previous.log:
                folder = Path(previous.log).parent  # submitit's folder, %j resolved
                found[job.num] = submitit.SlurmJob(folder=folder, job_id=previous.job_id)
        return found

    def _queued(self, sjobs: list[Any]) -> set[str]:
        """With many jobs, one squeue call saves a poll reading the results of pending ones."""
        if len(sjobs) <= QUEUE_QUERY_FROM:
            return set()
        return slurm.queued_jobs([str(sjob.job_id) for sjob in sjobs]) or set()

    def _submit(self, executor: Any, jobs: list[Any], shared: Path) -> list[Any]:
        configs = [pickle.dumps(job.config) for job in jobs]
        submitted = executor.map_array(JobCall(shared), [job.num for job in jobs], configs)
        ids = ", ".join(str(j.job_id) for j in submitted)
        _say(f"submitted {jobs_(len(submitted), 'SLURM job')}: {ids}")
        return submitted
