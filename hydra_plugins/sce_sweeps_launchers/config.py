"""Structured configs of the launchers, registered as ``hydra/launcher=sce_local|sce_slurm``.

Users pick them with the top-level group ``launcher=local|slurm`` (conf/launcher) and fill the
resources from a ``cluster=NAME`` profile (conf/cluster). Both share one schema, so any cluster
profile composes with either launcher; the local launcher uses the GPUs, time limit and setup
lines of a profile and ignores (with a warning) what only SLURM understands.
"""

from dataclasses import dataclass, field
from typing import List, Optional  # noqa: UP035 (OmegaConf needs typing's List)

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

PACKAGE = "hydra_plugins.sce_sweeps_launchers.launchers"


@dataclass
class SweepLauncherConf(SlurmQueueConf):
    """hydra-submitit-launcher's SLURM settings plus what every sce_sweeps launcher adds."""

    # Print the jobs that would be launched (count, overrides, resources, GPU-hours) and exit.
    dry_run: bool = False
    # Rerun an existing sweep dir (hydra.sweep.dir=...): skip runs that finished with the same
    # config hash or are still queued/running, rerun failed and unfinished ones.
    resume: bool = False
    # Local launcher: jobs running at once on this machine.
    max_parallel: int = 2
    # Requeues allowed after a time limit (submitit's max_num_timeout); preemptions are free.
    max_num_timeout: int = 3
    # Seconds between two looks at the running jobs.
    poll_s: float = 2.0
    # The app's own check of a job's config, as ``module.function`` (raises on an invalid
    # value); every job is composed and checked before any is launched. null: composing only.
    validate: Optional[str] = None  # noqa: UP045 (OmegaConf needs Optional)
    # ``module.function`` giving the hash of what determines a job's result (how a resume
    # tells a finished job from a changed one). null: a hash of the resolved config.
    config_hash: Optional[str] = None  # noqa: UP045
    # Dry run: also read each job's data through ``data_check`` and list what cannot be read.
    check_data: bool = False
    # ``module.function`` giving the problems of a job's data (lines; none when it reads).
    data_check: Optional[str] = None  # noqa: UP045
    # Seconds without a heartbeat (a job's last step, in heartbeat.json) after which a running
    # job is stalled. null: 5 times the longest interval between two of its steps, at least 300.
    stall_after: Optional[float] = None  # noqa: UP045
    # What to do with a stalled job: flag (status and the progress line say so) or kill (end
    # it as failed, reason "stalled"; its checkpoint is kept, so a resume goes on from it).
    stalled: str = "flag"


@dataclass
class LocalSweepLauncherConf(SweepLauncherConf):
    _target_: str = f"{PACKAGE}.LocalLauncher"
    timeout_min: int = 7 * 24 * 60  # local jobs have no real time limit
    poll_s: float = 0.5
    # Warm start: one server imports these modules (and Hydra, submitit, this launcher) once
    # and forks each job from it, instead of a fresh interpreter per job importing them
    # again. null: a fresh interpreter per job (as with setup lines, which need a shell).
    preload: Optional[List[str]] = field(default_factory=list)  # noqa: UP006, UP045


@dataclass
class SlurmSweepLauncherConf(SweepLauncherConf):
    _target_: str = f"{PACKAGE}.SlurmLauncher"
    name: str = "${hydra.job.name}"  # the SLURM job name
    poll_s: float = 5.0


ConfigStore.instance().store(
    group="hydra/launcher",
    name="sce_local",
    node=LocalSweepLauncherConf,
    provider="sce_sweeps",
)
ConfigStore.instance().store(
    group="hydra/launcher",
    name="sce_slurm",
    node=SlurmSweepLauncherConf,
    provider="sce_sweeps",
)
