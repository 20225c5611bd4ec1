"""The baselines of an evaluation (``trainer.eval_random_init``): the network at random init,
cached in the sweep dir, and raw pixels, cached per data; a cache error only costs time."""

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

CACHE = ".baselines"  # the random-init cache in a sweep dir


def _digest(settings: Any, tensors: Iterable[torch.Tensor]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def init_key(backbone: nn.Module, cfg: Any, device: torch.device) -> str:
    """What the random-init metrics of ``backbone`` depend on, hashed."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("num_workers", None)
    t = cfg.trainer
    evaluation = [cfg.aug.crop_size, t.knn_k, t.knn_temp, bool(t.linear_probe), device.type]
    state = backbone.state_dict()
    return _digest([dataset, evaluation, list(state)], state.values())


def _read(path: Path) -> dict[str, float] | None:
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        return {k: float(v) for k, v in json.loads(path.read_text()).items()}
    return None


def cached_metrics(path: Path, evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The metrics stored at ``path``, or ``evaluate()``'s, stored there atomically;
    evaluated once among concurrent callers."""
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
) -> dict[str, float]:
    """The evaluation of raw pixels, the same as a network's: ``knn_top1_pixels`` (and
    ``probe_top1_pixels``), cached per data."""
    train, test = pixel_features(bank_loader), pixel_features(query_loader)

    def evaluate() -> dict[str, float]:
        metrics = feature_metrics(train, test, num_classes, k, temp, linear_probe)
        return {f"{name}_pixels": value for name, value in metrics.items()}

    key = _digest([k, temp, num_classes, linear_probe], [*train, *test])
    return cached_metrics(cache_dir() / "baselines_pixels" / f"{key}.json", evaluate)
