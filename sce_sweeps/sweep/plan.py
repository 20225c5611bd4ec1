"""Before launching anything: compose and validate every job, and describe the launch.

:func:`plan_jobs` composes each job's config exactly as the job will (Hydra's
``load_sweep_config``), runs :func:`sce_sweeps.config.validate` on it and computes its config
hash and run dir, so a grid value that does not fit the dataset fails before any submission.
:func:`describe` is the dry-run report: count, overrides, resources, estimated GPU-hours.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict, read_write

from sce_sweeps.config import config_hash, validate
from sce_sweeps.sweep.manifest import Manifest, relative_run_dir
from sce_sweeps.sweep.status import FINISHED, LIVE, JobStatus, jobs_, varying_overrides


@dataclass
class PlannedJob:
    """A job about to be launched: its number, overrides, composed config and run dir."""

    num: int
    overrides: list[str]
    run_dir: Path
    config: DictConfig | None = None
    config_hash: str | None = None
    error: str | None = None  # why its config is invalid
    previous: JobStatus | None = None  # its state in the sweep being resumed

    @property
    def skip(self) -> bool:
        """A resume skips a job that finished, or is still queued or running."""
        return self.previous is not None and self.previous.state in FINISHED + LIVE


def task_config(cfg: DictConfig) -> DictConfig:
    """The config the task function receives: the job's config without its ``hydra`` node."""
    task = copy.deepcopy(cfg)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _next_num(used: set[int], preferred: int) -> int:
    num = preferred
    while num in used:
        num = max(used) + 1
    return num


def plan_jobs(
    config_loader: Any,
    master_config: DictConfig,
    job_overrides: list[list[str]],
    initial_job_idx: int,
    manifest: Manifest | None,
    match_by_hash: bool = True,
) -> list[PlannedJob]:
    """Compose, number and validate each job; invalid ones get an ``error``, nothing raises.

    A job already in ``manifest`` (same overrides, or else, with ``match_by_hash``, the same
    config hash) keeps its number and run dir; a new one takes Hydra's number
    (``initial_job_idx + i``) unless the manifest already uses it.
    """
    used = {j.num for j in manifest.jobs} if manifest else set()
    jobs = []
    for i, overrides in enumerate(job_overrides):
        cfg = config_loader.load_sweep_config(master_config, list(overrides))
        config_hash_, error = None, None
        try:
            task = task_config(cfg)
            validate(task)
            config_hash_ = config_hash(task)
        except Exception as e:  # ConfigError, or a value that does not even resolve
            error = str(e).splitlines()[0]
        known = None
        if manifest:  # the same job in the sweep being resumed
            known = manifest.find(list(overrides))
            if known is None and match_by_hash:
                known = manifest.find_by_hash(config_hash_)
        num = known.num if known else _next_num(used, initial_job_idx + i)
        used.add(num)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        if known and config_hash_ and known.config_hash != config_hash_:
            error = (
                f"its config changed since the sweep was launched (config hash "
                f"{known.config_hash} -> {config_hash_}); start a new sweep dir instead"
            )
        jobs.append(PlannedJob(num, list(overrides), run_dir, cfg, config_hash_, error))
    return jobs


def invalid_job_lines(jobs: list[PlannedJob]) -> list[str]:
    """One line per invalid job: its number, its varying overrides and the error."""
    varying = varying_overrides([j.overrides for j in jobs])
    return [
        f"job #{j.num} ({' '.join(v)}): invalid config: {j.error}"
        for j, v in zip(jobs, varying)
        if j.error
    ]


