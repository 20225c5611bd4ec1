"""The SCE model: online encoder, momentum target, FIFO queue (after MoCo's builder)."""

from __future__ import annotations

import copy
import math
from typing import Any

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


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    last_bias: bool = True,
    last_bn: bool = False,
) -> nn.Sequential:
    """Linear-BN-ReLU hidden layers, then a linear output layer.

    Args:
        in_dim, hidden_dim, out_dim: widths of the input, hidden and output layers.
        num_layers: number of Linear layers (>= 1).
        last_bias: give the output Linear a bias (the official ImageNet heads have none).
        last_bn: follow the output Linear by a BatchNorm1d without affine parameters (the
            official ImageNet projector).
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=last_bias))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


class SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises each of ``num_splits`` contiguous chunks of
    the batch with its own statistics, as if each chunk ran on its own device. This is how
    MoCo's shuffle BN is simulated on one device (official SCE CIFAR-10: 8 devices). Running
    statistics are updated per chunk and averaged. ``num_splits=1`` is a plain BatchNorm2d.
    """

    def __init__(self, num_features: int, num_splits: int, **kw: Any) -> None:
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.num_splits
        if s == 1 or not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % s:
            raise ValueError(f"split BatchNorm: batch of {n} is not divisible by {s} splits")
        # N x C x H x W -> N/s x (s*C) x H x W, chunk j in channels [j*C, (j+1)*C)
        xs = x.view(s, n // s, c, h, w).transpose(0, 1).reshape(n // s, s * c, h, w)
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        weight = self.weight.repeat(s) if self.affine else None
        bias = self.bias.repeat(s) if self.affine else None
        momentum = 0.1 if self.momentum is None else self.momentum
        out = F.batch_norm(xs, mean, var, weight, bias, True, momentum, self.eps)
        self.running_mean.copy_(mean.view(s, c).mean(0))
        self.running_var.copy_(var.view(s, c).mean(0))
        self.num_batches_tracked.add_(1)
        return out.view(n // s, s, c, h, w).transpose(0, 1).reshape(n, c, h, w)


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d of ``module`` by a :class:`SplitBatchNorm2d` sharing its
    parameters and buffers (names and state_dict keys are unchanged)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(
                child.num_features,
                num_splits,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            if child.affine:
                split.weight, split.bias = child.weight, child.bias
            split.running_mean, split.running_var = child.running_mean, child.running_var
            split.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, split)
        else:
            convert_split_bn(child, num_splits)
    return module


def momentum_at(step: int, total_steps: int, initial_momentum: float, schedule: str) -> float:
    """EMA momentum: constant, or m = 1 - (1 - m0)(cos(pi step / total) + 1) / 2."""
    if schedule == "constant" or total_steps <= 0:
        return initial_momentum
    return 1.0 - (1.0 - initial_momentum) * (math.cos(math.pi * step / total_steps) + 1.0) / 2.0


TARGET_BN = ("standard", "shuffle")


class SCEModel(nn.Module):
    """Online encoder (backbone, projector, optional predictor) and its momentum target.

    Args:
        backbone: trunk mapping images to B x F features.
        feature_dim: F.
        proj_hidden_dim, proj_output_dim, proj_num_layers: the projector MLP.
        proj_last_bias, proj_last_bn: bias of the projector's last Linear, and a
            BatchNorm1d(affine=False) after it (see :func:`mlp`).
        pred_hidden_dim: hidden width of the predictor MLP; 0 for no predictor.
        pred_last_bias: bias of the predictor's last Linear.
        queue_size: K, number of target outputs kept as keys; 0 for no queue.
        coeff, temp, temp_m: lambda, tau and tau_m of :func:`sce_loss`.
        sym: symmetrise the loss over the two global views.
        target_bn: BatchNorm of the momentum branch: ``standard`` (the batch as it is) or
            ``shuffle`` (MoCo's shuffle BN: the target batch is shuffled, normalised in groups
            and unshuffled; in one process the groups are ``target_bn_splits`` chunks of split
            BN, see :meth:`shuffle_batch`).
        target_bn_splits: number of simulated devices of ``shuffle`` in one process.

    Multi-process training replaces two methods: :meth:`gather_keys` (all-gather target keys
    across ranks, in rank order, before they enter the queue) and the pair
    :meth:`shuffle_batch` / :meth:`unshuffle_batch` (shuffle across ranks; then
    ``set_target_bn_splits(1)``, each rank being one BN group).
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
        proj_last_bias: bool = True,
        proj_last_bn: bool = False,
        pred_last_bias: bool = True,
        target_bn: str = "standard",
        target_bn_splits: int = 8,
    ) -> None:
        super().__init__()
        if target_bn not in TARGET_BN:
            raise ValueError(f"target_bn must be one of {', '.join(TARGET_BN)}, got {target_bn!r}")
        if target_bn_splits < 1:
            raise ValueError(f"target_bn_splits must be >= 1, got {target_bn_splits}")
        self.coeff, self.temp, self.temp_m, self.sym = coeff, temp, temp_m, sym
        self.target_bn = target_bn
        self.backbone = backbone
        self.projector = mlp(
            feature_dim,
            proj_hidden_dim,
            proj_output_dim,
            proj_num_layers,
            last_bias=proj_last_bias,
            last_bn=proj_last_bn,
        )
        self.predictor = (
            mlp(proj_output_dim, pred_hidden_dim, proj_output_dim, last_bias=pred_last_bias)
            if pred_hidden_dim
            else None
        )
        # The target starts as a copy of the online networks, as eztorch
        # (eztorch/models/siamese/momentum_base.py: load_state_dict of the trunk and projector).
        # CEA-LIST/SCE's CIFAR code instantiates them independently instead
        # (sce/models/siamese/momentum_base.py), a first target unrelated to the online branch
        # that the EMA (momentum 0.99) forgets within a few hundred steps.
        self.momentum_backbone = copy.deepcopy(backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        if target_bn == "shuffle":
            # as the official code: the momentum trunk's BatchNorm2d layers are split
            convert_split_bn(self.momentum_backbone, target_bn_splits)
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

    def set_target_bn_splits(self, num_splits: int) -> None:
        """Set the number of split-BN groups of the momentum trunk (``target_bn=shuffle``)."""
        for m in self.momentum_backbone.modules():
            if isinstance(m, SplitBatchNorm2d):
                m.num_splits = num_splits

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

    def gather_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """The keys of all processes (N x D -> world*N x D, rank order); one process: keys."""
        return keys

    @torch.no_grad()
    def shuffle_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffle the target batch for shuffle BN; returns it and the unshuffling index."""
        perm = torch.randperm(x.shape[0]).to(x.device)
        return x[perm], torch.argsort(perm)

    @torch.no_grad()
    def unshuffle_batch(self, z: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`shuffle_batch` on the target outputs."""
        return z[unshuffle]

    def online(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projector(self.backbone(x))
        return self.predictor(z) if self.predictor is not None else z

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised target outputs of a batch (momentum trunk and projector)."""
        if self.target_bn == "shuffle":
            x, unshuffle = self.shuffle_batch(x)
        z = self.momentum_projector(self.momentum_backbone(x))
        if self.target_bn == "shuffle":
            z = self.unshuffle_batch(z, unshuffle)
        return F.normalize(z, dim=1)

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
        roles too. The terms are averaged. After the loss, the queue takes the targets of
        every global view that has one: view0's (N keys), and with ``sym`` view1's too (2N
        keys: [view0's, view1's], each gathered over processes by :meth:`gather_keys`), as
        the official code does.

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
        self.dequeue_and_enqueue(torch.cat([self.gather_keys(t) for t in targets]))
        return loss, terms[0]


def build_model(cfg: Any) -> SCEModel:
    """The SCE model of a run config (``model``, ``loss`` and ``dataset.in_channels``)."""
    m = cfg.model
    backbone, feature_dim = resnet(m.arch, m.width, m.cifar_stem, cfg.dataset.in_channels)
    return SCEModel(
        backbone,
        feature_dim,
        proj_hidden_dim=m.proj_hidden_dim,
        proj_output_dim=m.proj_output_dim,
        proj_num_layers=m.proj_num_layers,
        pred_hidden_dim=m.pred_hidden_dim,
        queue_size=cfg.loss.queue_size,
        coeff=cfg.loss.coeff,
        temp=cfg.loss.temp,
        temp_m=cfg.loss.temp_m,
        sym=cfg.loss.sym,
        proj_last_bias=m.proj_last_bias,
        proj_last_bn=m.proj_last_bn,
        pred_last_bias=m.pred_last_bias,
        target_bn=m.target_bn,
        target_bn_splits=m.target_bn_splits,
    )
