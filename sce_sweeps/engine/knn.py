"""Weighted kNN evaluation of frozen features (Wu et al., 2018; k=200, T=0.1 by default),
and the same kNN on raw pixels: the baseline a learned representation has to beat."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def extract_features(
    backbone: nn.Module, loader: DataLoader, device: torch.device
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
def knn_predict(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temp: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class scores (Q x C) of each query: sum over its k nearest bank features of exp(sim/T)."""
    k = min(k, bank.shape[0])
    scores = []
    for q in queries.split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # Q x k
        weights = (sim / temp).exp()
        one_hot = F.one_hot(bank_labels[idx], num_classes).to(weights.dtype)  # Q x k x C
        scores.append((weights.unsqueeze(-1) * one_hot).sum(dim=1))
    return torch.cat(scores)


def knn_accuracy(
    backbone: nn.Module,
    bank_loader: DataLoader,
    query_loader: DataLoader,
    num_classes: int,
    device: torch.device,
    k: int = 200,
    temp: float = 0.1,
) -> float:
    """Top-1 accuracy (%) of weighted kNN: train split as the bank, test split as queries."""
    bank, bank_labels = extract_features(backbone, bank_loader, device)
    queries, labels = extract_features(backbone, query_loader, device)
    pred = knn_predict(queries, bank, bank_labels, num_classes, k, temp).argmax(dim=1)
    return float((pred == labels).float().mean() * 100)


def pixel_features(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-pixel baseline's features: each image of a loader (after its eval transform:
    the same resize and normalisation the network sees) flattened and L2-normalised."""
    feats, labels = [], []
    for x, y in loader:
        feats.append(F.normalize(x.flatten(1).float(), dim=1))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def _cache_dir() -> Path:
    return Path(os.environ.get("SCE_SWEEPS_CACHE") or Path.home() / ".cache" / "sce_sweeps")


def pixel_knn_accuracy(
    bank_loader: DataLoader,
    query_loader: DataLoader,
    num_classes: int,
    k: int = 200,
    temp: float = 0.1,
    cache: bool = True,
) -> float:
    """Top-1 accuracy (%) of the same weighted kNN on raw pixels: the baseline a learned
    representation has to beat.

    It depends only on the images, so it is computed once per bank and query set: the result
    is cached under ``$SCE_SWEEPS_CACHE`` (default ``~/.cache/sce_sweeps``), keyed by a
    hash of the pixels, the labels, k, T and the number of classes. Every run of a sweep
    (and of any sweep on the same data) then reads it in well under a second.
    """
    bank, bank_labels = pixel_features(bank_loader)
    queries, labels = pixel_features(query_loader)
    digest = hashlib.sha256(f"{k}:{temp}:{num_classes}".encode())
    for t in (bank, bank_labels, queries, labels):
        digest.update(t.contiguous().numpy().tobytes())
    path = _cache_dir() / "knn_pixels" / f"{digest.hexdigest()[:32]}.json"
    if cache and path.exists():
        with contextlib.suppress(OSError, ValueError, KeyError):
            return float(json.loads(path.read_text())["knn_top1_pixels"])
    pred = knn_predict(queries, bank, bank_labels, num_classes, k, temp).argmax(dim=1)
    top1 = float((pred == labels).float().mean() * 100)
    if cache:
        with contextlib.suppress(OSError):  # a read-only home only costs the recomputation
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"knn_top1_pixels": top1, "k": k, "temp": temp}))
            os.replace(tmp, path)
    return top1
