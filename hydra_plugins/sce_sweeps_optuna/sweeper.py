"""The Hydra plugin class; :mod:`._impl` (and Optuna) is imported lazily, so that Hydra's
plugin discovery stays fast for runs that do not search."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.sce_sweeps_optuna.config import SCEOptunaSweeperConf  # noqa: F401 (registers)


class SCEOptunaSweeper(Sweeper):
    """Asynchronous Optuna search; see :class:`._impl.AsyncOptunaSweeper`."""

    def __init__(self, **settings: Any) -> None:
        from hydra_plugins.sce_sweeps_optuna._impl import AsyncOptunaSweeper

        self.sweeper = AsyncOptunaSweeper(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
