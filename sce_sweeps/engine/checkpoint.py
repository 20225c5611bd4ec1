"""Checkpoints: the file I/O is :mod:`sce_sweeps.runfiles`' (atomic write, the previous
checkpoint kept, disk-full errors that say how much room is needed); here, the RNG states a
checkpoint carries."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from sce_sweeps.runfiles import CHECKPOINT
from sce_sweeps.runfiles import load_checkpoint as load
from sce_sweeps.runfiles import save_checkpoint as save_atomic

__all__ = ["CHECKPOINT", "load", "rng_state", "save_atomic", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
