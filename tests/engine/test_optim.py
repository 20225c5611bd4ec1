import pytest
import torch

from sce_sweeps.engine.optim import LARS, build_optimizer, lr_at


def test_warmup_then_cosine():
    """The official schedule (CEA-LIST/SCE sce/schedulers/linear_warmup_cosine_annealing_lr.py,
    warmup_start_lr 0, per step): 0 at the first step, linear to the base rate at the last
    warm-up step, then cosine to 0."""
    assert lr_at(0, 100, 10, 1.0) == 0.0
    assert lr_at(1, 100, 10, 1.0) == pytest.approx(1 / 9)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    cosine = [lr_at(s, 100, 10, 1.0) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(cosine, cosine[1:]))


def _named():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    return model, list(model.named_parameters())


@pytest.mark.parametrize("name", ["sgd", "lars"])
def test_bias_and_norm_are_not_decayed(name):
    _, named = _named()
    opt = build_optimizer(named, name, lr=0.1, momentum=0.9, weight_decay=0.5)
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    assert len(decayed) == 1 and all(p.ndim == 2 for p in decayed[0]["params"])
    if name == "lars":
        assert isinstance(opt, LARS)
        assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]


def test_lars_step_scales_by_trust_ratio():
    w = torch.nn.Parameter(torch.ones(2, 2) * 3.0)
    w.grad = torch.ones(2, 2)
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0, trust_coefficient=0.01)
    opt.step()
    # ||w|| = 6, ||g|| = 2: update = 0.01 * 6 / 2 * g = 0.03
    assert torch.allclose(w, torch.full((2, 2), 2.97))


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(_named()[1], "adam", 0.1, 0.9, 0.0)


@pytest.mark.parametrize("name", ["sgd", "lars"])
def test_decay_on_all_parameters_when_not_excluded(name):
    # official CIFAR-10: SGD weight decay on every parameter, biases and BatchNorm included
    model, named = _named()
    opt = build_optimizer(
        named, name, lr=0.1, momentum=0.0, weight_decay=0.5, exclude_bias_norm=False
    )
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.5
    assert len(opt.param_groups[0]["params"]) == len(named)
    bn_weight = model[1].weight
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    if name == "sgd":  # zero gradient: only the decay moves the BN weight, 1 - 0.1 * 0.5
        assert torch.allclose(bn_weight, torch.full_like(bn_weight, 0.95))
    else:  # LARS scales the decay by the trust ratio too
        assert (bn_weight < 1).all()
