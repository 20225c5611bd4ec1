"""The Hydra app (``python -m sce_sweeps [overrides]``, ``-m`` for a sweep): a run trains,
resuming from its checkpoint, and writes ``result.json``; a failed run is recorded with its
reason and returns NaN, so one bad grid point never takes a sweep down."""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sce_sweeps.config import ConfigError, config_hash, register_schema, run_config, validate
from sce_sweeps.runtime import record
from sce_sweeps.runtime.overrides import flatten
from sce_sweeps.runtime.record import RunState
from sce_sweeps.runtime.trial import TrialReporter

# The engine and the tracker (torch, torchvision, Aim) are imported where a run trains: --help,
# config errors, dry runs and a sweep's launcher start much faster (benchmarks/startup.py).


# The app's configs: sce_sweeps/conf in an installed wheel, the repository's conf/ in a
# checkout or an editable install.
_SHIPPED = Path(__file__).resolve().parent / "conf"
CONF_DIR = str(_SHIPPED if (_SHIPPED / "config.yaml").is_file() else _SHIPPED.parents[1] / "conf")

register_schema()
# A short random token, cached per config like ${now:}, so that two sweeps started in the
# same second get different directories while all jobs of one sweep share theirs.
if not OmegaConf.has_resolver("sce_uid"):
    OmegaConf.register_new_resolver("sce_uid", lambda: secrets.token_hex(3), use_cache=True)


