"""Where each job of a sweep stands (docs/sweeps.md, "Status"), for ``python -m sce_sweeps.cli
status <sweep dir>``, the analysis tables and the Optuna trial table alike."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sce_sweeps.runtime.procs import alive
from sce_sweeps.runtime.record import (
    FINAL,
    FINISHED,
    HOST,
    LIVE,
    MANIFEST,
    SLURM_LIVE,
    STALLED,
    STATE_ORDER,
    Job,
    Manifest,
    RunFileError,
    RunState,
    Usage,
    fill_accounting,
    has_checkpoint,
    needs_accounting,
    read_result,
    run_usage,
    stall,
)
from sce_sweeps.runtime.slurm import attempts, job_states


@dataclass
class JobStatus:
    """A job's state, why, and where to look."""

    num: int
    state: RunState
    reason: str | None
    overrides: list[str]
    run_dir: str
    job_id: str | None = None
    value: float | None = None  # a completed job's primary metric (the manifest's metric)
    log: str | None = None
    stalled_s: float | None = None  # a running job without progress: for how long
    tracking: str | None = None  # what went wrong with its tracking (e.g. Aim merge failed)
    gpu_h: float | None = None  # spent over all its attempts (ledger.json)
    cpu_h: float | None = None


def _own_result(manifest: Manifest, job: Job) -> dict[str, Any] | RunFileError | None:
    try:
        result = read_result(manifest.run_dir(job))
    except RunFileError as e:
        return e
    return result if result and result.get("config_hash") == job.config_hash else None


def _settled(job: Job, result: dict[str, Any] | RunFileError | None) -> bool:
    """Whether the job's state is known without asking SLURM (a finished run, or seen ending)."""
    if isinstance(result, RunFileError) or (result and result["status"] in FINISHED):
        return True
    return job.finished_at is not None and job.state in FINAL


def job_status(
    manifest: Manifest,
    job: Job,
    slurm: dict[str, tuple[str, str]],
    launcher_alive: bool,
    result: dict[str, Any] | RunFileError | None | bool = True,
) -> JobStatus:
    """The state of one job; ``result``: its :func:`_own_result`, read here if not given."""
    run_dir = manifest.run_dir(job)
    latest = job.job_ids[-1] if job.job_ids else None
    status = JobStatus(
        job.num, RunState.INTERRUPTED, None, job.overrides, job.run_dir, latest, log=job.log
    )
    if result is True:
        result = _own_result(manifest, job)
    if isinstance(result, RunFileError):
        status.state, status.reason = RunState.FAILED, str(result)
        return status
    live, where = None, f"process {latest}"
    if manifest.launcher == "slurm" and latest in slurm:
        slurm_state, slurm_reason = slurm[latest]
        live = SLURM_LIVE.get(slurm_state)
        pending = live == RunState.PENDING
        where = f"SLURM {slurm_state} ({slurm_reason})" if pending else f"SLURM job {latest}"
    elif manifest.launcher == "local" and latest and job.state in LIVE and manifest.host == HOST:
        live = RunState.RUNNING if alive(int(latest), manifest.sweep_dir.name) else None
    # A completed or pruned result wins over SLURM's accounting, a moment behind; so does a
    # failed one the launcher saw end. (A failed run's job that SLURM runs again, requeued
    # before the launcher saw it end, is running: it resumes.)
    if live and not (result and _settled(job, result)):
        status.state, status.reason = live, where
        found = stall(run_dir, manifest.stall_after) if live == RunState.RUNNING else None
        if found is not None:
            status.reason, status.stalled_s = f"{found} ({where})", round(found.age_s, 1)
    elif result:
        status.state, status.reason = RunState(result["status"]), result.get("reason")
        status.tracking = result.get("tracking")
        if status.state == RunState.COMPLETED and manifest.metric:
            status.value = result.get(manifest.metric)
    elif job.state in FINAL and job.finished_at and not has_checkpoint(run_dir):
        # an app that writes no result.json: the launcher saw it end. (A run dir with a
        # checkpoint belongs to an app that writes one: without it, the run is interrupted.)
        status.state, status.reason = RunState(job.state), job.reason
    elif job.finished_at and job.state == RunState.FAILED and str(job.reason).startswith(STALLED):
        status.state, status.reason = RunState.FAILED, job.reason  # the launcher ended it
    elif manifest.launcher == "slurm" and latest in slurm:
        status.state = RunState.FAILED
        status.reason = f"SLURM {slurm[latest][1]} without a result.json"
    elif job.state == RunState.NOT_SUBMITTED:
        status.state, status.reason = RunState.NOT_SUBMITTED, job.reason
    elif job.state == RunState.PENDING and not latest and launcher_alive:
        status.state, status.reason = RunState.PENDING, "waiting for the launcher to start it"
    elif job.reason:
        status.reason = job.reason
    elif has_checkpoint(run_dir):
        status.reason = "no result; stopped with a checkpoint (a resume continues from it)"
    else:
        status.reason = "no result; stopped before its first checkpoint"
    return status


