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
    """The CPU, Python and NumPy generators' states and one state per visible CUDA device
    (none on a CPU-only machine)."""
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cuda": [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states. CUDA devices get the saved states of as many
    devices as both the checkpoint and this machine have: a run requeued onto a node with
    fewer (or no) visible GPUs resumes, its extra devices' states are dropped."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    for index, cuda_state in enumerate(state.get("cuda", [])[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(cuda_state, index)
