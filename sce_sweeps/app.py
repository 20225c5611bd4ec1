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
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sce_sweeps.config import ConfigError, config_hash, register_schema, validate
from sce_sweeps.engine import checkpoint as ckpt
from sce_sweeps.engine.train import Stopped, train
from sce_sweeps.search import TrialReporter
from sce_sweeps.tracking import make_tracker

RESULT = "result.json"
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

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


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_result(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RESULT).read_text())
    except (OSError, ValueError):
        return None


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
    }


def run(cfg: DictConfig) -> float:
    """Train one configuration in Hydra's output dir; return the objective (kNN top-1 %)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    info = _job_info(cfg)
    run_dir = Path(info["run_dir"])
    # --- Optuna trial (hydra/sweeper=sce_optuna): report, prune, tell; see search.py ---
    reporter = TrialReporter.open(cfg, run_dir)  # None unless this run is an Optuna trial
    if reporter is not None:
        if reporter.finished:
            state = reporter.state.name
            print(f"sce_sweeps: trial {reporter.number} is already {state}", file=sys.stderr)
            return math.nan
        info["optuna"] = {"trial_number": reporter.number, "params": reporter.trial.params}
    # --- end Optuna trial ---
    try:
        validate(cfg)
    except ConfigError as e:
        if not multirun:
            check_or_exit(cfg)
        return _finish(run_dir, info, None, "failed", f"invalid config: {e}", reporter)

    previous = read_result(run_dir)
    if (
        previous
        and previous.get("status") == "completed"
        and previous.get("config_hash") == info["config_hash"]
    ):
        if reporter is not None:
            reporter.finish("completed", previous)
        return float(previous["knn_top1"])

    state = ckpt.load(run_dir / ckpt.CHECKPOINT)
    if state is not None:
        print(
            f"sce_sweeps: resuming from epoch {state['epoch']}, step {state['step_in_epoch']} "
            f"of {run_dir / ckpt.CHECKPOINT}",
            file=sys.stderr,
        )
    tracker = make_tracker(cfg, run_dir, state and state.get("tracker_run_hash"), info)
    status, reason, metrics = "completed", None, {}
    on_epoch_end = reporter.on_epoch_end if reporter is not None else None
    try:
        metrics = train(
            cfg, run_dir, tracker=tracker, on_epoch_end=on_epoch_end, resume_state=state
        )
    except Stopped as e:
        status, reason = "pruned", str(e)
        if reporter is not None:  # pruned, or the study gave the trial a verdict meanwhile
            status, reason = reporter.stop_status, reporter.stop_reason or reason
    except Exception as e:  # one failed run must not take the sweep down
        status, reason = "failed", f"{type(e).__name__}: {e}"
        (run_dir / "error.log").write_text(traceback.format_exc())
    tracker.close(status)
    objective = _finish(run_dir, info, metrics, status, reason, reporter)
    if status == "failed" and not multirun:
        print(f"sce_sweeps: run failed: {reason}", file=sys.stderr)
        raise SystemExit(1)
    return objective


def _finish(
    run_dir: Path,
    info: dict[str, Any],
    metrics: dict[str, Any] | None,
    status: str,
    reason: str | None,
    reporter: TrialReporter | None = None,
) -> float:
    result = {**info, **(metrics or {}), "status": status, "reason": reason}
    if reporter is not None:  # tells the study first: it is what the search goes by
        result["optuna"] = reporter.finish(status, result)
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, run_dir / RESULT)
    if status == "completed":
        top1 = float(result["knn_top1"])
        line = f"kNN top-1 {top1:.2f}%"
        if "knn_top1_init" in result:
            line += f" (random init: {result['knn_top1_init']:.2f}%)"
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
