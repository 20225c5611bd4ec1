import math

import pytest
import torch
import torch.nn.functional as F

from sce_sweeps.sce import sce_loss, sce_terms


def naive_sce(z1, z2, queue, coeff, temp, temp_m):
    """The SCE loss written term by term from the paper's equations."""
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(n):
        if queue is None:
            keys = [z2[k] for k in range(n)]
            pos = i
        else:
            keys = [z2[i]] + [F.normalize(q, dim=0) for q in queue]
            pos = 0
        s_den = sum(math.exp(float(z2[i] @ keys[j]) / temp_m) for j in range(len(keys)) if j != pos)
        p_den = sum(math.exp(float(z1[i] @ keys[j]) / temp) for j in range(len(keys)))
        for k in range(len(keys)):
            s2 = 0.0 if k == pos else math.exp(float(z2[i] @ keys[k]) / temp_m) / s_den
            w2 = coeff * (k == pos) + (1 - coeff) * s2
            p1 = math.exp(float(z1[i] @ keys[k]) / temp) / p_den
            total -= w2 * math.log(p1)
    return total / n


@pytest.mark.parametrize("coeff", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("queue_size", [0, 7])
def test_matches_naive_loop(coeff, queue_size):
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    queue = torch.randn(queue_size, 4, generator=g, dtype=torch.float64) if queue_size else None
    got = sce_loss(z1, z2, queue, coeff=coeff, temp=0.2, temp_m=0.07)
    assert got.item() == pytest.approx(naive_sce(z1, z2, queue, coeff, 0.2, 0.07), rel=1e-9)


def test_coeff_one_is_moco_infonce():
    g = torch.Generator().manual_seed(1)
    z1, z2, queue = (
        torch.randn(8, 16, generator=g),
        torch.randn(8, 16, generator=g),
        torch.randn(32, 16, generator=g),
    )
    q, k, queue_n = F.normalize(z1, dim=1), F.normalize(z2, dim=1), F.normalize(queue, dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue_n.T], dim=1) / 0.1  # N x (1+K)
    infonce = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    assert sce_loss(z1, z2, queue, coeff=1.0, temp=0.1, temp_m=0.05).item() == pytest.approx(
        infonce.item(), rel=1e-5
    )


def test_coeff_zero_is_purely_relational():
    g = torch.Generator().manual_seed(2)
    z1, z2, queue = (
        torch.randn(4, 8, generator=g),
        torch.randn(4, 8, generator=g),
        torch.randn(10, 8, generator=g),
    )
    terms = sce_terms(z1, z2, queue, coeff=0.0)
    assert torch.all(terms.w2[terms.positive] == 0)
    assert torch.allclose(terms.w2.sum(1), torch.ones(4))


def test_no_gradient_reaches_target_or_queue():
    z1 = torch.randn(6, 8, requires_grad=True)
    z2 = torch.randn(6, 8, requires_grad=True)
    queue = torch.randn(12, 8, requires_grad=True)
    sce_loss(z1, z2, queue).backward()
    assert z1.grad is not None and z1.grad.abs().sum() > 0
    assert z2.grad is None and queue.grad is None


@pytest.mark.parametrize("queue_size", [0, 16])
def test_loss_decreases_under_gradient_steps(queue_size):
    torch.manual_seed(3)
    z1 = torch.randn(16, 8, requires_grad=True)
    z2 = torch.randn(16, 8)
    queue = torch.randn(queue_size, 8) if queue_size else None
    opt = torch.optim.SGD([z1], lr=0.5)
    first = None
    for _ in range(50):
        loss = sce_loss(z1, z2, queue)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coeff": 1.5}, "coeff"),
        ({"coeff": -0.1}, "coeff"),
        ({"temp": 0.0}, "temp"),
        ({"temp_m": -1.0}, "temp_m"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sce_loss(torch.randn(4, 8), torch.randn(4, 8), None, **kwargs)


def test_invalid_shapes():
    with pytest.raises(ValueError, match="N x D"):
        sce_loss(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="queue"):
        sce_loss(torch.randn(4, 8), torch.randn(4, 8), torch.randn(10, 7))
    with pytest.raises(ValueError, match="at least 2"):
        sce_loss(torch.randn(1, 8), torch.randn(1, 8), None)
