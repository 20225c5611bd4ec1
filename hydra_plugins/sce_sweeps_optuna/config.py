"""The sweeper's structured config, registered as ``hydra/sweeper=sce_optuna``."""

from dataclasses import dataclass, field
from typing import Any

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
    # Objectives: keys of the run's result.json, and one direction each.
    objectives: list[str] = field(default_factory=lambda: ["knn_top1"])
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


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="sce_optuna",
    node=SCEOptunaSweeperConf,
    provider="sce_sweeps",
)