def controller_state(manifest: Manifest) -> tuple[str, str] | None:
    """(SLURM state, reason) of a detached sweep's controller job; None when not detached."""
    if not manifest.controller:
        return None
    found = job_states([manifest.controller]).get(manifest.controller)
    return found or ("UNKNOWN", "SLURM no longer knows it")


def sweep_status(manifest: Manifest, launcher_alive: bool | None = None) -> list[JobStatus]:
    """The state of every job; ``launcher_alive`` (default: whether its process, or a detached
    sweep's controller job, lives): whether the launcher may still start the jobs it has not
    submitted."""
    results = [_own_result(manifest, job) for job in manifest.jobs]
    ask = [
        j.job_ids[-1] for j, r in zip(manifest.jobs, results) if j.job_ids and not _settled(j, r)
    ]  # a finished sweep asks SLURM nothing
    slurm = job_states(ask) if manifest.launcher == "slurm" else {}
    if launcher_alive is None and manifest.controller:
        launcher_alive = (controller_state(manifest) or ("",))[0] in SLURM_LIVE
    elif launcher_alive is None:
        launcher_alive = manifest.host == HOST and alive(manifest.pid, "python")
    statuses = [
        job_status(manifest, job, slurm, launcher_alive, result)
        for job, result in zip(manifest.jobs, results)
    ]
    fill_ledgers(manifest)
    for status in statuses:
        usage = run_usage(manifest.sweep_dir / status.run_dir)
        if usage is not None:
            status.gpu_h, status.cpu_h = usage.gpu_h, usage.cpu_h
    return statuses


def fill_ledgers(manifest: Manifest) -> None:
    """Put SLURM's accounting (allocated TRES, elapsed) of each ended attempt into the ledgers
    of the sweep's runs that lack it, with one ``sacct`` call (a local sweep has none to put)."""
    if manifest.launcher != "slurm":
        return
    wanted = {
        job_id: manifest.run_dir(job)
        for job in manifest.jobs
        if job.job_ids and needs_accounting(manifest.run_dir(job))
        for job_id in job.job_ids
    }
    for job_id, rows in attempts(list(wanted)).items():
        try:
            fill_accounting(wanted[job_id], rows)
        except (OSError, RunFileError):  # a read-only sweep dir: its own numbers stand
            continue


def sweep_usage(statuses: list[JobStatus]) -> Usage:
    """GPU-hours and CPU-hours the sweep's runs spent (from their ledgers)."""
    return Usage(
        gpu_h=sum(s.gpu_h or 0.0 for s in statuses), cpu_h=sum(s.cpu_h or 0.0 for s in statuses)
    )


def jobs_(n: int, noun: str = "job") -> str:
    """``1 job``, ``2 jobs``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def exit_code(statuses: list[JobStatus]) -> int:
    """0 all completed or pruned, 1 some failed, not submitted or interrupted, 3 some live."""
    states = {s.state for s in statuses}
    if states - {*FINISHED, *LIVE}:
        return 1
    return 3 if states & set(LIVE) else 0


def varying_overrides(overrides: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The overrides every job shares (the sweep's fixed settings), and each job's others."""
    common = set.intersection(*map(set, overrides)) if overrides else set()
    shared = [x for x in overrides[0] if x in common] if overrides else []
    return shared, [[x for x in o if x not in common] for o in overrides]


