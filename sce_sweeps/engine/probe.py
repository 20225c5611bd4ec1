"""A linear probe (``trainer.linear_probe``): a linear classifier fitted on the kNN bank's
standardised features, in seconds, for the network, its random initialisation and raw pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
