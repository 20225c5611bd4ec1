import math

import pytest
import torch
import torchvision

from sce_sweeps.sce import SCEModel, momentum_at, resnet


def tiny_model(queue_size=10, **kw):
    backbone, dim = resnet("resnet18", width=4, cifar_stem=True, in_channels=1)
    return SCEModel(
        backbone, dim, proj_hidden_dim=16, proj_output_dim=8, queue_size=queue_size, **kw
    )


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_full_width_trunk_is_torchvision_resnet(arch):
    ours, dim = resnet(arch, width=64, cifar_stem=False)
    ref = getattr(torchvision.models, arch)()
    ref_params = sum(p.numel() for n, p in ref.named_parameters() if not n.startswith("fc."))
    assert sum(p.numel() for p in ours.parameters()) == ref_params
    assert dim == ref.fc.in_features
    assert ours(torch.randn(2, 3, 64, 64)).shape == (2, dim)


def test_cifar_stem_keeps_resolution():
    trunk, _ = resnet("resnet18", width=4, cifar_stem=True)
    first_conv = trunk[0]
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in trunk.modules())


def test_queue_wraps_around_fifo():
    model = tiny_model(queue_size=10)
    first = torch.arange(6 * 8, dtype=torch.float).view(6, 8)
    second = -torch.arange(6 * 8, dtype=torch.float).view(6, 8) - 1
    model.dequeue_and_enqueue(first)
    assert int(model.queue_ptr) == 6
    model.dequeue_and_enqueue(second)
    assert int(model.queue_ptr) == 2  # 12 keys into 10 slots
    assert torch.equal(model.queue[6:10], second[:4])
    assert torch.equal(model.queue[0:2], second[4:6])
    assert torch.equal(model.queue[2:6], first[2:6])


def test_queue_is_in_state_dict_and_target_has_no_grad():
    model = tiny_model()
    assert "queue" in model.state_dict() and "queue_ptr" in model.state_dict()
    assert all(not p.requires_grad for p in model.target_parameters())
    assert all(p.requires_grad for p in model.online_parameters())


def test_momentum_update_is_ema():
    model = tiny_model()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_parameters()]
    model.momentum_update(0.9)
    shifted = [p.detach() for p in [*model.backbone.parameters(), *model.projector.parameters()]]
    for t, b, o in zip(model.target_parameters(), before, shifted):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)


def test_momentum_schedules():
    assert momentum_at(50, 100, 0.99, "constant") == 0.99
    assert momentum_at(0, 100, 0.99, "cosine") == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, "cosine") == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99, "cosine") == pytest.approx(1.0)
    values = [momentum_at(s, 100, 0.99, "cosine") for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("sym, local_crops", [(False, 0), (True, 0), (False, 2), (True, 2)])
def test_forward_views_and_backward(sym, local_crops):
    model = tiny_model(queue_size=16, sym=sym)
    views = [torch.randn(4, 1, 12, 12), torch.randn(4, 1, 12, 12)]
    views += [torch.randn(4, 1, 6, 6) for _ in range(local_crops)]
    loss, terms = model(views)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert terms.w2.shape == (4, 17)
    loss.backward()
    assert all(p.grad is None for p in model.target_parameters())
    assert int(model.queue_ptr) == 4


def test_forward_without_queue_uses_batch_keys():
    model = tiny_model(queue_size=0)
    loss, terms = model([torch.randn(4, 1, 12, 12), torch.randn(4, 1, 12, 12)])
    assert terms.w2.shape == (4, 4) and math.isfinite(loss.item())