def git_commit() -> str | None:
    """The commit of the code that runs, with ``-dirty`` if it has uncommitted changes."""
    # the full hash, never a tag's name; -dirty counts tracked files only
    command = ["git", "describe", "--always", "--dirty", "--abbrev=40", "--exclude=*"]
    try:
        done = subprocess.run(command, cwd=_SHIPPED.parent, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.decode().strip()


class ValidateConfig(Callback):
    """Fails a single run on an invalid value before Hydra creates its run dir."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_or_exit(config)


def check_or_exit(cfg: DictConfig) -> None:
    """Validate; on an invalid value print one line naming it and exit with status 2."""
    try:
        validate(cfg)
    except ConfigError as e:
        print(f"sce_sweeps: invalid config: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _job_info(cfg: DictConfig) -> dict[str, Any]:
    hc = HydraConfig.get()
    return {
        "sweep_name": cfg.sweep_name,
        "job_num": hc.job.get("num"),
        "overrides": list(hc.overrides.task),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "run_dir": hc.runtime.output_dir,
        "git_commit": git_commit(),
        "config_hash": config_hash(cfg),
        "seed": cfg.seed,
        # the resolved config, flat (``loss.coeff``), and the group choices (``model``)
        "params": {
            **flatten(run_config(cfg)),
            **{k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")},
        },
    }


def run(cfg: DictConfig) -> float:
    """Train one configuration in Hydra's output dir; return the objective (kNN top-1 %)."""
    from sce_sweeps.engine import distributed  # the engine loads torch: see the imports
    from sce_sweeps.engine.train import Stopped, train
    from sce_sweeps.runtime.tracking import make_tracker

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    # --- multi-process run (trainer.devices x num_nodes > 1): rank 0 continues below ---
    if distributed.world_size(cfg) > 1 and distributed.job_rank() != 0:
        return _train_peer(cfg, Path(HydraConfig.get().runtime.output_dir))
    info = _job_info(cfg)
    run_dir = Path(info["run_dir"])
    # --- Optuna trial (hydra/sweeper=sce_optuna): report, prune, tell ---
    reporter = TrialReporter.open(run_dir)  # None unless this run is an Optuna trial
    if reporter is not None:
        if reporter.finished:
            state = reporter.state.name
            print(f"sce_sweeps: trial {reporter.number} is already {state}", file=sys.stderr)
            return math.nan
        info["optuna"] = {"trial_number": reporter.number, "params": reporter.trial.params}
        if reporter.prunes and cfg.trainer.eval_every != 1:
            print(
                f"sce_sweeps: warning: trainer.eval_every={cfg.trainer.eval_every}: the pruner "
                "sees kNN top-1 only on those epochs (+sweep=optuna_search sets 1)",
                file=sys.stderr,
            )
    try:
        validate(cfg)
    except ConfigError as e:
        if not multirun:
            check_or_exit(cfg)
        return _finish(run_dir, info, None, RunState.FAILED, f"invalid config: {e}", reporter)

    previous = _completed(run_dir, info["config_hash"])
    if previous:
        if reporter is not None:
            reporter.finish(RunState.COMPLETED, previous)
        return float(previous["knn_top1"])

    tracker = None
    status, reason = RunState.COMPLETED, None
    try:
        state = record.load_checkpoint(run_dir / record.CHECKPOINT)
        if state is not None:
            print(
                f"sce_sweeps: resuming from epoch {state['epoch']}, step "
                f"{state['step_in_epoch']} of {run_dir}",
                file=sys.stderr,
            )
        job = {k: v for k, v in info.items() if k != "params"}  # Aim has them as hparams
        tracker = make_tracker(cfg, run_dir, state and state.get("tracker_run_hash"), job)
        on_epoch_end = None
        if reporter is not None:  # never asked to prune after the last epoch: it is done

            def on_epoch_end(epoch: int, row: dict[str, Any]) -> bool:
                return reporter.on_epoch_end(epoch, row, last=epoch >= cfg.trainer.epochs)

        def on_peer_failure(reason: str) -> None:  # another rank failed: this process ends
            if tracker is not None:
                tracker.close(RunState.FAILED.value)
            _finish(run_dir, info, _so_far(run_dir), RunState.FAILED, reason, reporter)

        metrics = train(
            cfg,
            run_dir,
            tracker=tracker,
            on_epoch_end=on_epoch_end,
            resume_state=state,
            on_peer_failure=on_peer_failure,
        )
        # --- linear evaluation stage (linear.enabled): linear_top1/top5 into the result ---
        if cfg.linear.enabled:
            from sce_sweeps.engine.linear import run_linear

            metrics.update(run_linear(cfg, run_dir, tracker))
    except Stopped as e:
        status, reason = RunState.PRUNED, str(e)
        if reporter is not None:  # pruned, or the study gave the trial a verdict meanwhile
            status, reason = RunState(reporter.stop_status), reporter.stop_reason or reason
        metrics = _so_far(run_dir)
    except Exception as e:  # one failed run must not take the sweep down
        status, reason = RunState.FAILED, f"{type(e).__name__}: {e}"
        record.write_error_log(run_dir, traceback.format_exc())
        metrics = _so_far(run_dir)
    if tracker is not None:
        try:
            tracker.close(status.value)
        except Exception as e:  # a tracker's failure never fails the run
            print(f"sce_sweeps: warning: tracking: {type(e).__name__}: {e}", file=sys.stderr)
        if tracker.problem:  # recorded in the run's result, shown by status
            info["tracking"] = tracker.problem
    distributed.teardown()  # multi-process run: leave the process group
    try:
        objective = _finish(run_dir, info, metrics, status, reason, reporter)
    except ResultNotWrittenError as e:
        if multirun:  # the launcher records the job as failed with this reason
            raise
        status, reason = RunState.FAILED, str(e)
    if status == RunState.FAILED and not multirun:
        print(f"sce_sweeps: run failed: {reason}", file=sys.stderr)
        raise SystemExit(1)
    return objective


def _train_peer(cfg: DictConfig, run_dir: Path) -> float:
    """A rank > 0 of a multi-process run: train alongside rank 0, write nothing (rank 0
    writes the checkpoint, metrics, result and tracking); NaN when there is nothing to do."""
    from sce_sweeps.engine import distributed  # the engine loads torch: see the imports
    from sce_sweeps.engine.train import Stopped, train

    try:
        validate(cfg)
    except ConfigError:
        return math.nan  # rank 0 records it
    if _completed(run_dir, config_hash(cfg)):
        return math.nan
    state = record.load_checkpoint(run_dir / record.CHECKPOINT)
    try:
        train(cfg, run_dir, resume_state=state)
    except Stopped:
        pass
    finally:
        distributed.teardown()
    return math.nan


class ResultNotWrittenError(RuntimeError):
    """``result.json`` could not be written (e.g. the disk is full); the result went to stderr."""


def _completed(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The run dir's result if it completed with this config (a rerun has nothing to do)."""
    previous = record.try_read_result(run_dir)
    done = previous and previous["status"] == RunState.COMPLETED
    return previous if done and previous.get("config_hash") == config_hash else None


def _so_far(run_dir: Path) -> dict[str, Any]:
    """How far a run that stopped early got: epochs trained and its last kNN top-1."""
    try:
        rows = record.read_metrics(run_dir)
    except record.RunFileError:
        rows = []
    known = [r["knn_top1"] for r in rows if "knn_top1" in r]
    epochs = rows[-1]["epoch"] if rows else 0
    return {"epochs": epochs, "last_knn_top1": known[-1] if known else None}


def _finish(
    run_dir: Path,
    info: dict[str, Any],
    metrics: dict[str, Any] | None,
    status: RunState,
    reason: str | None,
    reporter: TrialReporter | None = None,
) -> float:
    result = {**info, **(metrics or {}), "status": status, "reason": reason}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if reporter is not None:  # the result first, with the verdict it is about to tell: a
            # job killed before the study hears of it loses nothing (its trial is retried), and
            # one killed after it leaves a result that already carries the study's verdict
            result["optuna"] = reporter.record(status, result)
        written = record.write_result(run_dir, result)
        told = reporter.finish(status, result) if reporter is not None else None
        if told is not None and told != result["optuna"]:  # the study's verdict (a stale trial)
            written = record.write_result(run_dir, {**result, "optuna": told})
        result = written
    except OSError as e:  # e.g. the disk is full: keep the result in the job's stderr
        print(f"sce_sweeps: result: {json.dumps(result, default=str)}", file=sys.stderr)
        lost = f"{record.RESULT} not written in {run_dir} ({e})"
        why = (
            f"{reason}; {lost}" if status == RunState.FAILED and reason else f"{status}, but {lost}"
        )
        raise ResultNotWrittenError(why) from None
    if status == RunState.COMPLETED:
        top1 = float(result["knn_top1"])
        line = f"kNN top-1 {top1:.2f}%"
        if "knn_top1_init" in result:
            line += f" (random init: {result['knn_top1_init']:.2f}%)"
        if "probe_top1" in result:
            line += f", linear probe top-1 {result['probe_top1']:.2f}%"
        print(f"{line}  [{result['wall_time_s']:.0f} s, {run_dir}]")
        return top1
    return math.nan


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    return run(cfg)


def config_error_line(error: BaseException) -> str | None:
    """One line for an error of Hydra's config composition (a value of the wrong type, an
    unknown key or group option, a malformed override), or None for any other error."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    cause, depth = error, 0
    while cause is not None and depth < 8:  # ours, maybe wrapped by Hydra (a sweeper's settings)
        if isinstance(cause, ConfigError):
            return str(cause)
        cause, depth = cause.__cause__ or cause.__context__, depth + 1

    def first_line(e: BaseException) -> str:
        return (str(e).strip().splitlines() or [""])[0]

    if isinstance(error, OverrideParseException):
        return f"{error.override}: {first_line(error)}"
    if isinstance(error, MissingConfigException) and error.options:
        return f"{first_line(error)}; available: {', '.join(error.options)}"
    if not isinstance(error, (ConfigCompositionException, OmegaConfBaseException)):
        return None
    lines = [first_line(error).rstrip(".")]
    if isinstance(error.__cause__, OmegaConfBaseException):
        lines.append(first_line(error.__cause__))
    return ": ".join(filter(None, lines)) or type(error).__name__


def cli() -> None:
    """``python -m sce_sweeps``: Hydra's main, with an invalid override reported on one line
    (exit status 2). HYDRA_FULL_ERROR=1 keeps Hydra's own reports and traces."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing
    try:
        main()
    except Exception as e:
        line = config_error_line(e)
        if line is None:
            raise
        print(f"sce_sweeps: invalid config: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        del os.environ["HYDRA_FULL_ERROR"]
