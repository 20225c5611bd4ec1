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
    """The CPU, Python and NumPy generators' states and, where this process has used CUDA,
    its current device's (one process per GPU: its own device; other devices' contexts are
    not created)."""
    used_cuda = torch.cuda.device_count() > 0 and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cuda": [torch.cuda.get_rng_state()] if used_cuda else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states. The current CUDA device gets the first saved CUDA
    state when this machine has a device: a run requeued onto a node with fewer (or no)
    visible GPUs resumes (checkpoints of earlier versions hold one state per visible device;
    the first is the one of the device their process used)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.device_count() > 0:
        torch.cuda.set_rng_state(cuda[0])
