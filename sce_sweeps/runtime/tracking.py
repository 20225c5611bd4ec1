"""Experiment tracking: one Aim run per training run, gathered into one repo per sweep.

Many jobs writing one Aim repo corrupt it (aim issues 2109, 2279, 2869): each run tracks into
its run dir's own repo, merged into the sweep's under a lock (docs/tracking.md).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import io
import itertools
import json
import logging
import os
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

from sce_sweeps.runtime.adapters import aim_repo
from sce_sweeps.runtime.overrides import flatten, override_dict
from sce_sweeps.runtime.record import RunState, locked, try_read_result, write_result

log = logging.getLogger(__name__)

REPO_DIR = "aim"  # a run's private repo in its run dir, the shared one in the sweep dir
LOCK_FILE = "merge.lock"
NEW_REPO_PREFIX = ".aim-new-"  # a repo being created, beside where it goes (create_repo)
SYSTEM_INTERVAL_S = 10  # seconds between two samples of Aim's system metrics
MERGE_TIMEOUT_S = 600.0  # longest wait for the shared repo's lock when a run ends
LIVE_MERGE_TIMEOUT_S = 30.0  # ... while it trains (the next live merge retries)
MERGE_TIME_SHARE = 20  # live merges are spaced by at least 20 times what the last one took
CLOSE_WAIT_S = 20.0  # longest wait for Aim to close a run (on a full disk it never does)
EXIT_WAIT_S = 10.0  # ... and, as the process exits, for Aim to close whatever is left open
NOT_MERGED = "not merged into"  # how a run's record (result.json "tracking") says so


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
    """Tracks a run into ``run_repo``, merged into ``shared_repo`` (if any) live and at its end."""

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
            x = x.permute(0, 2, 3, 1).numpy()  # B x H x W x C
            pictures = [Image(img, caption=str(i)) for i, img in enumerate(x)]
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

    def _open_run(self, run_hash: str | None, experiment: str | None) -> None:
        """Open (or create) the run, taking over a lock that a killed attempt left on it."""
        from aim import Run

        with _captured("aim.sdk.lock_manager"):
            self._run = Run(
                run_hash,
                repo=str(self.run_repo),
                experiment=experiment,
                force_resume=run_hash is not None,
                system_tracking_interval=SYSTEM_INTERVAL_S if self.system_metrics else None,
                log_system_params=False,  # it would copy the environment, secrets included
                capture_terminal_logs=False,
            )
        self.run_hash = self._run.hash
        bound_aim_exit()

    def _open(self, run_hash: str | None, experiment: str | None = None) -> None:
        """Open (or create) the run in the private repo (one that cannot be opened is set aside)."""
        prepare_repo(self.run_repo)  # its one writer: this run
        try:
            if run_hash is None:  # an attempt killed before its first checkpoint left it here
                run_hash = only_run(self.run_repo)
            if run_hash is not None and run_hash not in aim_repo.run_hashes(self.run_repo):
                self._warn(
                    "lost",
                    f"Aim run {run_hash} is not in {self.run_repo}; tracking into a new Aim run",
                )
                run_hash = None
            self._open_run(run_hash, experiment)
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
            self._open_run(None, experiment)

    def _close_run(self) -> None:
        """Close the Aim run; TimeoutError after :data:`CLOSE_WAIT_S` (a full disk)."""
        global _aim_stuck
        if self._run is None:
            return
        owned = [self._run]  # the one reference: it goes in the closing thread
        file_lock = aim_repo.run_file_lock(self._run)  # released by this thread, below
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
        """Copy the run into the shared repo, closed meanwhile (Aim copies closed runs only)."""
        if self.run_hash is None:
            return
        start = time.monotonic()
        reopen = self._run is not None and not final
        try:
            self._close_run()
        except Exception as e:
            self._disable("close the Aim run", e)  # the one warning: tracking is off now
            if final and self.shared_repo is not None:
                self.problem = (
                    f"{NOT_MERGED} {self.shared_repo}: {self.problem}; what Aim run "
                    f"{self.run_hash} holds is in {self.run_repo}: merge it with "
                    f"`{merge_command(self.run_repo.parent.parent, self.shared_repo)} --force`"
                )
            return
        if self.shared_repo is not None:  # None: a server's run, nothing to merge
            command = merge_command(self.run_repo.parent.parent, self.shared_repo)
            timeout = MERGE_TIMEOUT_S if final else LIVE_MERGE_TIMEOUT_S
            try:
                merge_run(self.run_repo, self.run_hash, self.shared_repo, timeout, live=not final)
            except Exception as e:
                message = (
                    f"{NOT_MERGED} {self.shared_repo} ({type(e).__name__}: {e}); Aim run "
                    f"{self.run_hash} is complete in {self.run_repo}: merge it with `{command}`"
                )
                self._warn("merge", message)
                if final:
                    self.problem = message
        now = time.monotonic()
        self._next_merge = now + max(self.sync_interval_s or 0.0, MERGE_TIME_SHARE * (now - start))
        if reopen:
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


class RemoteAimTracker(AimTracker):
    """An :class:`AimTracker` whose ``run_repo`` is an Aim server (``aim://host:port``)."""

    def _open(self, run_hash: str | None, experiment: str | None = None) -> None:
        self._open_run(run_hash, experiment)


def merge_run(
    run_repo: Path, run_hash: str, shared_repo: Path, timeout: float, live: bool = False
) -> None:
    """Copy a closed run into the shared repo, replacing its copy (``live``: it stays active)."""
    from aim import Repo

    shared_repo.mkdir(parents=True, exist_ok=True)
    with locked(shared_repo / LOCK_FILE, timeout):
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
                raise RuntimeError("; ".join(errors) or f"Aim could not copy run {run_hash}")
            if live:  # copy_runs copied the end time that closing the run set
                aim_repo.mark_live(dest, run_hash)
        finally:
            for repo in (source, dest):  # a sqlite connection per merge would pile up
                aim_repo.close_repo(repo)


def create_repo(path: Path) -> None:
    """Create an Aim repo at ``path`` aside, then rename it: ``aim up`` never sees it half-made."""
    from aim import Repo

    aside = path / f"{NEW_REPO_PREFIX}{socket.gethostname()}-{os.getpid()}"
    try:
        aim_repo.close_repo(Repo(str(aside), init=True))
        os.rename(aside / ".aim", path / ".aim")
    except OSError:
        if not Repo.exists(str(path)):  # else someone (`aim up`, `aim init`) just made one
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def prepare_repo(path: Path) -> None:
    """Make sure an Aim repo is at ``path`` (for its one writer, or under its merge lock)."""
    from aim import Repo

    for temp in path.glob(f"{NEW_REPO_PREFIX}*"):
        shutil.rmtree(temp, ignore_errors=True)
    if (path / ".aim").is_dir() and aim_repo.half_made(path):
        shutil.rmtree(path / ".aim")
    if not Repo.exists(str(path)):
        path.mkdir(parents=True, exist_ok=True)
        create_repo(path)


def merge_command(sweep_dir: Path, shared_repo: Path) -> str:
    """The command that merges (again) the runs under ``sweep_dir`` into ``shared_repo``."""
    words = ["python", "-m", "sce_sweeps.cli", "merge", str(sweep_dir)]
    if Path(shared_repo) != Path(sweep_dir) / REPO_DIR:
        words += ["--repo", str(shared_repo)]
    return shlex.join(words)


def bound_aim_exit() -> None:
    """Give Aim's exit hook (a full disk hangs it) :data:`EXIT_WAIT_S` at most, once Aim has
    registered it (with its first object): atexit runs this one first, the last registered."""
    global _exit_bounded
    if not _exit_bounded:
        atexit.register(_close_aim_or_give_up)
        _exit_bounded = True


_exit_bounded = False
_aim_stuck = False  # an Aim run did not close in time (the process's one warning said so)


def _close_aim_or_give_up() -> None:
    try:
        hook = aim_repo.take_exit_hook()  # None: Aim runs it at exit, without a limit
        # where a run did not close (one warning said so), the rest will not either: no wait
        if hook is not None and not _aim_stuck and not finishes_within(EXIT_WAIT_S, hook):
            log.warning(
                "tracking: Aim did not close its repo within %.0f s (a full disk?); exiting "
                "without it (the run's record says how the run ended)",
                EXIT_WAIT_S,
            )
    except Exception as e:
        log.warning("tracking: Aim failed to close its repo (%s: %s)", type(e).__name__, e)


def close_at_exit() -> None:
    """Close now what Aim left open, for a process that leaves through ``os._exit``."""
    if _exit_bounded:
        atexit.unregister(_close_aim_or_give_up)
        _close_aim_or_give_up()


def finishes_within(timeout: float, work: Callable[[], object]) -> bool:
    """Whether ``work``, run in a daemon thread (left behind if it hangs), finished in time."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            work()
        except BaseException as e:  # noqa: BLE001 (re-raised in the caller's thread)
            errors.append(e)

    thread = threading.Thread(target=call, name="aim-close", daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    return not thread.is_alive()


def only_run(run_repo: Path) -> str | None:
    """The hash of the one run in a run dir's private repo, if it has one."""
    hashes = aim_repo.run_hashes(run_repo)
    return hashes[0] if len(hashes) == 1 else None


def merge_sweep(sweep_dir: Path, shared: Path, force: bool) -> tuple[list[str], dict[str, str]]:
    """Merge (again) every run dir's own repo: the runs merged, and why each other one was not."""
    from aim import Run

    from sce_sweeps.runtime.tables import find_run_dirs

    merged: list[str] = []
    skipped: dict[str, str] = {}
    for run_dir in find_run_dirs(sweep_dir):
        run_repo = run_dir / REPO_DIR
        if not (run_repo / ".aim").is_dir() or run_repo.resolve() == shared.resolve():
            continue
        all_merged = True
        for run_hash in aim_repo.run_hashes(run_repo):
            if run_hash in merged:
                continue
            if aim_repo.run_locked(run_repo, run_hash):
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
                merge_run(run_repo, run_hash, shared, MERGE_TIMEOUT_S)
                merged.append(run_hash)
                skipped.pop(run_hash, None)
            except Exception as e:
                skipped[run_hash] = f"{run_repo}: {type(e).__name__}: {e}"
                all_merged = False
        result = try_read_result(run_dir) if all_merged else None
        if result and str(result.get("tracking", "")).startswith(NOT_MERGED):
            del result["tracking"]  # the record's note that the run was not merged
            write_result(run_dir, result, stamp=False)
    return merged, skipped


def shared_repo_path(cfg: DictConfig, run_dir: Path) -> Path:
    """``tracker.repo``, else ``aim`` in the sweep dir or, for a single run, the runs root."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return Path.cwd() / cfg.tracker.repo if cfg.tracker.repo else run_dir.parent / REPO_DIR
    hc = HydraConfig.get()
    base = Path(hc.runtime.cwd)  # where the app was started
    if cfg.tracker.repo:
        return base / cfg.tracker.repo
    if hc.mode == RunMode.MULTIRUN:
        return base / hc.sweep.dir / REPO_DIR
    template = OmegaConf.to_container(hc.run, resolve=False)["dir"]
    return runs_root(str(template), base, base / run_dir) / REPO_DIR


def runs_root(template: str, base: Path, run_dir: Path) -> Path:
    """Where single runs go: ``hydra.run.dir`` up to its first interpolation, else their parent."""
    parts = Path(template).parts
    fixed = list(itertools.takewhile(lambda part: "${" not in part, parts))
    root = Path(os.path.abspath(base / Path(*fixed))) if fixed else None
    if root is None or len(fixed) == len(parts) or root not in run_dir.parents:
        return run_dir.parent
    return root


def run_params(cfg: DictConfig, info: dict[str, Any]) -> dict[str, Any]:
    """The Aim run's parameters: ``hparams`` (the resolved config), ``swept`` and ``job``."""
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
    """The tracker chosen by ``cfg.tracker.name``, continuing ``run_hash``; never raises."""
    if cfg.tracker.name != "aim":
        return NullTracker()
    logging.getLogger("aim").setLevel(logging.WARNING)  # Aim logs every reporter thread at INFO
    try:
        if str(cfg.tracker.repo).startswith("aim://"):  # a server: nothing to merge
            tracker, run_repo, shared_repo = RemoteAimTracker, cfg.tracker.repo, None
        else:
            tracker, run_repo = AimTracker, Path(run_dir) / REPO_DIR
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
            f"tracking: Aim cannot track this run ({type(e).__name__}: {e}); training goes on "
            "without tracking"
        )
        null = NullTracker()
        null.run_hash = run_hash
        return null


