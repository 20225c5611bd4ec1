"""Overrides shared by the tracking tests."""

from __future__ import annotations

from tests.helpers import TINY

# The tracked sweep of tests/tracking/conftest.py: 2 values of λ x 2 seeds, 4 runs in 2 groups
COEFFS, SEEDS = (0.0, 1.0), (0, 1)
EPOCHS = 3
STEPS_PER_EPOCH = 8  # 512 images, batch 64
SWEEP_NAME = "tracking_test"


def tiny(**changes: object) -> list[str]:
    """The TINY overrides with some keys changed (``tiny(**{"trainer.epochs": 3})``)."""
    kept = [o for o in TINY if o.split("=")[0] not in changes]
    return kept + [f"{key}={value}" for key, value in changes.items()]
