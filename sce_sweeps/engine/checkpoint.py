"""The RNG states a checkpoint carries (its file I/O is the run record's)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """The CPU, Python and NumPy generators' states and, where this process has used CUDA,
    its current device's (no context is created on the others)."""
    used_cuda = torch.cuda.device_count() > 0 and torch.cuda.is_initialized()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cuda": [torch.cuda.get_rng_state()] if used_cuda else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states; the current CUDA device gets the first saved CUDA
    state, if any device: a run requeued onto a node with fewer (or no) GPUs resumes."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda = state.get("cuda", [])
    if cuda and torch.cuda.device_count() > 0:
        torch.cuda.set_rng_state(cuda[0])
