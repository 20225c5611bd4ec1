"""Before launching anything: every job composed, validated, hashed and given its run dir
(:func:`plan_jobs`), so a bad grid value fails before any submission; the dry-run report."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sce_sweeps.runtime.confighash import config_hash
from sce_sweeps.runtime.record import (
    FINISHED,
    LIVE,
    LOCK,
    Manifest,
    RunFileError,
    confined_run_dir,
    read_result,
    relative_run_dir,
    run_usage,
)
from sce_sweeps.runtime.status import JobStatus, jobs_, varying_overrides


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
    task = pickle.loads(pickle.dumps(cfg))  # a deep copy, several times faster than deepcopy
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def resolved_hash(task: DictConfig) -> str:
    """A hash of the resolved task config: the launchers' default ``config_hash``."""
    return config_hash(OmegaConf.to_container(task, resolve=True))


def _known_job(manifest: Manifest | None, num: int, overrides: list[str], hash_: str | None):
    """The job of ``manifest`` that job ``num`` is: the one with its number and config, else with
    its overrides, else, when its number is another config's, the only one with its hash."""
    if manifest is None:
        return None
    same_num = next((j for j in manifest.jobs if j.num == num), None)
    if same_num is not None and same_num.config_hash == hash_:
        return same_num
    same = next((j for j in manifest.jobs if j.overrides == overrides), None)
    if same is None and same_num is not None:
        same_hash = [j for j in manifest.jobs if hash_ and j.config_hash == hash_]
        same = same_hash[0] if len(same_hash) == 1 else None
    return same


def plan_jobs(
    compose: Callable[[list[str]], DictConfig],
    job_overrides: list[list[str]],
    initial_job_idx: int,
    manifest: Manifest | None,
    validate: str | None = None,
    config_hash: str | None = None,
) -> list[PlannedJob]:
    """Compose, number and validate each job (an invalid one gets an ``error``), a known one
    keeping its number and run dir; ``validate`` and ``config_hash``: the app's functions named
    by the launcher's keys (None: the config only has to resolve; :func:`resolved_hash`)."""
    check = get_method(validate) if validate else partial(OmegaConf.to_container, resolve=True)
    hash_of = get_method(config_hash) if config_hash else resolved_hash
    jobs = []
    used = {j.num for j in manifest.jobs} if manifest else set()
    for i, overrides in enumerate(map(list, job_overrides)):
        num = initial_job_idx + i
        cfg = compose(overrides)
        config_hash_, error = None, None
        try:
            task = task_config(cfg)
            check(task)
            config_hash_ = hash_of(task)
        except Exception as e:  # ConfigError, or a value that does not even resolve
            error = str(e).splitlines()[0]
        known = _known_job(manifest, num, overrides, config_hash_)
        if known is not None:
            num = known.num
        elif num in used:  # a new job whose number the sweep has given to another
            num = max(used) + 1
        used.add(num)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = num
        sweep_dir = Path(str(cfg.hydra.sweep.dir))
        run_dir = sweep_dir / str(cfg.hydra.sweep.subdir)
        outside = confined_run_dir(run_dir, sweep_dir)
        if outside:
            error = f"hydra.sweep.subdir={cfg.hydra.sweep.subdir}: {outside}"
        elif known and config_hash_ and known.config_hash != config_hash_:
            error = (
                f"its config changed since the sweep was launched (config hash "
                f"{known.config_hash} -> {config_hash_}); start a new sweep dir instead"
            )
        jobs.append(PlannedJob(num, overrides, run_dir, cfg, config_hash_, error))
    # a run dir that another job has already (of this launch, or of the manifest's)
    known_dirs = [(manifest.run_dir(j), j.num) for j in manifest.jobs] if manifest else []
    owner = {Path(os.path.abspath(run_dir)): num for run_dir, num in known_dirs}
    for job in jobs:
        path = Path(os.path.abspath(job.run_dir))
        other = owner.setdefault(path, job.num)
        if other != job.num and not job.error:
            job.error = (
                f"its run dir {path} is job #{other}'s too: hydra.sweep.subdir must give each "
                "job its own (e.g. ${hydra.job.num})"
            )
    return jobs


def invalid_job_lines(jobs: list[PlannedJob]) -> list[str]:
    """One line per invalid job: its number, its varying overrides and the error."""
    varying = varying_overrides([j.overrides for j in jobs])[1]
    return [
        f"job #{j.num} ({' '.join(v)}): invalid config: {j.error}"
        for j, v in zip(jobs, varying)
        if j.error
    ]


