"""The one place that asks SLURM about jobs (``squeue``, ``sacct``) or submits one of its own
(``sbatch``, ``scontrol release``). Every query answers "don't know" (nothing) when SLURM is
absent, slow or failing: callers fall back on the run's files."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from sce_sweeps.runtime.record import SLURM_LIVE


def _run(cmd: list[str], timeout: float = 60) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _rows(out: str | None) -> list[list[str]]:
    return [(line.split("|") + ["", ""])[:3] for line in (out or "").splitlines()]


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """{job id: (state, reason)} from squeue (``-r``: an array's tasks one by one, as
    ``<array id>_<task id>``), else from sacct; jobs SLURM no longer knows are left out."""
    if not job_ids:
        return {}
    states = {}
    for job_id, state, reason in _rows(_run(["squeue", "-h", "-r", "-o", "%i|%T|%r"])):
        if job_id in job_ids:
            states[job_id] = (state, reason)
    rest = [j for j in job_ids if j not in states]
    if rest:
        cmd = ["sacct", "-n", "-X", "-P", "-o", "JobID,State,ExitCode", "-j", ",".join(rest)]
        for job_id, state, exit_code in _rows(_run(cmd)):
            if job_id in rest:
                name = state.split()[0] if state else "UNKNOWN"
                states[job_id] = (name, f"{state}, exit {exit_code}")
    return states


def queued_jobs(job_ids: list[str]) -> set[str] | None:
    """Those of ``job_ids`` (``<array id>_<task id>``) that SLURM holds pending, from one
    ``squeue`` call over their arrays; None when squeue does not answer."""
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not arrays:
        return set()
    out = _run(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i", "-j", ",".join(arrays)])
    return None if out is None else set(out.split()) & set(job_ids)


def job_alive(job_id: str | None) -> bool:
    """Whether SLURM still has the job pending or running (False without SLURM)."""
    if not job_id:
        return False
    out = _run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], timeout=30)
    return out is not None and any(s in SLURM_LIVE for s in out.split())


def attempts(job_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """{job id: its ended attempts} from one ``sacct -D`` call (a requeued job keeps its id and
    has one record per attempt): ``alloc_tres``, ``elapsed_s``, ``start`` (epoch seconds) and
    ``state``. Attempts still running, and jobs SLURM does not know, are left out."""
    if not job_ids:
        return {}
    fields = "JobID,AllocTRES,ElapsedRaw,State,Start"
    cmd = ["sacct", "-n", "-X", "-D", "-P", "-o", fields, "-j", ",".join(job_ids)]
    out: dict[str, list[dict[str, Any]]] = {}
    for line in (_run(cmd) or "").splitlines():
        job_id, tres, elapsed, state, start = (line.split("|") + [""] * 5)[:5]
        name = state.split()[0] if state else ""
        if job_id not in job_ids or not tres or not elapsed.isdigit() or "T" not in start:
            continue
        if name in SLURM_LIVE and name != "REQUEUED":  # a REQUEUED record is an ended attempt
            continue
        began = time.mktime(time.strptime(start, "%Y-%m-%dT%H:%M:%S"))
        row = {"alloc_tres": tres, "elapsed_s": int(elapsed), "start": began, "state": name}
        out.setdefault(job_id, []).append({"job_id": job_id, **row})
    return out


def submit_script(script: str, options: list[str]) -> str:
    """Submit a batch ``script`` (its text, on sbatch's stdin) with sbatch ``options``; its job
    id, or a RuntimeError with sbatch's own message."""
    cmd = ["sbatch", "--parsable", *options]
    try:
        proc = subprocess.run(
            cmd, input=script, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"sbatch failed: {e}") from None
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"sbatch exited with status {proc.returncode}")
    return proc.stdout.strip().split(";")[0]  # "<job id>[;<cluster>]"


def release(job_id: str) -> bool:
    """Let a job submitted with ``--hold`` start; whether SLURM accepted it."""
    return _run(["scontrol", "release", str(job_id)], timeout=30) is not None
