"""``ledger.json``: the resources each attempt of a run held (GPUs, CPUs, its SLURM job) and
for how long, measured by the job and, once SLURM has accounted an attempt, SLURM's numbers."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sce_sweeps.runtime.record.files import HOST, RunFileError, read_json, write_json_atomic
from sce_sweeps.runtime.record.layout import LEDGER

_attempts: dict[Path, int] = {}  # run dirs whose ledger this process writes: its attempt's index
MATCH_SLACK_S = 2.0  # an attempt's own start lies this close to (or inside) SLURM's record of it


def _int(value: str | None) -> int | None:
    """``"4"`` and ``"4(x2)"`` (SLURM's per-node counts) as 4; None when absent or unreadable."""
    try:
        return int(str(value).split("(")[0]) if value not in (None, "") else None
    except ValueError:
        return None


def _process_start() -> float:
    """When this process started (Linux ``/proc``, to 10 ms), else now: an attempt counts from
    its interpreter's start (or its fork), not from the end of its imports."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


def attempt_resources(
    cpus: int | None = None, gpus: int | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """What this attempt holds: its SLURM job (``<array id>_<task id>`` for an array task), node,
    nodes, tasks, CPUs and GPUs (over all its nodes, taken to be alike), from SLURM's
    environment; outside SLURM, ``cpus`` and ``gpus`` (the launcher's) or this machine's CPUs
    and the visible GPUs (``CUDA_VISIBLE_DEVICES``)."""
    env = dict(os.environ if env is None else env)
    array_id, task_id = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array_id}_{task_id}" if array_id and task_id else env.get("SLURM_JOB_ID")
    tasks = _int(env.get("SLURM_NTASKS")) or 1
    nodes = _int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")) or 1
    per_task = _int(env.get("SLURM_CPUS_PER_TASK"))
    on_node = _int(env.get("SLURM_CPUS_ON_NODE"))  # nodes alike: this one's times the nodes
    slurm_cpus = on_node * nodes if on_node else (per_task and per_task * tasks)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    visible_gpus = len([g for g in visible.split(",") if g.strip()]) if visible else 0
    if job_id:
        gpus = (_int(env.get("SLURM_GPUS_ON_NODE")) or visible_gpus) * nodes
    elif gpus is None:
        gpus = visible_gpus
    return {
        "job_id": job_id,
        "node": env.get("SLURMD_NODENAME") or HOST,
        "pid": os.getpid(),
        "nodes": nodes,
        "tasks": tasks,
        "cpus": int(slurm_cpus or cpus or os.cpu_count() or 1),
        "gpus": int(gpus),
    }


def read_ledger(run_dir: str | Path) -> dict[str, Any]:
    """The run's ledger, ``{"attempts": [...]}`` (none when it has no ``ledger.json``).

    Raises:
        RunFileError: the file is corrupt.
    """
    path = Path(run_dir) / LEDGER
    ledger = read_json(path) or {"attempts": []}
    if not isinstance(ledger.get("attempts"), list):
        raise RunFileError(f"{path}: corrupt {LEDGER} (no list of attempts)")
    return ledger


def _warn(message: str) -> None:
    # bookkeeping: never the reason a run fails
    print(f"sce_sweeps: warning: {message}", file=sys.stderr, flush=True)


def ledger_start(run_dir: str | Path, cpus: int | None = None, gpus: int | None = None) -> None:
    """Record a new attempt of the run in its ``ledger.json`` (resources, start): a requeued or
    resumed run adds one attempt per start. :func:`ledger_update` marks it seen and ended."""
    run_dir = Path(run_dir).absolute()
    start = _int(os.environ.get("SLURM_JOB_START_TIME"))  # SLURM's own start of this attempt
    now = time.time()
    attempt = {**attempt_resources(cpus, gpus), "start": start or _process_start()}
    attempt.update(last_seen=now, end=None)
    try:
        ledger = read_ledger(run_dir)
        ledger["attempts"].append(attempt)
        write_json_atomic(ledger, run_dir / LEDGER)
    except (OSError, RunFileError) as e:
        _warn(f"not recorded in {LEDGER}: {e}")
        return
    _attempts[run_dir] = len(ledger["attempts"]) - 1


def ledger_update(run_dir: str | Path, end: bool = False) -> None:
    """Mark this process's attempt of the run as seen now (at a checkpoint), or ended: a killed
    attempt counts up to its last update. A no-op for a run this process did not start."""
    run_dir = Path(run_dir).absolute()
    index = _attempts.pop(run_dir, None) if end else _attempts.get(run_dir)
    if index is None:
        return
    try:
        ledger = read_ledger(run_dir)
        if index >= len(ledger["attempts"]):
            return
        attempt = ledger["attempts"][index]
        attempt["last_seen"] = time.time()
        if end:
            attempt["end"] = attempt["last_seen"]
        write_json_atomic(ledger, run_dir / LEDGER)
    except (OSError, RunFileError) as e:
        _warn(f"{LEDGER} not updated: {e}")


def parse_tres(tres: str) -> dict[str, float]:
    """SLURM's TRES string as numbers: ``cpu=2,mem=4G,gres/gpu=1`` -> ``{"cpu": 2.0,
    "mem": 4096.0, "gres/gpu": 1.0}`` (memory in MB)."""
    units = {"K": 2**-10, "M": 1.0, "G": 2**10, "T": 2**20}
    out: dict[str, float] = {}
    for item in filter(None, tres.split(",")):
        key, _, value = item.partition("=")
        scale = units.get(value[-1:]) if key == "mem" else None
        try:
            out[key] = float(value[:-1]) * scale if scale else float(value)
        except ValueError:
            continue
    return out


def _gpus_of(tres: dict[str, float]) -> float:
    """GPUs in a parsed TRES (``gres/gpu``; typed ``gres/gpu:a100`` only when untyped is absent)."""
    if "gres/gpu" in tres:
        return tres["gres/gpu"]
    return sum(v for k, v in tres.items() if k.startswith("gres/gpu:"))


def fill_accounting(run_dir: str | Path, rows: list[dict[str, Any]]) -> bool:
    """Put SLURM's accounting of the run's ended attempts into its ledger: ``rows`` as
    :func:`sce_sweeps.runtime.slurm.attempts` gives them (``job_id``, ``alloc_tres``,
    ``elapsed_s``, ``start``, ``state``). Each goes to the ledger's attempt of that job id that
    started within it; one without such an attempt (killed before the run recorded itself) is
    added. Returns whether the ledger changed."""
    run_dir = Path(run_dir)
    if not rows or not (run_dir / LEDGER).exists():
        return False
    ledger = read_ledger(run_dir)
    attempts = ledger["attempts"]
    changed = False
    for row in sorted(rows, key=lambda r: r["start"]):
        tres = parse_tres(row["alloc_tres"])
        sacct = {
            "alloc_tres": row["alloc_tres"],
            "cpus": tres.get("cpu", 0.0),
            "gpus": _gpus_of(tres),
            "elapsed_s": float(row["elapsed_s"]),
            "start": row["start"],
            "state": row["state"],
        }
        end = row["start"] + sacct["elapsed_s"]
        mine = [
            a
            for a in attempts
            if a.get("job_id") == row["job_id"]
            and row["start"] - MATCH_SLACK_S <= a["start"] <= end + MATCH_SLACK_S
        ]
        if mine:
            for attempt in mine[1:]:
                attempt["sacct_counted_in"] = row["start"]  # one SLURM attempt, one charge
            if mine[0].get("sacct") != sacct:
                mine[0]["sacct"], changed = sacct, True
        elif not any(a.get("sacct", {}).get("start") == row["start"] for a in attempts):
            attempts.append({"job_id": row["job_id"], "start": row["start"], "sacct": sacct})
            changed = True
    if changed:
        attempts.sort(key=lambda a: a["start"])
        write_json_atomic(ledger, run_dir / LEDGER)
    return changed


def needs_accounting(run_dir: str | Path) -> bool:
    """Whether some attempt of the run's ledger lacks SLURM's accounting."""
    try:
        attempts = read_ledger(run_dir)["attempts"]
    except RunFileError:
        return False
    return any("sacct" not in a and "sacct_counted_in" not in a for a in attempts)


@dataclass
class Usage:
    """What a run (or a sweep) spent: GPU-hours, CPU-hours, wall hours, attempts."""

    gpu_h: float = 0.0
    cpu_h: float = 0.0
    wall_h: float = 0.0
    attempts: int = 0
    accounted: int = 0  # attempts whose numbers are SLURM's accounting (sacct), not measured

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def ledger_usage(ledger: dict[str, Any], measured_only: bool = False) -> Usage:
    """The sum over the ledger's attempts of GPUs x hours and CPUs x hours: SLURM's allocation
    and elapsed time where the ledger has them (unless ``measured_only``), else the attempt's
    own resources from its start to its end (or, killed, its last update)."""
    usage = Usage()
    for attempt in ledger.get("attempts", []):
        sacct = None if measured_only else attempt.get("sacct")
        if sacct is not None:
            hours, cpus, gpus = sacct["elapsed_s"] / 3600, sacct["cpus"], sacct["gpus"]
            usage.accounted += 1
        elif "cpus" in attempt and (measured_only or "sacct_counted_in" not in attempt):
            last = attempt.get("end") or attempt.get("last_seen") or attempt["start"]
            hours = max(0.0, last - attempt["start"]) / 3600
            cpus, gpus = attempt["cpus"], attempt["gpus"]
        else:
            continue
        usage.attempts += 1
        usage.wall_h += hours
        usage.cpu_h += cpus * hours
        usage.gpu_h += gpus * hours
    return usage


def run_usage(run_dir: str | Path) -> Usage | None:
    """:func:`ledger_usage` of the run's ledger; None when it has none (or it is corrupt)."""
    try:
        ledger = read_ledger(run_dir)
    except RunFileError:
        return None
    return ledger_usage(ledger) if ledger["attempts"] else None
