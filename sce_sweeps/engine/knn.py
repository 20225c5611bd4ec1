"""Evaluation of frozen features, a network's and raw pixels' alike: weighted kNN (Wu et al.,
2018; k=200, T=0.1 by default) and the linear probe (``trainer.linear_probe``), a linear
classifier fitted in seconds on the standardised features of the kNN bank."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


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


def linear_probe_top1(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 512,
    seed: int = 0,
) -> float:
    """Top-1 (%) on ``test_x`` of a linear classifier fitted on ``train_x`` (N x F, any
    device) with AdamW over ``epochs`` passes, lr cosine to 0: deterministic given ``seed``."""
    device = train_x.device
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    # Every draw on the CPU from the seed's own generator, then moved: the same classifier
    # and batch order on every device (and a CPU generator cannot draw on a CUDA tensor).
    generator = torch.Generator().manual_seed(seed)
    classifier = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        classifier.weight.normal_(0, 0.01, generator=generator)
        classifier.bias.zero_()
    classifier = classifier.to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-2, weight_decay=1e-4)
    steps = epochs * -(-len(train_x) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(len(train_x), generator=generator).to(device)
            for idx in order.split(batch_size):
                loss = F.cross_entropy(classifier(train_x[idx]), train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    with torch.no_grad():
        predictions = classifier(test_x).argmax(dim=1)
    return float((predictions == test_y).float().mean() * 100)


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
