"""Evaluation of frozen features: weighted kNN (Wu et al., 2018; k=200, T=0.1 by default) and
the linear probe, for a network's features and for raw pixels alike."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sce_sweeps.engine.probe import linear_probe_top1


@torch.no_grad()
def extract_features(
    backbone: nn.Module, loader: Iterable, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised backbone features (N x F) and labels (N) of a whole loader."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            f = backbone(x)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(y.to(device))
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_top1(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temp: float = 0.1,
) -> float:
    """Top-1 accuracy (%) of weighted kNN of L2-normalised features: each query's class
    scores sum exp(sim/T) over its k nearest bank features."""
    k = min(k, bank.shape[0])
    preds = []
    for q in queries.split(1024):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # Q x k
        weights = (sim / temp).exp()
        one_hot = F.one_hot(bank_labels[idx], num_classes).to(weights.dtype)  # Q x k x C
        preds.append((weights.unsqueeze(-1) * one_hot).sum(dim=1).argmax(dim=1))
    return float((torch.cat(preds) == labels).float().mean() * 100)


def feature_metrics(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    k: int,
    temp: float,
    linear_probe: bool,
) -> dict[str, float]:
    """``knn_top1`` (and ``probe_top1`` with ``linear_probe``) of frozen features, the train
    split as the bank and the test split as queries."""
    metrics = {"knn_top1": knn_top1(*train, *test, num_classes, k, temp)}
    if linear_probe:
        metrics["probe_top1"] = linear_probe_top1(*train, *test, num_classes)
    return metrics


def pixel_features(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-pixel baseline's features: each (eval-transformed) image of a loader,
    flattened and L2-normalised."""
    return extract_features(nn.Flatten(), loader, torch.device("cpu"))
