"""Experiment tracking interface. ``tracker=none`` gives :class:`NullTracker`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig


class NullTracker:
    """Tracks nothing. The interface every tracker implements."""

    run_hash: str | None = None

    def log(
        self, metrics: dict[str, float], step: int, epoch: int, context: dict[str, str]
    ) -> None:
        """Record scalar metrics at a global step, e.g. context={"subset": "train"}."""

    def log_images(self, name: str, images: torch.Tensor, step: int) -> None:
        """Record a batch of images (B x C x H x W, normalised as fed to the network)."""

    def close(self, status: str) -> None:
        """Finish the run with status completed / failed / pruned / interrupted."""


def make_tracker(
    cfg: DictConfig, run_dir: Path, run_hash: str | None, info: dict[str, Any]
) -> NullTracker:
    """The tracker chosen by ``cfg.tracker.name``; ``run_hash`` continues an earlier run."""
    return NullTracker()
