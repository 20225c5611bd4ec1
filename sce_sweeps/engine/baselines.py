"""The kNN top-1 of the network at random initialisation, evaluated once per sweep.

The runs of a sweep over the loss (λ, τ, τ_m, queue size) start from the same network on
the same data, so their random-init kNN top-1 (``trainer.eval_random_init``) is the same
number. The first run to need it evaluates it and stores it in the sweep dir, as
``.knn_init/<key>.json``; the other runs read it. The key hashes what the number depends on:
the backbone's initial weights and buffers (so seed, architecture, width, stem and channels),
the dataset config (without ``num_workers``), the crop size of the evaluation transform, k,
T and the device type. Concurrent runs that both miss it both evaluate it and write the same
value atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

#: The folder of the cache in a sweep dir.
CACHE = ".knn_init"


def init_key(backbone: nn.Module, cfg: Any, device: torch.device) -> str:
    """What the random-init kNN top-1 of ``backbone`` depends on, hashed."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("num_workers", None)
    evaluation = [cfg.aug.crop_size, cfg.trainer.knn_k, cfg.trainer.knn_temp, device.type]
    digest = hashlib.sha256(json.dumps([dataset, evaluation], sort_keys=True).encode())
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def cached_init_knn(sweep_dir: Path, key: str, evaluate: Callable[[], float]) -> float:
    """The cached value of ``key`` in ``sweep_dir``, or ``evaluate()`` stored there.

    A cache that cannot be read or written only costs the evaluation.
    """
    path = Path(sweep_dir) / CACHE / f"{key}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return float(json.loads(path.read_text())["knn_top1_init"])
    value = evaluate()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"knn_top1_init": value}))
        os.replace(tmp, path)
    return value