def remove_unused_sweep_dir(sweep_dir: Path) -> None:
    """Remove the sweep dir of a launch that launched nothing (only Hydra's ``multirun.yaml``),
    and the parents under the working dir it leaves empty."""
    sweep_dir = Path(sweep_dir).absolute()
    if not sweep_dir.is_dir() or {p.name for p in sweep_dir.iterdir()} - {"multirun.yaml", LOCK}:
        return
    (sweep_dir / "multirun.yaml").unlink(missing_ok=True)
    (sweep_dir / LOCK).unlink(missing_ok=True)
    sweep_dir.rmdir()
    cwd, parent = Path.cwd().absolute(), sweep_dir.parent
    while cwd in parent.parents:  # e.g. sweeps/<name>/<date>, left empty
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


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


def describe(
    jobs: list[PlannedJob],
    params: dict[str, Any],
    kind: str,
    sweep_name: str,
    sweep_dir: Path,
    resume: bool,
    manifest: Manifest | None = None,
) -> str:
    """The dry-run report of launching ``jobs`` with launcher ``kind`` (local | slurm); with
    the sweep dir's ``manifest``, beside its estimate what its finished runs spent."""
    todo = [j for j in jobs if not j.skip]
    where = "submitted to SLURM" if kind == "slurm" else "run on this machine"
    lines = [
        f"DRY RUN: {jobs_(len(todo))} of sweep {sweep_name} would be {where} "
        f"(nothing is submitted, no directory is created)",
        f"  sweep dir:  {os.path.relpath(sweep_dir) if not sweep_dir.is_absolute() else sweep_dir}",
    ]
    if resume:
        lines.append(f"  resume:     {len(jobs) - len(todo)} of {jobs_(len(jobs))} skipped")
    gpus = gpus_per_job(params)
    tasks = (params.get("nodes") or 1) * (params.get("tasks_per_node") or 1)
    per_job = [jobs_(tasks, "task"), jobs_(gpus, "GPU")]
    if params.get("cpus_per_task"):
        per_job.append(f"{params['cpus_per_task']} CPUs per task")
    if params.get("mem_gb"):
        per_job.append(f"{params['mem_gb']} GB")
    if kind == "slurm":
        placement = [
            f"{key}={params[key]}"
            for key in ("partition", "account", "qos", "constraint", "gres", "exclude")
            if params.get(key)
        ]
        hours, minutes = divmod(int(round(params["timeout_min"])), 60)
        per_job.append(f"time limit {hours}:{minutes:02d}:00")
        lines.append(f"  SLURM:      {' '.join(placement) or '(the default partition)'}")
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
    if kind == "slurm" and gpus:
        hours = params["timeout_min"] / 60
        total = len(todo) * gpus * hours
        lines.append(
            f"  GPU-hours:  {total:g} at most ({jobs_(len(todo))} x {gpus} GPU x {hours:g} h "
            f"time limit; runs that end sooner use less, requeued ones more)"
        )
    elif kind == "slurm":
        lines.append("  GPU-hours:  0 (no GPU requested)")
    spent = spent_line(manifest, len(todo))
    if spent:
        lines.append(spent)
    common, varying = varying_overrides([j.overrides for j in jobs])
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


def spent_line(manifest: Manifest | None, to_run: int) -> str | None:
    """What the sweep dir's finished (completed or pruned) runs spent on average, by their
    ledgers, and that times the ``to_run`` jobs; None when no finished run has a ledger."""
    spent = []
    for job in manifest.jobs if manifest is not None else []:
        run_dir = manifest.run_dir(job)
        try:
            result = read_result(run_dir)
        except RunFileError:
            continue
        usage = run_usage(run_dir) if result and result["status"] in FINISHED else None
        if usage is not None:
            spent.append(usage)
    if not spent:
        return None
    gpu_h, cpu_h = (sum(getattr(u, k) for u in spent) / len(spent) for k in ("gpu_h", "cpu_h"))
    return (
        f"  spent:      {gpu_h:.3g} GPU-h, {cpu_h:.3g} CPU-h a run on average over "
        f"{jobs_(len(spent), 'finished run')} of this sweep dir (ledger.json); x {to_run} to "
        f"run: {gpu_h * to_run:.3g} GPU-h, {cpu_h * to_run:.3g} CPU-h"
    )


def check_data(jobs: list[PlannedJob], data_check: str | None) -> tuple[list[str], bool]:
    """The dry run's lines of the app's ``data_check`` on each job to run, and whether it passed."""
    if not data_check:
        return ["  data:       not checked (the launcher's data_check names no function)"], True
    check = get_method(data_check)
    todo = [j for j in jobs if not j.skip]
    problems: dict[str, None] = {}
    for job in todo:
        problems.update(dict.fromkeys(check(task_config(job.config))))
    if not problems:
        return [f"  data:       checked: every file of the {jobs_(len(todo))}' data reads"], True
    return [f"  data:       {line}" for line in problems], False
