"""Experiment tracking: one Aim run per training run, gathered safely into one repo per sweep.

``tracker=none`` gives :class:`NullTracker`; ``tracker=aim`` gives :class:`AimTracker`.

Many SLURM jobs writing into one Aim repo on a shared filesystem corrupt it (aim issues 2109,
2279, 2869): the repo's SQLite file, its index and its locks are shared by every writer. So no
job ever writes the shared repo while it trains:

* each run writes its Aim run into a private repo in its own run dir (``<run dir>/aim``), a
  repo with exactly one writer, next to the checkpoint that stores the run's hash;
* the run is copied (Aim's ``Repo.copy_runs``, what ``aim runs cp`` does) into the sweep's repo
  (``<sweep dir>/aim``; beside the runs for single runs, see :func:`runs_root`;
  ``tracker.repo`` overrides) under an exclusive POSIX lock on ``<repo>/merge.lock``: when the
  run ends, and while it trains at most every ``tracker.sync_interval_s`` seconds, so the
  sweep can be watched live.

A resumed or requeued run reopens the same Aim run (hash from the checkpoint) in its private
repo. Aim keys a metric's values by step, so the steps of a partial epoch that are re-tracked
after a resume replace the ones tracked before the crash: each step is stored once. A tracking
failure of any kind is one warning; training goes on, and the run's record says what happened
(:attr:`NullTracker.problem`). Aim's closing calls never return on a full disk: they run in a
thread of their own, waited on for a bounded time, so the process always exits.

Where the cluster's nodes can reach a server, ``tracker.repo=aim://host:port`` sends every run
straight to an Aim remote tracking server (``aim server --repo <repo>``, served beside
``aim up --repo <repo>``) instead: :class:`RemoteAimTracker`, no private repo and no merge; the
server is the repo's one writer.

Reading a sweep: ``aim up --repo <sweep dir>/aim``. ``python -m sce_sweeps.tracking merge
<sweep dir>`` merges (again) every run dir's private repo into the sweep's, e.g. after a job was
killed between two merges.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import fcntl
import gc
import io
import itertools
import json
import logging
import os
import random
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sce_sweeps.runfiles import (
    HYDRA_DIR,
    RESULT,
    RUN_MARKER,
    RunFileError,
    RunState,
    flatten,
    override_dict,
    read_result,
    write_json_atomic,
)

log = logging.getLogger(__name__)

RUN_REPO = "aim"  # a run's private repo, inside its run dir
SWEEP_REPO = "aim"  # the shared repo, inside the sweep dir
LOCK_FILE = "merge.lock"
NEW_REPO_PREFIX = ".aim-new-"  # a repo being created, beside where it goes (create_repo)
SYSTEM_INTERVAL_S = 10  # seconds between two samples of Aim's system metrics
MERGE_TIMEOUT_S = 600.0  # longest wait for the shared repo's lock when a run ends
LIVE_MERGE_TIMEOUT_S = 30.0  # ... while it trains (the next live merge retries)
MERGE_TIME_SHARE = 20  # live merges are spaced by at least 20 times what the last one took
CLOSE_WAIT_S = 20.0  # longest wait for Aim to close a run (on a full disk it never does)
EXIT_WAIT_S = 10.0  # ... and, as the process exits, for Aim to close whatever is left open
NOT_MERGED = "not merged into"  # how a run's record (result.json "tracking") says so


class TrackingError(RuntimeError):
    """Tracking failed; the run goes on without it."""


class NullTracker:
    """Tracks nothing. The interface every tracker implements."""

    run_hash: str | None = None
    problem: str | None = None  # what went wrong with tracking, for the run's record

    def log(
        self, metrics: dict[str, float], step: int, epoch: int, context: dict[str, str]
    ) -> None:
        """Record scalar metrics at a global step, e.g. context={"subset": "train"}."""

    def log_images(self, name: str, images: torch.Tensor, step: int) -> None:
        """Record a batch of images (B x C x H x W, normalised as fed to the network)."""

    def close(self, status: str) -> None:
        """Finish the run with status completed / failed / pruned / interrupted."""


class AimTracker(NullTracker):
    """Tracks one training run as one Aim run (see the module docstring for the layout).

    Args:
        run_repo: the run's private Aim repo (``<run dir>/aim``).
        shared_repo: the repo the run is merged into; None keeps it in ``run_repo`` only (and
            merges nothing while it trains).
        run_hash: the Aim run to continue (from the checkpoint), or None for a new one.
        params: the run's parameters (nested dicts of plain values).
        experiment: Aim experiment name (the sweep name).
        name: Aim run name.
        system_metrics: also track Aim's CPU, memory, disk and GPU usage.
        images: track :meth:`log_images` (off: it does nothing).
        sync_interval_s: merge into ``shared_repo`` while training at most this often (None:
            only when the run ends), and never spending more than 1/:data:`MERGE_TIME_SHARE`
            of the time merging (a merge copies the whole run; 0: as often as that allows).

    Raises:
        Exception: whatever Aim raises when the run cannot be opened in ``run_repo``;
            :func:`make_tracker` turns it into a warning.
    """

    def __init__(
        self,
        run_repo: Path,
        shared_repo: Path | None,
        run_hash: str | None,
        params: dict[str, Any],
        experiment: str,
        name: str,
        *,
        system_metrics: bool = True,
        images: bool = True,
        sync_interval_s: float | None = 300.0,
    ) -> None:
        self.run_repo = run_repo
        self.shared_repo = shared_repo
        self.images = images
        self.system_metrics = system_metrics
        self.sync_interval_s = sync_interval_s if shared_repo is not None else None
        self._warned: set[str] = set()
        self._run: Any = None  # aim.Run while open
        self._next_merge = time.monotonic() + (sync_interval_s or 0.0)
        self._open(run_hash, experiment)
        self._run["status"] = RunState.RUNNING.value
        for key, value in params.items():
            self._run[key] = value
        self._run.name = name

    # -- the tracker interface ------------------------------------------------------------

    def log(
        self, metrics: dict[str, float], step: int, epoch: int, context: dict[str, str]
    ) -> None:
        if self._run is None:
            return
        try:
            values = {k: float(v) for k, v in metrics.items() if v is not None}
            self._run.track(values, step=step, epoch=epoch, context=context)
        except Exception as e:
            self._disable("track metrics", e)
            return
        if self.sync_interval_s is not None and time.monotonic() >= self._next_merge:
            self._merge(final=False)

    def log_images(self, name: str, images: torch.Tensor, step: int) -> None:
        if self._run is None or not self.images:
            return
        try:
            from aim import Image

            x = images.detach().float().cpu()
            lo = x.amin(dim=(1, 2, 3), keepdim=True)
            hi = x.amax(dim=(1, 2, 3), keepdim=True)
            x = ((x - lo) / (hi - lo).clamp_min(1e-8) * 255).round().to(torch.uint8)
            pictures = [
                Image(img.permute(1, 2, 0).numpy(), caption=str(i)) for i, img in enumerate(x)
            ]
            self._run.track(pictures, name=name, step=step, context={"subset": "train"})
        except Exception as e:
            self._disable("track images", e)

    def close(self, status: str) -> None:
        if self._run is not None:
            try:
                self._run["status"] = status
            except Exception as e:
                self._disable("record the status", e)
        self._merge(final=True)

    # -- internals ------------------------------------------------------------------------

    def _open_run(self, run_hash: str | None, experiment: str | None, force_resume: bool) -> None:
        """Open (or create) the run in ``run_repo``; ``force_resume`` takes over the lock that
        a killed process left on it."""
        from aim import Run

        self._run = Run(
            run_hash,
            repo=str(self.run_repo),
            experiment=experiment,
            force_resume=force_resume,
            system_tracking_interval=SYSTEM_INTERVAL_S if self.system_metrics else None,
            log_system_params=False,  # it would copy the environment, secrets included
            capture_terminal_logs=False,
        )
        self.run_hash = self._run.hash
        bound_aim_exit()

    def _open(self, run_hash: str | None, experiment: str | None = None) -> None:
        """Open (or create) the run in the private repo; it holds Aim's run lock while open.
        A repo that an attempt killed while creating it is made again; one that cannot be
        opened is set aside (kept, renamed) and the run tracked into a new one."""
        prepare_repo(self.run_repo)  # its one writer: this run
        try:
            self._open_existing(run_hash, experiment)
        except Exception as e:
            if not (self.run_repo / ".aim").is_dir() or self._run is not None:
                raise
            aside = self.run_repo / f".aim-broken-{time.strftime('%Y%m%d-%H%M%S')}"
            os.rename(self.run_repo / ".aim", aside)
            self._warn(
                "lost",
                f"cannot open the Aim repo {self.run_repo} ({type(e).__name__}: {e}); set it "
                f"aside as {aside.name}, tracking into a new Aim run",
            )
            prepare_repo(self.run_repo)
            self._open_run(None, experiment, force_resume=False)

    def _open_existing(self, run_hash: str | None, experiment: str | None) -> None:
        if run_hash is None:  # an attempt killed before its first checkpoint left its run here
            run_hash = only_run(self.run_repo)
        if run_hash is not None and not run_in_repo(self.run_repo, run_hash):
            self._warn(
                "lost",
                f"Aim run {run_hash} is not in {self.run_repo}; tracking into a new Aim run",
            )
            run_hash = None
        # a process that was killed left Aim's lock on the run: it is ours, take it over
        stale = run_hash is not None and run_locked(self.run_repo, run_hash)
        with _captured("aim.sdk.lock_manager"):  # force_resume warns of the lock a crash left
            self._open_run(run_hash, experiment, force_resume=stale)

    def _close_run(self) -> None:
        """Close the Aim run.

        Raises:
            TimeoutError: Aim did not close it within :data:`CLOSE_WAIT_S` (on a full disk, its
                database never closes); the run is left as it is.
        """
        global _aim_stuck
        if self._run is None:
            return
        owned = [self._run]  # the one reference: it goes in the closing thread
        # private: Aim's lock on a run of a repo on disk, a file lock (filelock's) held by the
        # thread that took it, which alone can release it: this one, below
        file_lock = getattr(getattr(self._run, "_lock", None), "_sf_lock", None)
        self._run = None

        def close() -> None:
            run = owned.pop()
            run.close()
            del run  # its databases close as the last reference goes: in this thread too
            gc.collect()

        if not finishes_within(CLOSE_WAIT_S, close):
            _aim_stuck = True  # nor will it close the rest at exit: no wait then
            raise TimeoutError(
                f"Aim did not close run {self.run_hash} within {CLOSE_WAIT_S:.0f} s (a full "
                "disk? its repo removed?)"
            )
        if file_lock is not None and file_lock.is_locked:
            file_lock.release()

    def _merge(self, final: bool) -> None:
        """Copy the run into the shared repo; the run is closed meanwhile (Aim copies only
        closed runs) and reopened after a live merge."""
        if self.run_hash is None:
            return
        start = time.monotonic()
        open_before = self._run is not None
        try:
            self._close_run()
            closed = True
        except Exception as e:
            self._disable("close the Aim run", e)
            closed = False
        if self.shared_repo is not None:  # None: a server's run, nothing to merge
            command = merge_command(self.run_repo.parent.parent, self.shared_repo)
            if not closed and final:  # Aim copies closed runs only
                self.problem = (  # the warning was _disable's
                    f"{NOT_MERGED} {self.shared_repo}: {self.problem}; what Aim run "
                    f"{self.run_hash} holds is in {self.run_repo}: merge it with "
                    f"`{command} --force`"
                )
            elif closed:
                timeout = MERGE_TIMEOUT_S if final else LIVE_MERGE_TIMEOUT_S
                try:
                    merge_run(
                        self.run_repo, self.run_hash, self.shared_repo, timeout, live=not final
                    )
                except Exception as e:
                    message = (
                        f"{NOT_MERGED} {self.shared_repo} ({type(e).__name__}: {e}); Aim run "
                        f"{self.run_hash} is complete in {self.run_repo}: merge it with "
                        f"`{command}`"
                    )
                    self._warn("merge", message)
                    if final:
                        self.problem = message
        now = time.monotonic()
        self._next_merge = now + max(self.sync_interval_s or 0.0, MERGE_TIME_SHARE * (now - start))
        if open_before and closed and not final:
            try:
                self._open(self.run_hash)
            except Exception as e:
                self._disable("reopen the Aim run", e)

    def _disable(self, what: str, error: Exception) -> None:
        message = (
            f"could not {what} ({type(error).__name__}: {error}); "
            "tracking is off for the rest of this run, training goes on"
        )
        self._warn("disabled", message)
        self.problem = self.problem or message
        with contextlib.suppress(Exception):
            self._close_run()
        self._run = None

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("tracking: %s", message)


REMOTE_SCHEME = "aim://"


def is_remote(repo: str | Path | None) -> bool:
    """Whether ``tracker.repo`` names an Aim remote tracking server (``aim://host:port``)."""
    return isinstance(repo, str) and repo.startswith(REMOTE_SCHEME)


class RemoteAimTracker(AimTracker):
    """Tracks one training run as one Aim run of an Aim remote tracking server.

    Every job logs to the server directly (it is the repo's only writer), so nothing is
    merged; a resumed run reopens its run on the server by the hash its checkpoint stores.
    Its arguments are :class:`AimTracker`'s, with ``run_repo`` the server (``aim://host:port``)
    and ``shared_repo`` None.

    Raises:
        Exception: whatever Aim raises when the server cannot be reached;
            :func:`make_tracker` turns it into a warning.
    """

    def _open(self, run_hash: str | None, experiment: str | None = None) -> None:
        try:
            self._open_run(run_hash, experiment, force_resume=False)
        except Exception:
            if run_hash is None:
                raise
            # a killed job left the run locked on the server: it is ours, take it over
            with _captured("aim.sdk.lock_manager"):
                self._open_run(run_hash, experiment, force_resume=True)


# -- the shared repo ----------------------------------------------------------------------


@contextlib.contextmanager
def exclusive_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive POSIX record lock on ``path`` (created if missing).

    POSIX locks (``fcntl``) are honoured across the clients of NFS (v3 through lockd, v4
    natively) and of Lustre/GPFS mounted with locking on, and the kernel or lock server drops
    them when their holder dies, so a killed job never leaves the repo locked.

    Raises:
        TimeoutError: the lock was not free within ``timeout`` seconds.
    """
    with open(path, "a") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:.0f} s") from None
                time.sleep(0.05 + 0.1 * random.random())
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def merge_run(
    run_repo: Path, run_hash: str, shared_repo: Path, timeout: float, live: bool = False
) -> None:
    """Copy a closed run from its private repo into the shared repo, replacing an earlier copy.

    Args:
        live: the run is still training; it stays marked active in the shared repo.

    Raises:
        TrackingError: Aim could not copy the run.
        TimeoutError: the shared repo stayed locked longer than ``timeout`` seconds.
        OSError: the shared repo cannot be created or locked.
    """
    from aim import Repo

    shared_repo.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(shared_repo / LOCK_FILE, timeout):
        prepare_repo(shared_repo)  # under the lock: no one else is creating it
        source = Repo(str(run_repo))
        dest = Repo(str(shared_repo))
        try:
            for attempt in range(3):  # `aim up` may hold the run's db a moment to optimise it
                with (
                    _captured("aim.sdk.repo") as errors,  # copy_runs logs what went wrong
                    contextlib.redirect_stderr(io.StringIO()),  # and draws a progress bar
                ):
                    ok, _ = source.copy_runs([run_hash], dest)
                if ok:
                    break
                gc.collect()  # in case a database of ours is still open, unreferenced
                time.sleep(0.5 * (attempt + 1))
            else:
                raise TrackingError("; ".join(errors) or f"Aim could not copy run {run_hash}")
            if live:  # copy_runs copied the end time that closing the run set
                meta = dest.request_tree("meta", run_hash, read_only=False).subtree("meta")
                meta["chunks", run_hash, "end_time"] = None
                del meta
        finally:
            for repo in (source, dest):  # a sqlite connection per merge would pile up
                repo.structured_db.session_cls.remove()
                repo.structured_db.engine.dispose()
                repo.close()


def create_repo(path: Path) -> None:
    """Create an Aim repo at ``path`` all at once: built aside, then renamed into place, so
    that an ``aim up`` started meanwhile never sees a half-made one (it would offer to
    overwrite it, and with ``--yes`` delete it), and a process killed meanwhile leaves only
    its temp (which :func:`prepare_repo` removes)."""
    from aim import Repo

    aside = path / f"{NEW_REPO_PREFIX}{socket.gethostname()}-{os.getpid()}"
    try:
        repo = Repo(str(aside), init=True)
        repo.structured_db.engine.dispose()
        repo.close()
        del repo
        os.rename(aside / ".aim", path / ".aim")
    except OSError:
        if not Repo.exists(str(path)):  # else someone (`aim up`, `aim init`) just made one
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def prepare_repo(path: Path) -> None:
    """Make sure an Aim repo is at ``path``, creating it (:func:`create_repo`) if missing.
    What a process killed while creating one left is removed first: its temps, and an
    ``.aim`` that Aim had not finished (no ``VERSION`` file, Aim's last step, and no run).
    Only for the repo's one writer (a run's private repo) or under its merge lock."""
    from aim import Repo

    for temp in path.glob(f"{NEW_REPO_PREFIX}*"):
        shutil.rmtree(temp, ignore_errors=True)
    half_made = not (path / ".aim" / "VERSION").exists() and not any(
        (path / ".aim" / "meta" / "chunks").glob("*")
    )
    if (path / ".aim").is_dir() and half_made:
        shutil.rmtree(path / ".aim")
    if not Repo.exists(str(path)):
        path.mkdir(parents=True, exist_ok=True)
        create_repo(path)


def merge_command(sweep_dir: Path, shared_repo: Path) -> str:
    """The command that merges (again) the runs under ``sweep_dir`` into ``shared_repo``."""
    words = ["python", "-m", "sce_sweeps.tracking", "merge", str(sweep_dir)]
    if Path(shared_repo) != Path(sweep_dir) / SWEEP_REPO:
        words += ["--repo", str(shared_repo)]
    return shlex.join(words)


def bound_aim_exit() -> None:
    """Make sure the process exits even when Aim cannot close its databases (a full disk, a
    repo deleted under it): Aim's exit hook waits for that without limit. This hook, run
    before it, waits :data:`EXIT_WAIT_S` at most, then exits without it, with one warning.
    Call it once an Aim object exists (Aim registers its hook with its first one)."""
    global _exit_bounded
    if not _exit_bounded:
        atexit.register(_close_aim_or_give_up)
        _exit_bounded = True


_exit_bounded = False
_aim_stuck = False  # an Aim run did not close in time (the process's one warning said so)


def _close_aim_or_give_up() -> None:
    from aim.ext.cleanup import AutoClean  # private: Aim's exit hook and what it runs

    try:
        if _aim_stuck:  # a run did not close: the rest will not either, and it was said
            return
        if not finishes_within(EXIT_WAIT_S, AutoClean._cleanup):
            log.warning(
                "tracking: Aim did not close its repo within %.0f s (a full disk?); exiting "
                "without it (the run's record says how the run ended)",
                EXIT_WAIT_S,
            )
    except Exception as e:
        log.warning("tracking: Aim failed to close its repo (%s: %s)", type(e).__name__, e)
    finally:  # also on a stop signal meanwhile: then exit at once
        atexit.unregister(AutoClean.cleanup)


def finishes_within(timeout: float, work: Callable[[], object]) -> bool:
    """Run ``work`` in a thread of its own; whether it finished within ``timeout`` seconds
    (then re-raising what it raised). A call into Aim that never returns is left to its
    thread, which does not keep the process alive."""
    done, errors = threading.Event(), []

    def call() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            errors.append(e)
        finally:
            done.set()

    threading.Thread(target=call, name="aim-close", daemon=True).start()
    finished = done.wait(timeout)
    if errors:
        raise errors[0]
    return finished


def only_run(run_repo: Path) -> str | None:
    """The hash of the one run in a run dir's private repo, if it has one."""
    chunks = run_repo / ".aim" / "meta" / "chunks"
    hashes = sorted(p.name for p in chunks.iterdir()) if chunks.is_dir() else []
    return hashes[0] if len(hashes) == 1 else None


def run_in_repo(repo: Path, run_hash: str) -> bool:
    return (repo / ".aim" / "meta" / "chunks" / run_hash).is_dir()


def run_locked(repo: Path, run_hash: str) -> bool:
    return (repo / ".aim" / "locks" / f"{run_hash}.softlock").exists()


def merge_sweep(
    sweep_dir: Path, shared_repo: Path | None = None, force: bool = False
) -> tuple[list[str], dict[str, str]]:
    """Merge the private repo of every run dir under ``sweep_dir`` into the shared repo.

    Args:
        force: also merge runs still locked by Aim, taking the lock over: for runs whose job
            was killed and will not resume. Never while such a job still trains.

    Merging again is harmless: each run replaces its earlier copy. A run dir's record
    (``result.json``) that says its run was not merged is updated once it is.

    Returns:
        The hashes of the runs merged (each once), and why each of the others was not.
    """
    from aim import Run

    shared_repo = shared_repo or sweep_dir / SWEEP_REPO
    merged: list[str] = []
    skipped: dict[str, str] = {}
    for run_dir in run_dirs_with_repo(sweep_dir):
        run_repo = run_dir / RUN_REPO
        if run_repo.resolve() == shared_repo.resolve():
            continue
        all_merged = True
        for chunk in sorted((run_repo / ".aim" / "meta" / "chunks").glob("*")):
            run_hash = chunk.name
            if run_hash in merged:
                continue
            if run_locked(run_repo, run_hash):
                if not force:
                    skipped[run_hash] = f"{run_repo}: training, or killed (then use --force)"
                    all_merged = False
                    continue
                with _captured("aim.sdk.lock_manager"):
                    Run(
                        run_hash,
                        repo=str(run_repo),
                        force_resume=True,
                        system_tracking_interval=None,
                        capture_terminal_logs=False,
                    ).close()
            try:
                merge_run(run_repo, run_hash, shared_repo, MERGE_TIMEOUT_S)
                merged.append(run_hash)
                skipped.pop(run_hash, None)
            except Exception as e:
                skipped[run_hash] = f"{run_repo}: {type(e).__name__}: {e}"
                all_merged = False
        if all_merged:
            _record_merged(run_dir)
    return merged, skipped


def run_dirs_with_repo(sweep_dir: Path) -> list[Path]:
    """The run dirs under ``sweep_dir`` that hold a private Aim repo (symlinks not followed,
    repos not entered)."""
    found = []
    for parent, dirs, _ in os.walk(sweep_dir):
        here = Path(parent)
        if (here / RUN_MARKER).is_file() and (here / RUN_REPO / ".aim").is_dir():
            found.append(here)
        dirs[:] = sorted(d for d in dirs if d not in (".aim", HYDRA_DIR, RUN_REPO))
    return found


def _record_merged(run_dir: Path) -> None:
    """Drop the run record's note that its Aim run was not merged, now that it is."""
    try:
        result = read_result(run_dir)
    except RunFileError:
        return
    if result and str(result.get("tracking", "")).startswith(NOT_MERGED):
        del result["tracking"]
        write_json_atomic(result, run_dir / RESULT)


def index_repo(repo: Path) -> None:
    """Index every run of a repo so that Aim's SDK queries see it (``aim up`` does this itself
    in the background). Do not run it while ``aim up`` serves the repo."""
    from aim import Repo
    from aim.sdk.index_manager import RepoIndexManager

    aim_repo = Repo.from_path(str(repo))
    manager = RepoIndexManager.get_index_manager(aim_repo)
    for run_hash in aim_repo.list_all_runs():
        manager.index(run_hash)


# -- building a tracker -------------------------------------------------------------------


def shared_repo_path(cfg: DictConfig, run_dir: Path) -> Path:
    """``tracker.repo`` if set (relative to the directory the app was started in), else
    ``<sweep dir>/aim`` in a multirun and ``<runs root>/aim`` for a single run (see
    :func:`runs_root`): beside the runs, wherever they are."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        base = Path.cwd()
        default = run_dir.parent / SWEEP_REPO
    else:
        hc = HydraConfig.get()
        base = Path(hc.runtime.cwd)
        if hc.mode == RunMode.MULTIRUN:
            default = base / hc.sweep.dir / SWEEP_REPO
        else:
            template = OmegaConf.to_container(hc.run, resolve=False)["dir"]
            default = runs_root(str(template), base, base / run_dir) / SWEEP_REPO
    return base / cfg.tracker.repo if cfg.tracker.repo else default


def runs_root(template: str, base: Path, run_dir: Path) -> Path:
    """Where single runs go: the fixed part of ``hydra.run.dir`` (its components before the
    first interpolation, from ``base``: ``sweeps/runs`` for ``sweeps/runs/${now:%Y-%m-%d}/
    ...``), or the run dir's parent when every component is fixed or the first one is not."""
    parts = Path(template).parts
    fixed = list(itertools.takewhile(lambda part: "${" not in part, parts))
    root = Path(os.path.abspath(base / Path(*fixed))) if fixed else None
    if root is None or len(fixed) == len(parts) or root not in run_dir.parents:
        return run_dir.parent
    return root


def run_params(cfg: DictConfig, info: dict[str, Any]) -> dict[str, Any]:
    """What the Aim run stores as parameters.

    * ``hparams``: the resolved config, nested (group by ``run.hparams.loss.coeff``);
    * ``swept``: what the command line set (the swept keys among them), flat: ``loss.coeff``
      or a group's choice such as ``model``;
    * ``job``: sweep name, job number, overrides, SLURM job id, run dir, git commit, config
      hash, seed (and whatever else the app reports about the job).
    """
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams.pop("hydra", None)
    hparams = json.loads(json.dumps(hparams, default=str))
    flat = flatten(hparams)
    overrides = override_dict(info.get("overrides") or [])
    swept = {k: flat.get(k, v) for k, v in overrides.items()}  # a group's choice stays its name
    job = json.loads(json.dumps(info, default=str))
    return {"hparams": hparams, "swept": swept, "job": job}


def run_name(info: dict[str, Any]) -> str:
    overrides = " ".join(info.get("overrides") or [])
    num = info.get("job_num")
    head = f"{info.get('sweep_name')} #{num}" if num is not None else str(info.get("sweep_name"))
    return f"{head} {overrides}".strip()[:200]


def make_tracker(
    cfg: DictConfig, run_dir: Path, run_hash: str | None, info: dict[str, Any]
) -> NullTracker:
    """The tracker chosen by ``cfg.tracker.name``; ``run_hash`` continues an earlier run.

    Never raises: if Aim cannot track this run, it says so once and returns a tracker that
    does nothing (keeping ``run_hash``, so a later resume can still continue the Aim run).
    """
    if cfg.tracker.name != "aim":
        return NullTracker()
    logging.getLogger("aim").setLevel(logging.WARNING)  # Aim logs every reporter thread at INFO
    try:
        if is_remote(cfg.tracker.repo):  # the server is the one writer: nothing to merge
            tracker, run_repo, shared_repo = RemoteAimTracker, cfg.tracker.repo, None
        else:
            tracker, run_repo = AimTracker, Path(run_dir) / RUN_REPO
            shared_repo = shared_repo_path(cfg, Path(run_dir))
        return tracker(
            run_repo,
            shared_repo,
            run_hash,
            run_params(cfg, info),
            experiment=str(info.get("sweep_name") or cfg.sweep_name),
            name=run_name(info),
            system_metrics=cfg.tracker.system_metrics,
            images=cfg.tracker.log_images,
            sync_interval_s=OmegaConf.select(cfg, "tracker.sync_interval_s", default=300.0),
        )
    except Exception as e:
        log.warning(
            "tracking: Aim cannot track this run (%s: %s); training goes on without tracking",
            type(e).__name__,
            e,
        )
        null = NullTracker()
        null.run_hash = run_hash
        return null


@contextlib.contextmanager
def _captured(logger: str) -> Iterator[list[str]]:
    """Keep the messages of an Aim logger out of the job's log; yields them as a list."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    target = logging.getLogger(logger)
    handler, propagate = Keep(), target.propagate
    target.addHandler(handler)
    target.propagate = False
    try:
        yield messages
    finally:
        target.removeHandler(handler)
        target.propagate = propagate


def main(argv: list[str] | None = None) -> None:
    """``python -m sce_sweeps.tracking merge SWEEP_DIR [--repo REPO] [--force] [--index]``."""
    parser = argparse.ArgumentParser(prog="python -m sce_sweeps.tracking")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge every run dir's Aim repo into the sweep's")
    merge.add_argument("sweep_dir", type=Path)
    merge.add_argument("--repo", type=Path, help="the shared repo (default: SWEEP_DIR/aim)")
    merge.add_argument(
        "--force", action="store_true", help="also runs a killed job left locked (none running)"
    )
    merge.add_argument(
        "--index", action="store_true", help="then index it for Aim's SDK (not while aim up runs)"
    )
    args = parser.parse_args(argv)
    repo = args.repo or args.sweep_dir / SWEEP_REPO
    merged, skipped = merge_sweep(args.sweep_dir, repo, force=args.force)
    if args.index:
        index_repo(repo)
    print(f"merged {len(merged)} run{'s' * (len(merged) != 1)} into {repo}")
    for run_hash, why in skipped.items():
        print(f"not merged: {run_hash} ({why})")
    if skipped:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
