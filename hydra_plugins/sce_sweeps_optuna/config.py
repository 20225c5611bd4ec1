"""The sweeper's structured config, registered as ``hydra/sweeper=sce_optuna``."""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class SCEOptunaSweeperConf:
    """Settings of an Optuna search; every key is ``hydra.sweeper.<key>`` on the command line.

    The search space is ``params`` (key: Hydra sweep syntax) merged with the sweep overrides
    of the command line, which win: ``choice(a,b,..)`` is categorical, ``interval(lo,hi)`` is
    a float (``int(interval(..))`` an integer), ``range(lo,hi,step)`` a stepped number, and
    ``tag(log, interval(..))`` samples on a log scale.
    """

    _target_: str = "hydra_plugins.sce_sweeps_optuna.sweeper.SCEOptunaSweeper"
    params: dict[str, str] = field(default_factory=dict)
    # Objectives, one direction each: the names of the values a job's trial reporter tells
    # (the first is reported each epoch, for pruning); a job without a reporter is told by
    # what its task function returns.
    objectives: list[str] = field(default_factory=lambda: ["objective"])
    direction: Any = "maximize"  # a string, or a list with one direction per objective
    # Trials that end COMPLETE, PRUNED or FAIL count, over every run of the same command.
    n_trials: int = 20
    # Trials running at once (P); a new one starts as soon as any ends.
    n_jobs: int = 2
    sampler: str = "tpe"  # tpe | cmaes | gp | random | grid | nsgaii
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"  # median | successive_halving | hyperband | none
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # of the sampler
    # null: a journal file <sweep dir>/optuna.journal; or a journal path, or a database URL.
    storage: str | None = None
    study_name: str | None = None  # null: the sweep dir's name
    # A job killed without a verdict (SIGKILL, node failure) is retried this many times.
    max_retries: int = 1
    # Seconds between a trial's heartbeats; a RUNNING trial inherited from an earlier sweeper
    # run is given up (FAIL, then retried) after stale_after seconds without one.
    heartbeat_interval: float = 30.0
    stale_after: float = 300.0
    # The app's check of a job's config as ``module.function`` (raises on an invalid value):
    # every extreme of the search space is composed and checked before any trial launches.
    validate: Optional[str] = None  # noqa: UP045 (OmegaConf needs Optional)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="sce_optuna",
    node=SCEOptunaSweeperConf,
    provider="sce_sweeps",
)
