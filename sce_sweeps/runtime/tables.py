"""Tables of sweeps, for any app: collect run records, group them by swept values, mean ± std."""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sce_sweeps.runtime.overrides import flatten, override_dict
from sce_sweeps.runtime.record import (
    HYDRA_DIR,
    MANIFEST,
    RUN_MARKER,
    Manifest,
    RunFileError,
    RunState,
    read_metrics,
    read_result,
    run_usage,
)


@dataclass(frozen=True)
class Axes:
    """How an app's runs make a table: the key of their column groups (else ``column_fallback``),
    the key they repeat over (averaged); neither, nor the ``fixed`` keys, is a swept key."""

    column: str
    replicate: str
    column_fallback: str | None = None
    fixed: frozenset[str] = frozenset()


UNFINISHED = (RunState.RUNNING, RunState.PENDING, RunState.NOT_SUBMITTED, RunState.INTERRUPTED)
INFO_KEYS = frozenset({"job_num", "slurm_job_id"})  # result.json keys that are not measures
SKIP_DIRS = frozenset({"analysis", "__pycache__", "aim"})  # and hidden ones (.submitit)


class AnalysisError(Exception):
    """Bad input for the analysis; the message alone tells the user what is wrong."""


@dataclass
class Sweeps:
    """Sweeps as tables (a row per run; a row per run and epoch), with their swept keys, their
    metrics, and the unreadable files, their runs (failed) and those left out (no overrides)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    swept: list[str]
    metrics: list[str]
    unreadable: list[str] = field(default_factory=list)
    unreadable_runs: int = 0
    unplaced_runs: int = 0


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``run 2`` before ``run 10``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text)]


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """All run dirs under ``sweep_dir`` (itself included), in natural order."""
    found = []
    for root, dirs, _ in os.walk(sweep_dir):
        if (Path(root) / RUN_MARKER).is_file():
            found.append(Path(root))
            dirs.clear()  # run dirs do not nest
        else:
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
    return sorted(found, key=lambda p: natural_key(p.relative_to(sweep_dir).as_posix()))


def _written_params(run_dir: Path) -> dict[str, Any]:
    """The params of a run whose ``result.json`` has none, from its ``.hydra`` files."""
    from omegaconf import OmegaConf

    params: dict[str, Any] = {}
    for name in ("config.yaml", "hydra.yaml"):
        path = run_dir / HYDRA_DIR / name
        if not path.is_file():
            continue
        try:
            cfg = OmegaConf.load(path)
        except Exception as e:
            raise AnalysisError(f"{path}: unreadable YAML ({type(e).__name__})") from None
        if not OmegaConf.is_dict(cfg):
            raise AnalysisError(f"{path}: not a config (expected a mapping)")
        if name == "hydra.yaml":
            choices = OmegaConf.select(cfg, "hydra.runtime.choices", default={}) or {}
            params.update({k: v for k, v in choices.items() if not k.startswith("hydra/")})
        else:
            try:
                params.update(flatten(OmegaConf.to_container(cfg, resolve=True)))
            except Exception:  # an interpolation we cannot resolve: keep it as written
                params.update(flatten(OmegaConf.to_container(cfg)))
    return params


def read_config(run_dir: Path, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's params (resolved config, flat, and group choices), lists as JSON text."""
    params = (result or {}).get("params")
    if not isinstance(params, dict):
        params = _written_params(run_dir)
    return {
        k: json.dumps(v) if isinstance(v, list | tuple | dict) else v for k, v in params.items()
    }


