"""The tracked sweep that the Aim tests read: made once per session and shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import run_cli, tiny
from tests.tracking.helpers import COEFFS, EPOCHS, SEEDS, SWEEP_NAME


@pytest.fixture(scope="session")
def tracked_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-job multirun, the 4 jobs at once, each merging into the sweep's repo while it trains
    as often as the time-share rule allows (tracker.sync_interval_s=0) and when it ends."""
    sweep_dir = tmp_path_factory.mktemp("tracked_sweep")
    run_cli(
        "-m",
        *tiny(**{"trainer.epochs": EPOCHS}),
        "loss.coeff=" + ",".join(map(str, COEFFS)),
        "seed=" + ",".join(map(str, SEEDS)),
        "tracker.sync_interval_s=0",
        f"sweep_name={SWEEP_NAME}",
        "hydra.launcher.max_parallel=4",
        f"hydra.sweep.dir={sweep_dir}",
        timeout=600,
    )
    return sweep_dir
