"""Overrides shared by the tracking tests."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT, TINY

# The tracked sweep of tests/tracking/conftest.py: 2 values of λ x 2 seeds, 4 runs in 2 groups
COEFFS, SEEDS = (0.0, 1.0), (0, 1)
EPOCHS = 3
STEPS_PER_EPOCH = 8  # 512 images, batch 64
SWEEP_NAME = "tracking_test"


def tiny(**changes: object) -> list[str]:
    """The TINY overrides with some keys changed (``tiny(**{"trainer.epochs": 3})``)."""
    kept = [o for o in TINY if o.split("=")[0] not in changes]
    return kept + [f"{key}={value}" for key, value in changes.items()]


def start_cli(*args: str) -> subprocess.Popen:
    """``python -m sce_sweeps *args`` from the repository root, started and not waited for;
    its stdout and stderr piped, as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "sce_sweeps", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