class _Unreadable:
    """The files that could not be read: refused (``strict``), or noted (their runs failed)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.lines: list[str] = []

    def read(self, problems: list[str], default: Any, what: Callable[..., Any], *args: Any) -> Any:
        """``what(*args)``, or (unless strict) ``default`` with the error noted in ``problems``."""
        try:
            return what(*args)
        except (AnalysisError, RunFileError) as e:
            if self.strict:
                raise AnalysisError(str(e)) from None
            problems.append(str(e))
            self.lines.append(str(e))
            return default


def _manifest_states(
    sweep_dir: Path, unreadable: _Unreadable
) -> tuple[Manifest | None, dict[Path, Any]]:
    """The sweep's manifest and its jobs' states by run dir (a moved one found by its name)."""
    from sce_sweeps.runtime.status import sweep_status

    manifest = unreadable.read([], None, Manifest.load, sweep_dir)
    if manifest is None:
        return None, {}
    by_dir = {}
    for status in sweep_status(manifest):
        run_dir = sweep_dir / status.run_dir
        if not run_dir.exists() and (sweep_dir / run_dir.name).exists():
            run_dir = sweep_dir / run_dir.name
        by_dir[run_dir.resolve()] = status
    return manifest, by_dir


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return json.dumps(value) if isinstance(value, list | dict) else value


def swept_keys(overrides: list[dict[str, str]], fixed: frozenset[str] = frozenset()) -> list[str]:
    """Override keys (but ``fixed``) whose values differ between runs, missing ones included."""
    order: dict[str, None] = {}
    for o in overrides:
        order.update(dict.fromkeys(o))
    return [key for key in order if key not in fixed and len({o.get(key) for o in overrides}) > 1]


def _run_record(run_dir: Path, job: Any, unreadable: _Unreadable) -> dict[str, Any]:
    """The record of a run dir or of a job not started; an unreadable file fails the run."""
    problems: list[str] = []
    marker = run_dir / RUN_MARKER

    def override_lines() -> list[str]:
        try:
            lines = yaml.safe_load(marker.read_text()) or []
        except (OSError, yaml.YAMLError) as e:
            raise AnalysisError(f"{marker}: unreadable YAML ({type(e).__name__})") from None
        if not isinstance(lines, list):
            raise AnalysisError(f"{marker}: not a list of overrides")
        return lines

    started = marker.is_file()
    lines = unreadable.read(problems, None, override_lines) if started else None
    result = unreadable.read(problems, None, read_result, run_dir)
    config = unreadable.read(problems, {}, read_config, run_dir, result) if started else {}
    curve = unreadable.read(problems, [], read_metrics, run_dir)
    if problems:
        status = (str(RunState.FAILED), "unreadable: " + "; ".join(problems))
    elif job is not None:
        status = (str(job.state), job.reason)
    elif result is not None:
        status = (result["status"], result.get("reason"))
    else:
        status = (str(RunState.INTERRUPTED), "no result.json (and no manifest.json to say more)")
    if lines is None and job is not None:
        lines = job.overrides
    return {
        "run_dir": run_dir,
        "overrides": None if lines is None else override_dict(lines),
        "config": config,
        "result": result,
        "status": status,
        "curve": curve,
        "problems": problems,
    }


def _sweep_records(
    sweep_dir: Path, index: int, unreadable: _Unreadable, fixed: frozenset[str]
) -> tuple[list[dict], list[str]]:
    """One record per run of one sweep (config, overrides, result, curve), and its swept keys."""
    if not sweep_dir.is_dir():
        raise AnalysisError(f"{sweep_dir}: no such directory")
    manifest, jobs = _manifest_states(sweep_dir, unreadable)
    run_dirs = find_run_dirs(sweep_dir)
    if not run_dirs and not manifest:
        if not any(sweep_dir.iterdir()):
            raise AnalysisError(f"{sweep_dir}: empty directory, no runs to analyse")
        raise AnalysisError(
            f"{sweep_dir}: not a sweep dir (no run dirs with .hydra/overrides.yaml, no {MANIFEST})"
        )
    records = [_run_record(d, jobs.pop(d.resolve(), None), unreadable) for d in run_dirs]
    for run_dir, job in sorted(jobs.items(), key=lambda kv: natural_key(kv[0].as_posix())):
        records.append(_run_record(run_dir, job, unreadable))
    if not records:
        raise AnalysisError(f"{sweep_dir}: the manifest lists no jobs and there are no run dirs")
    for r in records:
        r["sweep_dir"] = sweep_dir
        r["run"] = os.path.relpath(r["run_dir"], sweep_dir.resolve()).replace(os.sep, "/")
        r["run_id"] = f"{index}:{r['run']}"
    placed = [r["overrides"] for r in records if r["overrides"] is not None]
    return records, swept_keys(placed, fixed)


def _value(record: dict[str, Any], key: str) -> Any:
    """A key's value for a run: config or group choice, else override, else sweep default."""
    if key in record["config"]:
        return record["config"][key]
    if key in record["overrides"]:
        return _scalar(record["overrides"][key])
    return record.get("defaults", {}).get(key)


def _fill_defaults(records: list[dict[str, Any]], keys: list[str]) -> None:
    """Give jobs without a config the value the sweep's runs agree on where not overridden."""
    for key in keys:
        for sweep_dir in dict.fromkeys(r["sweep_dir"] for r in records):
            same = [r for r in records if r["sweep_dir"] == sweep_dir]
            seen = {
                json.dumps(r["config"][key], sort_keys=True)
                for r in same
                if key in r["config"] and key not in r["overrides"]
            }
            if len(seen) == 1:
                default = json.loads(seen.pop())
                for r in same:
                    if not r["config"]:
                        r.setdefault("defaults", {})[key] = default


