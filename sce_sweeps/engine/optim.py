"""Optimizers (SGD, LARS) and the learning-rate schedule (linear warm-up, then cosine)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios (You et al., 2017); groups with
    ``lars_exclude`` (biases, norms) get neither weight decay nor the trust ratio, as in SCE."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        defaults.update(trust_coefficient=trust_coefficient, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if not group["lars_exclude"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.norm(p), torch.norm(d_p)
                    trust = torch.where(
                        (p_norm > 0) & (g_norm > 0),
                        group["trust_coefficient"] * p_norm / g_norm,
                        torch.ones_like(p_norm),
                    )
                    d_p = d_p.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.clone(d_p).detach()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]],
    name: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    trust_coefficient: float = 0.001,
    exclude_bias_norm: bool = True,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """SGD or LARS over the trainable parameters of (name, parameter) pairs; with
    ``exclude_bias_norm`` 1-D ones (biases, norms) get no weight decay (nor LARS's trust ratio),
    else all are decayed (the official CIFAR-10 recipe). ``fused``: torch's fused SGD step."""
    params = [p for _, p in named_params if p.requires_grad]
    groups = [{"params": params, "weight_decay": weight_decay}]
    if exclude_bias_norm:
        groups[0]["params"] = [p for p in params if p.ndim > 1]
        groups.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=fused or None)
    if name == "lars":
        if exclude_bias_norm:
            groups[1]["lars_exclude"] = True
        return LARS(groups, lr=lr, momentum=momentum, trust_coefficient=trust_coefficient)
    raise ValueError(f"unknown optimizer {name!r}: expected sgd or lars")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """Linear warm-up from 0 to base_lr, then cosine decay to 0, per step: the official
    schedule (CEA-LIST/SCE sce/schedulers/linear_warmup_cosine_annealing_lr.py)."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps - 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
