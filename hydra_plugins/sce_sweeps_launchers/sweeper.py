"""``hydra/sweeper=sce_grid``: Hydra's basic (grid) sweeper, each job composed once.

Before launching a batch, Hydra's ``BasicSweeper`` composes every job's config to check that
it composes (``Sweeper.validate_batch_is_legal``); the sce launchers then compose and check
every job again before launching any (:func:`sce_sweeps.runtime.plan.plan_jobs`), and each job
would compose it a third time. :class:`GridSweeper` leaves the check to the launcher when the
launcher is one of these (the same composition, with the same errors, before anything runs); with
any other launcher it checks as Hydra does. Its config is ``BasicSweeper``'s (``params``,
``max_batch_size``): sweep presets written for ``hydra/sweeper=basic`` work unchanged.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from sce_sweeps.runtime.adapters.hydra_config import BasicSweeper, BasicSweeperConf


class GridSweeper(BasicSweeper):
    """Hydra's ``BasicSweeper``, whose batches the sce launchers check themselves."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from hydra_plugins.sce_sweeps_launchers.launchers import SweepLauncher

        if isinstance(self.launcher, SweepLauncher):
            return  # its launch() composes and checks each job before launching any
        super().validate_batch_is_legal(batch)


@dataclass
class GridSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.sce_sweeps_launchers.sweeper.GridSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="sce_grid", node=GridSweeperConf, provider="sce_sweeps"
)