def collect(sweep_dirs: list[Path | str], axes: Axes, strict: bool = False) -> Sweeps:
    """Read sweep or run dirs into tidy tables; an unreadable file fails its run (or ``strict``)."""
    dirs = list(dict.fromkeys(Path(d).resolve() for d in sweep_dirs))
    if not dirs:
        raise AnalysisError("no sweep dirs given")
    unreadable = _Unreadable(strict)
    records: list[dict[str, Any]] = []
    swept: dict[str, None] = {}
    for index, sweep_dir in enumerate(dirs):
        sweep_records, keys = _sweep_records(sweep_dir, index, unreadable, axes.fixed)
        records += sweep_records
        swept.update(dict.fromkeys(keys))
    damaged = sum(1 for r in records if r["problems"])
    placed = [r for r in records if r["overrides"] is not None]
    if not placed:
        raise AnalysisError(
            f"{dirs[0]}: no run could be read ({len(records)} with unreadable overrides)"
        )
    keys = list(swept)
    _fill_defaults(placed, [*keys, axes.column, axes.replicate])
    for r in placed:  # the column group; a job not started yet takes its sweep's most common
        r["column"] = _value(r, axes.column) or r["config"].get(axes.column_fallback)
    known = Counter(r["column"] for r in placed if r["column"])
    for r in placed:
        r["column"] = r["column"] or (known.most_common(1)[0][0] if known else "unknown")
    metrics: dict[str, None] = {}
    for r in placed:
        for k, v in sorted((r["result"] or {}).items()):
            number = isinstance(v, int | float) and not isinstance(v, bool)
            if number and k not in INFO_KEYS and k != axes.replicate:
                metrics[k] = None
    runs = _runs_frame(placed, keys, list(metrics), axes)
    curves = _curves_frame(placed, keys, axes)
    unplaced = len(records) - len(placed)
    return Sweeps(runs, curves, keys, list(metrics), unreadable.lines, damaged, unplaced)


def _identity(r: dict[str, Any], keys: list[str], axes: Axes) -> dict[str, Any]:
    replicate = _value(r, axes.replicate)
    if replicate is None:
        replicate = (r["result"] or {}).get(axes.replicate)
    return {
        "sweep_dir": str(r["sweep_dir"]),
        "run": r["run"],
        "run_id": r["run_id"],
        axes.column: r["column"],
        "status": r["status"][0],
        axes.replicate: replicate,
        **{k: _value(r, k) for k in keys},
    }


def _runs_frame(
    records: list[dict], keys: list[str], metrics: list[str], axes: Axes
) -> pd.DataFrame:
    rows = []
    for r in records:
        result = r["result"] or {}
        row = {**_identity(r, keys, axes), "reason": r["status"][1]}
        row.update({m: result.get(m, math.nan) for m in metrics})
        row["epochs_logged"] = len(r["curve"])
        usage = run_usage(r["run_dir"])  # all its attempts (ledger.json); NaN without one
        row["gpu_h"] = usage.gpu_h if usage else math.nan
        row["cpu_h"] = usage.cpu_h if usage else math.nan
        row["config_hash"] = result.get("config_hash")
        row["overrides"] = " ".join(f"{k}={v}" for k, v in r["overrides"].items())
        row.update({k: v for k, v in sorted(r["config"].items()) if k not in row})
        rows.append(row)
    return pd.DataFrame(rows)


def _curves_frame(records: list[dict], keys: list[str], axes: Axes) -> pd.DataFrame:
    rows = [{**_identity(r, keys, axes), **line} for r in records for line in r["curve"]]
    columns = [*_identity(records[0], keys, axes), "epoch"]
    for row in rows:
        columns += [c for c in row if c not in columns]
    return pd.DataFrame(rows, columns=columns)


def none_if_nan(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def combo_of(row: dict[str, Any], keys: list[str]) -> tuple:
    """A run's (or table row's) swept values, missing as None."""
    return tuple(none_if_nan(row[k]) for k in keys)


def sort_key(value: Any) -> tuple[int, Any]:
    """Orders swept values: numbers numerically, then text, then missing."""
    if value is None:
        return (2, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def format_value(value: Any) -> str:
    """A swept value as a row label: ``0.5``, ``1e+12``, ``multi_crop``."""
    if none_if_nan(value) is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def group_runs(
    runs: pd.DataFrame, keys: list[str], column: str
) -> tuple[dict[tuple[Any, tuple], list[dict[str, Any]]], list[tuple]]:
    """The runs by (column group, swept values), and the swept values' combinations, sorted."""
    groups: dict[tuple[Any, tuple], list[dict[str, Any]]] = {}
    for run in runs.to_dict("records"):
        groups.setdefault((run[column], combo_of(run, keys)), []).append(run)
    combos = sorted({c for _, c in groups}, key=lambda c: [sort_key(v) for v in c])
    return groups, combos


def stats(values: list[Any]) -> dict[str, Any]:
    """Mean, sample std and count of the finite numbers among ``values``."""
    values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    mean = statistics.fmean(values) if values else math.nan
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return {"mean": mean, "std": std, "n": len(values)}
