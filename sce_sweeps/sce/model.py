"""The SCE model: online encoder, momentum target, FIFO queue (after MoCo's builder)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from sce_sweeps.sce.loss import SCETerms, loss_from_terms, sce_terms

_RESNETS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet50": (Bottleneck, [3, 4, 6, 3])}


def resnet(
    arch: str = "resnet18", width: int = 64, cifar_stem: bool = False, in_channels: int = 3
) -> tuple[nn.Sequential, int]:
    """A torchvision ResNet trunk (no fc) with a configurable width and stem.

    With width=64 and cifar_stem=False it is torchvision's ``resnet18``/``resnet50`` without
    its classifier, built from torchvision's own blocks and initialised the same way.

    Returns:
        The trunk mapping B x C x H x W to B x F features, and F.
    """
    block, layers = _RESNETS[arch]
    if cifar_stem:  # 3x3 conv1 stride 1, no max-pool
        stem = [
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        ]
    else:
        stem = [
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        ]
    stages, inplanes = [], width
    for i, num_blocks in enumerate(layers):
        planes, stride = width * 2**i, 1 if i == 0 else 2
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(inplanes, planes, stride, downsample)]
        inplanes = planes * block.expansion
        blocks += [block(inplanes, planes) for _ in range(1, num_blocks)]
        stages.append(nn.Sequential(*blocks))
    trunk = nn.Sequential(*stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return trunk, inplanes


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2) -> nn.Sequential:
    """Linear-BN-ReLU hidden layers, then a linear output layer."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def momentum_at(step: int, total_steps: int, initial_momentum: float, schedule: str) -> float:
    """EMA momentum: constant, or m = 1 - (1 - m0)(cos(pi step / total) + 1) / 2."""
    if schedule == "constant" or total_steps <= 0:
        return initial_momentum
    return 1.0 - (1.0 - initial_momentum) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


class SCEModel(nn.Module):
    """Online encoder (backbone, projector, optional predictor) and its momentum target.

    Args:
        backbone: trunk mapping images to B x F features.
        feature_dim: F.
        proj_hidden_dim, proj_output_dim, proj_num_layers: the projector MLP.
        pred_hidden_dim: hidden width of the predictor MLP; 0 for no predictor.
        queue_size: K, number of target outputs kept as keys; 0 for no queue.
        coeff, temp, temp_m: lambda, tau and tau_m of :func:`sce_loss`.
        sym: symmetrise the loss over the two global views.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        proj_hidden_dim: int = 512,
        proj_output_dim: int = 128,
        proj_num_layers: int = 2,
        pred_hidden_dim: int = 0,
        queue_size: int = 4096,
        coeff: float = 0.5,
        temp: float = 0.1,
        temp_m: float = 0.05,
        sym: bool = False,
    ) -> None:
        super().__init__()
        self.coeff, self.temp, self.temp_m, self.sym = coeff, temp, temp_m, sym
        self.backbone = backbone
        self.projector = mlp(feature_dim, proj_hidden_dim, proj_output_dim, proj_num_layers)
        self.predictor = (
            mlp(proj_output_dim, pred_hidden_dim, proj_output_dim) if pred_hidden_dim else None
        )
        self.momentum_backbone = copy.deepcopy(backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in self.target_parameters():
            p.requires_grad = False
        self.queue_size = queue_size
        # A persistent buffer: a checkpoint holds the queue, so a resumed run keeps it.
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_output_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def online_parameters(self) -> list[nn.Parameter]:
        modules = [self.backbone, self.projector] + ([self.predictor] if self.predictor else [])
        return [p for m in modules for p in m.parameters()]

    def target_parameters(self) -> list[nn.Parameter]:
        return [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online (parameters; buffers copied)."""
        online = [*self.backbone.parameters(), *self.projector.parameters()]
        torch._foreach_lerp_(self.target_parameters(), online, 1.0 - momentum)
        online_buffers = [*self.backbone.buffers(), *self.projector.buffers()]
        target_buffers = [*self.momentum_backbone.buffers(), *self.momentum_projector.buffers()]
        for t, o in zip(target_buffers, online_buffers):
            t.copy_(o)

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write keys (B x D) into the FIFO queue, wrapping around its end."""
        if self.queue_size == 0:
            return
        keys = keys[-self.queue_size :]
        ptr = int(self.queue_ptr)
        idx = (torch.arange(keys.shape[0], device=keys.device) + ptr) % self.queue_size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + keys.shape[0]) % self.queue_size)

    def online(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.backbone(x))
        return self.predictor(z) if self.predictor is not None else z

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1)

    def branches(
        self, views: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[int, int]]]:
        """The online outputs, the target outputs and the (online, target) index pairs that
        the loss matches, for the views [view0, view1, *local crops] (see :meth:`forward`)."""
        targets = [self.target(views[0])] + ([self.target(views[1])] if self.sym else [])
        online = [self.online(v) for v in views[1:]] + ([self.online(views[0])] if self.sym else [])
        pairs = [(0, 0)] + [(i, 0) for i in range(1, len(views) - 1)]
        if self.sym:
            pairs += [(len(online) - 1, 1)] + [(i, 1) for i in range(1, len(views) - 1)]
        return online, targets, pairs

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, SCETerms]:
        """Loss over the views [view0, view1, *local crops] of one batch.

        view0 feeds the target and view1 the online branch; local crops are online only and
        are matched to the target of each global view. With ``sym`` the two global views swap
        roles too. The terms are averaged. The queue is updated with view0's targets after
        the loss.

        Returns:
            The loss and the terms of the first (view1 -> view0) pair, for diagnostics.
        """
        online, targets, pairs = self.branches(views)
        queue = self.queue.clone() if self.queue_size else None
        terms = [
            sce_terms(online[o], targets[t], queue, self.coeff, self.temp, self.temp_m)
            for o, t in pairs
        ]
        loss = torch.stack([loss_from_terms(x) for x in terms]).mean()
        self.dequeue_and_enqueue(targets[0])
        return loss, terms[0]
