"""The Hydra app: ``python -m sce_sweeps [overrides]``, or ``-m`` for a sweep.

The task function validates the config, trains (resuming when the run dir holds a
checkpoint), writes ``result.json`` and returns the objective, the final kNN top-1. A run that
fails (NaN loss, missing data, any error) is recorded as failed with its reason and returns
NaN, so one bad grid point never takes a sweep down.
"""

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

# The training engine and the tracker (torch, torchvision, Aim) are imported by the functions
# that train, not here: `--help`, composition errors, dry runs and the process that launches a
# sweep then start in a fraction of the time (benchmarks/startup.py).


def _conf_dir() -> str:
    """The app's configs: ``sce_sweeps/conf`` in an installed wheel, the repository's
    ``conf/`` in a checkout or an editable install."""
    package = Path(__file__).resolve().parent
    shipped = package / "conf"
    return str(shipped if (shipped / "config.yaml").is_file() else package.parent / "conf")


CONF_DIR = _conf_dir()

register_schema()
# A short random token, cached per config like ${now:}, so that two sweeps started in the
# same second get different directories while all jobs of one sweep share theirs.
if not OmegaConf.has_resolver("sce_uid"):
    OmegaConf.register_new_resolver("sce_uid", lambda: secrets.token_hex(3), use_cache=True)


def git_commit() -> str | None:
    """The commit of the code that runs, with ``-dirty`` if it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")


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
    # --- end multi-process run ---
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
    # --- end Optuna trial ---
    try:
        validate(cfg)
    except ConfigError as e:
        if not multirun:
            check_or_exit(cfg)
        return _finish(run_dir, info, None, RunState.FAILED, f"invalid config: {e}", reporter)

    previous = record.try_read_result(run_dir)
    if (
        previous
        and previous["status"] == RunState.COMPLETED
        and previous.get("config_hash") == info["config_hash"]
    ):
        if reporter is not None:
            reporter.finish(RunState.COMPLETED, previous)
        return float(previous["knn_top1"])

    tracker = None
    status, reason, metrics = RunState.COMPLETED, None, {}
    epochs = cfg.trainer.epochs
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
                return reporter.on_epoch_end(epoch, row, last=epoch >= epochs)

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
        # --- end linear evaluation stage ---
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
        print(f"sce_sweeps: run failed: {e}", file=sys.stderr)
        raise SystemExit(1) from None
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
    previous = record.try_read_result(run_dir)
    done = previous and previous["status"] == RunState.COMPLETED
    if done and previous.get("config_hash") == config_hash(cfg):
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
    """``result.json`` could not be written (e.g. the disk is full); the message is why the
    run failed. The result itself went to the job's stderr."""


def _result_not_written(run_dir: Path, result: dict[str, Any], error: OSError) -> str:
    """Keep a result that could not be written where it can be: the job's stderr (one JSON
    line); return the reason the run failed."""
    print(f"sce_sweeps: result: {json.dumps(result, default=str)}", file=sys.stderr)
    lost = f"{record.RESULT} not written in {run_dir} ({error})"
    if result["status"] == RunState.FAILED and result["reason"]:
        return f"{result['reason']}; {lost}"
    return f"{result['status']}, but {lost}"


def _so_far(run_dir: Path) -> dict[str, Any]:
    """How far a run that stopped early got: epochs trained and its last kNN top-1."""
    try:
        rows = record.read_metrics(run_dir)
    except record.RunFileError:
        rows = []
    known = [r for r in rows if "knn_top1" in r]
    return {
        "epochs": rows[-1]["epoch"] if rows else 0,
        "last_knn_top1": known[-1]["knn_top1"] if known else None,
    }


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
            told = reporter.finish(status, result)
            if told == result["optuna"]:
                result = written
            else:  # the study had its own verdict (a trial marked stale meanwhile)
                result = record.write_result(run_dir, {**result, "optuna": told})
        else:
            result = record.write_result(run_dir, result)
    except OSError as e:  # e.g. the disk is full: say what happened, keep what can be kept
        raise ResultNotWrittenError(_result_not_written(run_dir, result, e)) from None
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

    chain, cause = [], error
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    own = next((c for c in chain if isinstance(c, ConfigError)), None)
    if own is not None:  # ours, maybe wrapped by Hydra (e.g. a sweeper's settings)
        return str(own)
    if not isinstance(
        error, (ConfigCompositionException, OverrideParseException, OmegaConfBaseException)
    ):
        return None
    if isinstance(error, OverrideParseException):
        return f"{error.override}: {str(error).strip().splitlines()[0]}"
    if isinstance(error, MissingConfigException) and error.options:
        head = str(error).strip().splitlines()[0]
        return f"{head}; available: {', '.join(error.options)}"
    lines = [str(error).strip().splitlines()[0].rstrip(".")] if str(error).strip() else []
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and str(cause).strip():
        lines.append(str(cause).strip().splitlines()[0])
    return ": ".join(lines) or type(error).__name__


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