@contextlib.contextmanager
def _captured(logger: str) -> Iterator[list[str]]:
    """Keep an Aim logger's messages out of the job's log; yields them as a list."""
    messages: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        messages.append(record.getMessage())
        return False

    target = logging.getLogger(logger)
    target.addFilter(keep)
    try:
        yield messages
    finally:
        target.removeFilter(keep)


def main(argv: list[str] | None = None) -> None:
    """``python -m sce_sweeps.cli merge SWEEP_DIR [--repo REPO] [--force] [--index]``."""
    merge = argparse.ArgumentParser(
        prog="python -m sce_sweeps.cli merge",
        description="merge every run dir's Aim repo into the sweep's",
    )
    merge.add_argument("sweep_dir", type=Path)
    merge.add_argument("--repo", type=Path, help="the shared repo (default: SWEEP_DIR/aim)")
    merge.add_argument("--force", action="store_true", help="take over killed jobs' locks")
    merge.add_argument("--index", action="store_true", help="then index it (not while aim up runs)")
    args = merge.parse_args(argv)
    repo = args.repo or args.sweep_dir / REPO_DIR
    merged, skipped = merge_sweep(args.sweep_dir, repo, force=args.force)
    if args.index:
        aim_repo.index_repo(repo)
    print(f"merged {len(merged)} run{'s' * (len(merged) != 1)} into {repo}")
    for run_hash, why in skipped.items():
        print(f"not merged: {run_hash} ({why})")
    if skipped:
        raise SystemExit(1)
