"""The SCE loss (Denize et al., "Similarity Contrastive Estimation", WACV 2023, arXiv 2111.14585).

For online outputs z1 (N x D) and target outputs z2 (N x D), with keys k ranging over the
positive z2_i and a memory queue (MoCo-style), or over the batch's target outputs when there
is no queue:

    s2_ik = 1{i!=k} exp(z2_i.k / temp_m) / sum_j 1{i!=j} exp(z2_i.k_j / temp_m)
    w2_ik = coeff * 1{i=k} + (1 - coeff) * s2_ik
    p1_ik = exp(z1_i.k / temp) / sum_j exp(z1_i.k_j / temp)
    L     = -(1/N) sum_i sum_k w2_ik log p1_ik

The positive is excluded from the target similarities exactly (its logit is -inf), as in the
equation. The official code gives it logit 0 instead, which differs by a negligible amount
with a large queue. coeff=1 is MoCo's InfoNCE; coeff=0 is a purely relational loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class SCETerms(NamedTuple):
    """The distributions of one SCE loss evaluation, each N x K (K keys, positive included)."""

    w2: torch.Tensor  # soft target
    s2: torch.Tensor  # sharpened target similarities (0 on the positive)
    log_p1: torch.Tensor  # online log-prediction
    positive: torch.Tensor  # boolean mask of the positive key


def _check_args(
    z1: torch.Tensor,
    z2: torch.Tensor,
    queue: torch.Tensor | None,
    coeff: float,
    temp: float,
    temp_m: float,
) -> None:
    if not 0.0 <= coeff <= 1.0:
        raise ValueError(f"coeff must be in [0, 1], got {coeff}")
    if temp <= 0:
        raise ValueError(f"temp must be > 0, got {temp}")
    if temp_m <= 0:
        raise ValueError(f"temp_m must be > 0, got {temp_m}")
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be N x D, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if queue is None and z1.shape[0] < 2:
        raise ValueError("without a queue the batch must hold at least 2 samples")
    if queue is not None and (queue.ndim != 2 or queue.shape[1] != z1.shape[1]):
        raise ValueError(f"queue must be K x {z1.shape[1]}, got {tuple(queue.shape)}")


def sce_terms(
    z1: torch.Tensor,
    z2: torch.Tensor,
    queue: torch.Tensor | None = None,
    coeff: float = 0.5,
    temp: float = 0.1,
    temp_m: float = 0.05,
) -> SCETerms:
    """The target and online distributions of SCE. See :func:`sce_loss` for the arguments."""
    _check_args(z1, z2, queue, coeff, temp, temp_m)
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2.detach(), dim=1)
    n = z1.shape[0]
    if queue is None:
        # Keys are the batch's target outputs; the positive of row i is column i.
        sim_q = z1 @ z2.T  # N x N
        sim_k = z2 @ z2.T  # N x N
        positive = torch.eye(n, dtype=torch.bool, device=z1.device)
    else:
        queue = F.normalize(queue.detach(), dim=1)
        # Keys are [positive, queue]; the positive is column 0.
        sim_q = torch.cat([(z1 * z2).sum(1, keepdim=True), z1 @ queue.T], dim=1)  # N x (1+K)
        sim_k = torch.cat([(z2 * z2).sum(1, keepdim=True), z2 @ queue.T], dim=1)  # N x (1+K)
        positive = torch.zeros_like(sim_q, dtype=torch.bool)
        positive[:, 0] = True
    s2 = torch.softmax((sim_k / temp_m).masked_fill(positive, float("-inf")), dim=1)
    w2 = coeff * positive.to(s2.dtype) + (1.0 - coeff) * s2
    log_p1 = torch.log_softmax(sim_q / temp, dim=1)
    return SCETerms(w2=w2, s2=s2, log_p1=log_p1, positive=positive)


def sce_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    queue: torch.Tensor | None = None,
    coeff: float = 0.5,
    temp: float = 0.1,
    temp_m: float = 0.05,
) -> torch.Tensor:
    """SCE loss between online and target outputs.

    Both z1 and z2 are L2-normalised here (the caller need not); z2 and the queue are
    detached, so no gradient reaches the target branch.

    Args:
        z1: online outputs (projector, then predictor if any), N x D.
        z2: target outputs (momentum encoder and projector), N x D.
        queue: K x D earlier target outputs, or None to use the batch's other target outputs
            as keys (the official code's ``use_keys`` mode).
        coeff: lambda, the weight of the one-hot (contrastive) part of the target, in [0, 1].
        temp: tau, temperature of the online distribution, > 0.
        temp_m: tau_m, temperature of the target similarities, > 0.

    Returns:
        The scalar loss, averaged over the batch.

    Raises:
        ValueError: for coeff outside [0, 1], temp <= 0, temp_m <= 0 or mismatched shapes.
    """
    return loss_from_terms(sce_terms(z1, z2, queue, coeff, temp, temp_m))


def loss_from_terms(terms: SCETerms) -> torch.Tensor:
    """The cross-entropy between the soft target w2 and the online prediction, batch mean."""
    return -(terms.w2 * terms.log_p1).sum(dim=1).mean()


@torch.no_grad()
def sce_diagnostics(terms: SCETerms) -> dict[str, float]:
    """Diagnostics of one loss evaluation: the entropy of s2 and the weight on the positive."""
    s2 = terms.s2
    entropy = -(s2 * torch.log(s2.clamp_min(1e-12))).sum(dim=1).mean()
    p1_positive = terms.log_p1[terms.positive].exp().mean()
    return {
        "target_entropy": float(entropy),
        "target_entropy_max": float(torch.log(torch.tensor(float(s2.shape[1] - 1)))),
        "online_positive_prob": float(p1_positive),
        "target_positive_weight": float(terms.w2[terms.positive].mean()),
    }