def format_table(
    manifest: Manifest, statuses: list[JobStatus], controller: tuple[str, str] | None = None
) -> str:
    """A human-readable table: one line per job, then a summary line; ``controller``: the
    :func:`controller_state` of a detached sweep."""
    common, varying = varying_overrides([s.overrides for s in statuses])
    lines = [
        f"sweep {manifest.sweep_name} ({manifest.launcher}): {manifest.sweep_dir}",
        f"command: {manifest.command}",
    ]
    if controller is not None:
        state, reason = controller
        reason = reason.removeprefix(f"{state}, ")  # sacct's "COMPLETED, exit 0:0"
        why = f" ({reason})" if reason and reason != "None" else ""  # squeue's "no reason"
        lines.append(f"controller: SLURM job {manifest.controller} {state}{why}")
    if common:
        lines.append(f"every job: {' '.join(common)}")
    width = max([len(" ".join(v)) for v in varying] + [9])
    lines.append(f"{'job':>4}  {'state':<13}  {'overrides':<{width}}  {'job id':<10}  details")
    for s, v in zip(statuses, varying):
        detail = s.reason or ""
        if s.state == RunState.COMPLETED and s.value is not None:
            detail = f"{manifest.metric} {s.value:.4g}"
        if s.state not in (*FINISHED, *LIVE) and s.log:
            detail += f"  [log: {s.log}]"
        if s.tracking:
            detail += f"  [tracking: {s.tracking}]"
        if s.cpu_h is not None:
            detail += f"  [{s.gpu_h:.3f} GPU-h, {s.cpu_h:.3f} CPU-h]"
        lines.append(
            f"{s.num:>4}  {s.state:<13}  {' '.join(v):<{width}}  {s.job_id or '-':<10}  {detail}"
        )
    counts = Counter(s.state for s in statuses)
    stalled = sum(s.stalled_s is not None for s in statuses)
    flags = {RunState.RUNNING: f" ({stalled} stalled)" if stalled else ""}
    parts = [f"{counts[st]} {st}{flags.get(st, '')}" for st in STATE_ORDER if counts[st]]
    lines.append(f"{jobs_(len(statuses))}: {', '.join(parts) or 'none launched yet'}")
    spent = sweep_usage(statuses)
    lines.append(f"spent: {spent.gpu_h:.3f} GPU-h, {spent.cpu_h:.3f} CPU-h (ledger.json)")
    return "\n".join(lines)


def load_sweep(sweep_dir: Path, prog: str) -> Manifest | None:
    """The sweep's manifest; None, after ``prog`` says why on stderr, when it has no good one."""
    try:
        manifest = Manifest.load(sweep_dir)
    except RunFileError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    if manifest is None:
        print(f"{prog}: no {MANIFEST} in {sweep_dir}", file=sys.stderr)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m sce_sweeps.cli status <sweep dir> [--json]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sce_sweeps.cli status",
        description="Show each job of a sweep as "
        + " / ".join(s.value for s in STATE_ORDER)
        + ", from SLURM and from the run dirs.",
        epilog="Exit status: 0 all completed or pruned, 1 some failed, not submitted or "
        "interrupted, 3 some still pending or running, 2 usage error.",
    )
    parser.add_argument("sweep_dir", type=Path, help=f"a sweep dir (holding {MANIFEST})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    manifest = load_sweep(args.sweep_dir, "sce_sweeps.cli status")
    if manifest is None:
        return 2
    controller = controller_state(manifest)
    controller_live = controller is not None and controller[0] in SLURM_LIVE
    statuses = sweep_status(manifest, controller_live if controller else None)
    code = exit_code(statuses)
    if code == 0 and controller_live:  # a search's controller may still start trials
        code = 3
    if args.json:
        out = {
            "sweep_name": manifest.sweep_name,
            "sweep_dir": str(manifest.sweep_dir),
            "exit_code": code,
            "spent": {k: getattr(sweep_usage(statuses), k) for k in ("gpu_h", "cpu_h")},
            "jobs": [asdict(s) for s in statuses],
        }
        if controller is not None:
            state, reason = controller
            out["controller"] = {"job_id": manifest.controller, "state": state, "reason": reason}
        print(json.dumps(out, indent=2))
    else:
        print(format_table(manifest, statuses, controller))
    return code
