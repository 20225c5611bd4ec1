"""``hydra/sweeper=sce_grid``: Hydra's basic sweeper (same config), which leaves the check that
each job composes to the sce launchers: a job is composed once, not twice."""

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
