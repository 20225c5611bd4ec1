"""``hydra/sweeper=sce_optuna`` and ``hydra/sweeper/sampler=<name>``: every key and sampler of
hydra-optuna-sweeper (facebookresearch/hydra ``plugins/hydra_optuna_sweeper/hydra_plugins/
hydra_optuna_sweeper/config.py``) with its default, then this sweeper's own (docs/search.md)."""

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object, instantiate
from omegaconf import MISSING

from sce_sweeps.runtime.errors import ConfigError
from sce_sweeps.runtime.trial import _accepted

if TYPE_CHECKING:
    import optuna

# OmegaConf needs Optional[...] in structured configs, not X | None.
# ruff: noqa: UP045


@dataclass
class SamplerConf:
    """An Optuna sampler class (``_target_``) and its arguments; null: the class's default."""

    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: Optional[bool] = None
    # not in the official group: parallel trials do not all sample the same region
    constant_liar: bool = False


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Optional[dict[str, Any]] = None
    sigma0: Optional[float] = None
    independent_sampler: Optional[Any] = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[Any] = None
    inc_popsize: int = 2
    use_separable_cma: bool = False
    source_trials: Optional[Any] = None


@dataclass
class NSGAIISamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None


@dataclass
class GridSamplerConf(SamplerConf):
    """The grid is filled in at run time; ``seed`` (its order) is not in the official group."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True


@dataclass
class GPSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Optional[Any] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Optional[Any] = None
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Optional[Any] = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class MOTPESamplerConf(SamplerConf):
    """Removed from Optuna 4: selecting it fails, pointing to tpe (as the official group)."""

    _target_: str = "hydra_plugins.sce_sweeps_optuna.config.motpe_removed"


SAMPLER_GROUP: dict[str, type[SamplerConf]] = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "grid": GridSamplerConf,
    "gp": GPSamplerConf,
    "qmc": QMCSamplerConf,
    "motpe": MOTPESamplerConf,
}


@dataclass
class SCEOptunaSweeperConf:
    """Settings of an Optuna search (``hydra.sweeper.<key>``); the search space is ``params``
    merged with the command line's sweep overrides, which win."""

    _target_: str = "hydra_plugins.sce_sweeps_optuna.sweeper.SCEOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler itself (and reseeds it)
    _convert_: str = "all"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    # ---- the keys of hydra-optuna-sweeper, same meaning and defaults
    sampler: Any = MISSING  # the sampler group, or any {_target_: ..., kwargs}
    direction: Any = "minimize"  # or a list, one per objective
    storage: Optional[Any] = None  # null: <sweep dir>/optuna.journal
    study_name: Optional[str] = None  # null: the sweep dir's name
    n_trials: int = 20  # counted over the whole study, unless n_trials_per_run
    n_jobs: int = 2
    max_failure_rate: float = 0.0
    params: Optional[dict[str, str]] = None
    custom_search_space: Optional[str] = None  # module.function(cfg, trial)

    # ---- this sweeper's own keys
    n_trials_per_run: bool = False
    objectives: Optional[list[str]] = None  # a job's reported values; null: the task's return
    pruner: Optional[str] = None  # null: median, or none with several objectives
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None  # the sampler's seed when sampler.seed is null
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)
    max_retries: int = 1  # of a trial whose job died without a verdict; of a failed seed job
    seeds: int = 1  # jobs per trial, one per seed; the trial's value is their mean
    seed_key: str = "seed"  # the override a seed job gets: <seed_key>=<0..seeds-1>
    heartbeat_interval: float = 30.0
    stale_after: float = 300.0  # seconds without a heartbeat: an inherited trial is given up
    validate: Optional[str] = None  # module.function(cfg) that checks the space's extremes


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="sce_optuna",
    node=SCEOptunaSweeperConf,
    provider="sce_sweeps",
)
for _name, _node in SAMPLER_GROUP.items():
    ConfigStore.instance().store(
        group="hydra/sweeper/sampler", name=_name, node=_node, provider="sce_sweeps"
    )


def motpe_removed(*args: Any, **kwargs: Any) -> Any:
    """The target of ``hydra/sweeper/sampler=motpe``: Optuna 4 removed MOTPESampler."""
    raise ValueError(
        "the motpe sampler was removed in Optuna 4.0: use hydra/sweeper/sampler=tpe "
        "(TPESampler handles several objectives)"
    )


def sampler_spec(sampler: str | dict[str, Any]) -> dict[str, Any]:
    """A sampler as ``{_target_: class, **kwargs}``; a name means that choice of the
    ``hydra/sweeper/sampler`` group. ValueError for an unknown one."""
    if isinstance(sampler, str):
        if sampler not in SAMPLER_GROUP:
            raise ValueError(
                f"hydra.sweeper.sampler={sampler!r} is invalid: must be one of "
                f"{', '.join(SAMPLER_GROUP)} (or hydra/sweeper/sampler=<name>)"
            )
        sampler = asdict(SAMPLER_GROUP[sampler]())
    if not sampler.get("_target_"):
        raise ValueError(
            "hydra.sweeper.sampler needs a _target_ (an Optuna sampler class): pick one with "
            "hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|grid|gp|qmc"
        )
    return dict(sampler)


def is_grid(sampler: str | dict[str, Any]) -> bool:
    return sampler_spec(sampler)["_target_"] == "optuna.samplers.GridSampler"


def make_sampler(
    sampler: str | dict[str, Any],
    kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    grid: dict[str, list[Any] | None] | None = None,
    reseed: int = 0,
) -> "optuna.samplers.BaseSampler":
    """The sampler with ``kwargs`` over its arguments, instantiated as Hydra does, but null
    arguments left to the class's defaults; ``seed`` when its own is null, plus ``reseed``;
    ``grid``: each parameter's values (None: continuous), for the grid sampler."""
    spec = {**sampler_spec(sampler), **(kwargs or {})}
    target = spec.pop("_target_")
    args = {k: v for k, v in spec.items() if v is not None and k != "_partial_"}
    if args.get("seed", seed) is not None:
        args["seed"] = int(args.get("seed", seed)) + reseed
    args = _accepted(get_object(target), args, "hydra.sweeper.sampler")
    if target == "optuna.samplers.GridSampler":
        if not grid or None in grid.values():
            raise ConfigError(
                "hydra/sweeper/sampler=grid needs choice() or range() parameters only"
            )
        args["search_space"] = grid
    return instantiate({"_target_": target, "_convert_": "all", **args})
