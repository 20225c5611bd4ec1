"""Configs of the launchers, ``hydra/launcher=sce_local|sce_slurm``: one schema, so that any
``cluster=NAME`` profile composes with either (the local one warns of what only SLURM uses)."""

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 (OmegaConf needs typing's List)

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

PACKAGE = "hydra_plugins.sce_sweeps_launchers.launchers"


@dataclass
class ControllerConf:
    """The SLURM job that runs a detached sweep's controller (``hydra.launcher.detach=true``)."""

    partition: Optional[str] = None  # noqa: UP045 (null: the launcher's)
    account: Optional[str] = None  # noqa: UP045 (null: the launcher's)
    qos: Optional[str] = None  # noqa: UP045 (null: the launcher's)
    time_min: Optional[int] = None  # noqa: UP045 (null: the partition's limit)
    cpus: int = 1
    mem_gb: float = 2.0


@dataclass
class SweepLauncherConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM settings plus what every sce_sweeps launcher adds."""

    dry_run: bool = False  # print the jobs, their resources and GPU-hours, and exit
    resume: bool = False  # rerun the failed and unfinished runs of hydra.sweep.dir
    max_parallel: int = 2  # local launcher: jobs running at once on this machine
    max_num_timeout: int = 3  # requeues after a time limit; preemptions are free
    poll_s: float = 2.0  # seconds between two looks at the running jobs
    # ``module.function`` that raises on an invalid job config; null: composing is the check.
    validate: Optional[str] = None  # noqa: UP045 (OmegaConf needs Optional)
    # ``module.function``: the hash of what determines a job's result (null: resolved config).
    config_hash: Optional[str] = None  # noqa: UP045
    check_data: bool = False  # dry run: also list the jobs whose data cannot be read
    # ``module.function`` giving the problems of a job's data (lines; none when it reads).
    data_check: Optional[str] = None  # noqa: UP045
    # Seconds without a heartbeat before a job is stalled (null: 5 x its slowest step, >= 300).
    stall_after: Optional[float] = None  # noqa: UP045
    # flag a stalled job, or kill it (failed, "stalled"; a resume goes on from its checkpoint)
    stalled: str = "flag"
    # SLURM: submit this command as a controller job on the cluster and return at once
    detach: bool = False
    controller: ControllerConf = field(default_factory=lambda: ControllerConf())


@dataclass
class LocalSweepLauncherConf(SweepLauncherConf):
    _target_: str = f"{PACKAGE}.LocalLauncher"
    timeout_min: int = 7 * 24 * 60  # local jobs have no real time limit
    poll_s: float = 0.5
    # Warm start: a server imports these once and forks each job (null, or setup: cold).
    preload: Optional[List[str]] = field(default_factory=list)  # noqa: UP006, UP045


@dataclass
class SlurmSweepLauncherConf(SweepLauncherConf):
    _target_: str = f"{PACKAGE}.SlurmLauncher"
    name: str = "${hydra.job.name}"  # the SLURM job name
    poll_s: float = 5.0


for name, node in (("sce_local", LocalSweepLauncherConf), ("sce_slurm", SlurmSweepLauncherConf)):
    ConfigStore.instance().store(name, node, group="hydra/launcher", provider="sce_sweeps")
