"""The baselines of a run's evaluation, computed by the same code as its metrics: the same
network at random initialisation, and raw pixels (``trainer.eval_random_init``).

Both are evaluated once the run has trained, so they never delay its first step, and both
are cached, since they do not depend on what a sweep varies:

- **random init**: the runs of a sweep over the loss (λ, τ, τ_m, queue size) start from the
  same network on the same data. The first run to finish evaluates it and stores it in the
  sweep dir as ``.baselines/<key>.json``; the others read it. The key hashes what the number
  depends on: the backbone's initial weights and buffers (so seed, architecture, width, stem
  and channels), the dataset config (without ``num_workers``), the crop size of the
  evaluation transform, the evaluation's settings and the device type;
- **raw pixels**: cached per data under ``$SCE_SWEEPS_CACHE/baselines_pixels/`` (default
  ``~/.cache/sce_sweeps``), keyed by a hash of the pixels, the labels and the evaluation's
  settings, so every run of every sweep on the same data reads it.

Runs that miss an entry at the same moment take turns on a lock beside it: one evaluates,
the others read what it wrote. A cache that cannot be read or written only costs the
evaluation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sce_sweeps.data.datasets import cache_dir
from sce_sweeps.engine.knn import feature_metrics, pixel_features
from sce_sweeps.runtime.record import locked, write_json_atomic

#: The folder of the random-init cache in a sweep dir.
CACHE = ".baselines"


def evaluation_settings(cfg: Any) -> list[Any]:
    """What an evaluation's numbers depend on beyond the features: kNN's k and T, and
    whether the linear probe runs."""
    t = cfg.trainer
    return [t.knn_k, t.knn_temp, bool(t.linear_probe)]


def init_key(backbone: nn.Module, cfg: Any, device: torch.device) -> str:
    """What the random-init metrics of ``backbone`` depend on, hashed."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("num_workers", None)
    evaluation = [cfg.aug.crop_size, *evaluation_settings(cfg), device.type]
    digest = hashlib.sha256(json.dumps([dataset, evaluation], sort_keys=True).encode())
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def pixel_key(tensors: list[torch.Tensor], settings: list[Any]) -> str:
    """What the raw-pixel metrics depend on, hashed: the pixels, the labels, the settings."""
    digest = hashlib.sha256(json.dumps(settings).encode())
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def _read(path: Path) -> dict[str, float] | None:
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    return None


def cached_metrics(path: Path, evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The metrics stored at ``path``, or ``evaluate()``'s, stored there atomically;
    evaluated once among concurrent callers."""
    path = Path(path)
    if (entry := _read(path)) is not None:
        return entry
    with contextlib.ExitStack() as turn:
        with contextlib.suppress(OSError):  # a cache dir that cannot be written: no turns
            path.parent.mkdir(parents=True, exist_ok=True)
            turn.enter_context(locked(path.with_name(f".{path.name}.lock")))
        if (entry := _read(path)) is not None:  # another run evaluated it meanwhile
            return entry
        metrics = evaluate()
        with contextlib.suppress(OSError):
            write_json_atomic(metrics, path)
    return metrics


def pixel_metrics(
    bank_loader: Iterable,
    query_loader: Iterable,
    num_classes: int,
    k: int,
    temp: float,
    linear_probe: bool,
    cache: bool = True,
) -> dict[str, float]:
    """The evaluation of raw pixels (:func:`~sce_sweeps.engine.knn.pixel_features`), the
    same as a network's: ``knn_top1_pixels`` (and ``probe_top1_pixels``), cached per data."""
    train, test = pixel_features(bank_loader), pixel_features(query_loader)

    def evaluate() -> dict[str, float]:
        metrics = feature_metrics(train, test, num_classes, k, temp, linear_probe)
        return {f"{name}_pixels": value for name, value in metrics.items()}

    if not cache:
        return evaluate()
    key = pixel_key([*train, *test], [k, temp, num_classes, linear_probe])
    return cached_metrics(cache_dir() / "baselines_pixels" / f"{key}.json", evaluate)