def remove_unused_sweep_dir(sweep_dir: Path) -> None:
    """Remove the sweep dir of a launch that launched nothing (Hydra's sweeper creates it
    with only ``multirun.yaml``), and the parents under the working dir it leaves empty."""
    sweep_dir = Path(sweep_dir).absolute()
    if not sweep_dir.is_dir() or {p.name for p in sweep_dir.iterdir()} - {"multirun.yaml"}:
        return
    (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
    sweep_dir.rmdir()
    cwd, parent = Path.cwd().absolute(), sweep_dir.parent
    while cwd in parent.parents:  # e.g. sweeps/<name>/<date>, left empty
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


# --- the dry-run report -------------------------------------------------------------------


def gpus_per_job(params: dict[str, Any]) -> int:
    """GPUs one job asks for (gpus_per_task, gpus_per_node or a gres of gpu[:type]:N)."""
    nodes = params.get("nodes") or 1
    if params.get("gpus_per_task"):
        return int(params["gpus_per_task"]) * (params.get("tasks_per_node") or 1) * nodes
    if params.get("gpus_per_node"):
        return int(params["gpus_per_node"]) * nodes
    gres = [part.split(":") for part in str(params.get("gres") or "").split(",")]
    for name, *rest in gres:
        if name == "gpu":
            return (int(rest[-1]) if rest and rest[-1].isdigit() else 1) * nodes
    return 0


def format_minutes(minutes: float) -> str:
    hours, mins = divmod(int(round(minutes)), 60)
    return f"{hours}:{mins:02d}:00"


def resources(params: dict[str, Any], kind: str) -> list[str]:
    """The lines of the report that say what each job gets."""
    gpus = gpus_per_job(params)
    tasks = (params.get("nodes") or 1) * (params.get("tasks_per_node") or 1)
    per_job = [f"{tasks} task{'s' * (tasks > 1)}", f"{gpus} GPU{'s' * (gpus != 1)}"]
    if params.get("cpus_per_task"):
        per_job.append(f"{params['cpus_per_task']} CPUs per task")
    if params.get("mem_gb"):
        per_job.append(f"{params['mem_gb']} GB")
    lines = []
    if kind == "slurm":
        where = [
            f"{key}={params[key]}"
            for key in ("partition", "account", "qos", "constraint", "gres", "exclude")
            if params.get(key)
        ]
        per_job.append(f"time limit {format_minutes(params['timeout_min'])}")
        lines.append(f"  SLURM:      {' '.join(where) or '(the default partition)'}")
        lines.append(f"  per job:    {', '.join(per_job)}")
        lines.append(
            f"  array:      at most {params.get('array_parallelism')} jobs at once; a job "
            f"requeues itself on preemption, and on its time limit up to "
            f"{params.get('max_num_timeout')} times"
        )
        for key, value in sorted((params.get("additional_parameters") or {}).items()):
            lines.append(f"  sbatch:     --{key.replace('_', '-')}={value}")
    else:
        lines.append(f"  local:      at most {params.get('max_parallel')} jobs at once")
        lines.append(f"  per job:    {', '.join(per_job[1:])}")
    if params.get("setup"):
        lines.append(f"  setup:      {'; '.join(params['setup'])}")
    return lines


def describe(
    jobs: list[PlannedJob],
    params: dict[str, Any],
    kind: str,
    sweep_name: str,
    sweep_dir: Path,
    resume: bool,
) -> str:
    """The dry-run report of launching ``jobs`` with launcher ``kind`` (local | slurm)."""
    todo = [j for j in jobs if not j.skip]
    where = "submitted to SLURM" if kind == "slurm" else "run on this machine"
    lines = [
        f"DRY RUN: {jobs_(len(todo))} of sweep {sweep_name} would be {where} "
        f"(nothing is submitted, no directory is created)",
        f"  sweep dir:  {os.path.relpath(sweep_dir) if not sweep_dir.is_absolute() else sweep_dir}",
    ]
    if resume:
        lines.append(f"  resume:     {len(jobs) - len(todo)} of {jobs_(len(jobs))} skipped")
    lines += resources(params, kind)
    gpus = gpus_per_job(params)
    if kind == "slurm" and gpus:
        hours = params["timeout_min"] / 60
        total = len(todo) * gpus * hours
        lines.append(
            f"  GPU-hours:  {total:g} at most ({jobs_(len(todo))} x {gpus} GPU x {hours:g} h "
            f"time limit; runs that end sooner use less, requeued ones more)"
        )
    elif kind == "slurm":
        lines.append("  GPU-hours:  0 (no GPU requested)")
    varying = varying_overrides([j.overrides for j in jobs])
    common = [x for x in jobs[0].overrides if x not in varying[0]] if jobs else []
    lines.append(f"  every job:  {' '.join(common) or '-'}")
    width = max([len(" ".join(v)) for v in varying] + [9])
    lines.append(f"  {'job':>4}  {'overrides':<{width}}  {'config hash':<16}  run dir")
    for job, v in zip(jobs, varying):
        run_dir = relative_run_dir(job.run_dir, sweep_dir)
        note = f"  (skipped: {job.previous.state})" if job.skip else ""
        if job.previous and not job.skip:
            note = f"  (rerun: {job.previous.state})"
        lines.append(f"  {job.num:>4}  {' '.join(v):<{width}}  {job.config_hash}  {run_dir}{note}")
    return "\n".join(lines)
