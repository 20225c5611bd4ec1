"""The sweeper's structured config, registered as ``hydra/sweeper=sce_optuna``, and the
sampler config group ``hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|grid|gp|qmc|motpe``.

Every key of Hydra's own Optuna sweeper (hydra-optuna-sweeper, facebookresearch/hydra
``plugins/hydra_optuna_sweeper/hydra_plugins/hydra_optuna_sweeper/config.py``) is here with its
meaning and default, and the same sampler group; the keys after them are this sweeper's own.
"""

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object, instantiate
from omegaconf import MISSING, OmegaConf

from sce_sweeps.runtime.trial import _accepted

if TYPE_CHECKING:
    import optuna

# OmegaConf needs Optional[...] in structured configs, not X | None.
# ruff: noqa: UP045


@dataclass
class SamplerConf:
    """An Optuna sampler: its class (``_target_``) and keyword arguments. A null argument
    means the class's own default."""

    _target_: str = MISSING


@dataclass
class TPESamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: Optional[bool] = None
    # Not in the official group: TPE imagines running trials as bad ones, so that parallel
    # asynchronous trials do not all sample the same region.
    constant_liar: bool = False


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
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
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None


@dataclass
class GridSamplerConf(SamplerConf):
    """The grid is the search space (choice and range parameters), filled in at run time."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: Optional[int] = None  # not in the official group: the order of the grid points


@dataclass
class GPSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    independent_sampler: Optional[Any] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Optional[Any] = None
    warn_independent_sampling: bool = True


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = None
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
    """Settings of an Optuna search; every key is ``hydra.sweeper.<key>`` on the command line.

    The search space is ``params`` (key: Hydra sweep syntax) merged with the sweep overrides
    of the command line, which win: ``choice(a,b,..)`` is categorical, ``interval(lo,hi)`` is
    a float (``int(interval(..))`` an integer), ``range(lo,hi,step)`` a stepped number from lo
    to hi (hi included), ``shuffle(range(..))`` categorical, and ``tag(log, interval(..))``
    samples on a log scale.
    """

    _target_: str = "hydra_plugins.sce_sweeps_optuna.sweeper.SCEOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler itself (and reseeds it)
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    # ---- the keys of hydra-optuna-sweeper, same meaning and defaults
    # The sampler group (hydra/sweeper/sampler=tpe|...), or any {_target_: ..., kwargs}.
    sampler: Any = MISSING
    direction: Any = "minimize"  # a string, or a list with one direction per objective
    # null: a journal file <sweep dir>/optuna.journal; or a journal path, or a database URL.
    storage: Optional[Any] = None
    study_name: Optional[str] = None  # null: the sweep dir's name
    # Trials to run: COMPLETE, PRUNED or FAIL ones, counted over the whole study (every run
    # of the same command), unless n_trials_per_run.
    n_trials: int = 20
    # Trials running at once (P); a new one starts as soon as any ends.
    n_jobs: int = 2
    # The search stops with the failed trial's error when more than this fraction of the
    # trials it ran failed (judged against at least n_jobs trials): 0.0 stops at the first.
    max_failure_rate: float = 0.0
    params: Optional[dict[str, str]] = None
    # ``module.function(cfg, trial)`` that suggests more parameters (define-by-run), after
    # those of params; a parameter's name is its override key (``+w`` for a new key).
    custom_search_space: Optional[str] = None

    # ---- this sweeper's own keys
    # Each run of the command adds n_trials trials, as hydra-optuna-sweeper counts them.
    n_trials_per_run: bool = False
    # Names of the values a job's trial reporter tells (the first is reported each epoch, for
    # pruning), one per direction; null: ``objective`` (or objective_0, objective_1, ...). A
    # job without a reporter is told by what its task function returns.
    objectives: Optional[list[str]] = None
    # null: median with one objective, none with several (Optuna prunes single objectives).
    pruner: Optional[str] = None  # median | successive_halving | hyperband | none
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    # The sampler's seed when hydra.sweeper.sampler.seed is null.
    seed: Optional[int] = None
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # merged into the sampler's
    # A job killed without a verdict (SIGKILL, node failure) is retried this many times.
    max_retries: int = 1
    # Seconds between a trial's heartbeats; a RUNNING trial inherited from an earlier sweeper
    # run is given up (FAIL, then retried) after stale_after seconds without one.
    heartbeat_interval: float = 30.0
    stale_after: float = 300.0
    # The app's check of a job's config as ``module.function`` (raises on an invalid value):
    # every extreme of the search space is composed and checked before any trial launches.
    validate: Optional[str] = None


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
    """A sampler as ``{_target_: class, **kwargs}``; a name (``tpe``, ``random``, ...) means
    the defaults of that choice of the ``hydra/sweeper/sampler`` group.

    Raises:
        ValueError: for an unknown name, or a sampler without ``_target_``.
    """
    if isinstance(sampler, str):
        if sampler not in SAMPLER_GROUP:
            raise ValueError(
                f"hydra.sweeper.sampler={sampler!r} is invalid: must be one of "
                f"{', '.join(SAMPLER_GROUP)} (or hydra/sweeper/sampler=<name>)"
            )
        sampler = OmegaConf.to_container(OmegaConf.structured(SAMPLER_GROUP[sampler]))
    spec = dict(sampler)
    if not spec.get("_target_"):
        raise ValueError(
            "hydra.sweeper.sampler needs a _target_ (an Optuna sampler class): pick one with "
            "hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|grid|gp|qmc"
        )
    return spec


def is_grid(sampler: str | dict[str, Any]) -> bool:
    return sampler_spec(sampler)["_target_"] == "optuna.samplers.GridSampler"


def make_sampler(
    sampler: str | dict[str, Any],
    kwargs: dict[str, Any] | None = None,
    seed: int | None = None,
    grid: dict[str, list[Any]] | None = None,
    reseed: int = 0,
) -> "optuna.samplers.BaseSampler":
    """The sampler ``sampler`` (a name or ``{_target_: ..., **kwargs}``), instantiated as
    Hydra instantiates a config: null arguments take the class's defaults.

    Args:
        kwargs: more keyword arguments (``hydra.sweeper.sampler_kwargs``), which win.
        seed: the seed when the sampler's own ``seed`` is null.
        grid: the values of each parameter, for the grid sampler.
        reseed: added to the seed (a resumed study must not replay the first draws).

    Raises:
        ValueError: for an unknown sampler, or ``grid`` without a discrete search space.
    """
    spec = {**sampler_spec(sampler), **(kwargs or {})}
    target = spec.pop("_target_")
    spec.pop("_partial_", None)
    args = {k: v for k, v in spec.items() if v is not None}
    if args.get("seed", seed) is not None:
        args["seed"] = int(args.get("seed", seed)) + reseed
    cls = get_object(target)
    name = target.rsplit(".", 1)[-1]
    needs = {"CmaEsSampler": "cmaes", "GPSampler": "scipy", "QMCSampler": "scipy"}.get(name)
    if needs is not None:  # fail now, not at the sampler's first draw in a worker thread
        try:
            importlib.import_module(needs)
        except ImportError as e:
            raise ImportError(f"{target} needs the package {needs}: pip install {needs}") from e
    args = _accepted(cls, args, "hydra.sweeper.sampler")
    if target == "optuna.samplers.GridSampler":
        if not grid:
            raise ValueError("the grid sampler needs choice(...) or range(...) parameters only")
        args["search_space"] = grid
    return instantiate({"_target_": target, "_convert_": "all", **args})
