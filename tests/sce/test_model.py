import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from sce_sweeps.sce import SCEModel, SplitBatchNorm2d, convert_split_bn, mlp, momentum_at, resnet


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
    assert int(model.queue_ptr) == (8 if sym else 4)  # with sym: both views' targets


def test_forward_without_queue_uses_batch_keys():
    model = tiny_model(queue_size=0)
    loss, terms = model([torch.randn(4, 1, 12, 12), torch.randn(4, 1, 12, 12)])
    assert terms.w2.shape == (4, 4) and math.isfinite(loss.item())


def test_split_bn_normalises_each_chunk_as_its_own_device():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)
    split = convert_split_bn(nn.Sequential(copy.deepcopy(bn)), num_splits=4)[0]
    assert isinstance(split, SplitBatchNorm2d)
    out = split(x)
    # reference: one BatchNorm per contiguous chunk of 2, as 4 devices would compute
    chunks, means, variances = [], [], []
    for chunk in x.chunk(4):
        device_bn = copy.deepcopy(bn)
        chunks.append(device_bn(chunk))
        means.append(device_bn.running_mean)
        variances.append(device_bn.running_var)
    assert torch.allclose(out, torch.cat(chunks), atol=1e-5)
    assert not torch.allclose(out, copy.deepcopy(bn)(x), atol=1e-3)  # differs from whole-batch BN
    assert torch.allclose(split.running_mean, torch.stack(means).mean(0), atol=1e-6)
    assert torch.allclose(split.running_var, torch.stack(variances).mean(0), atol=1e-6)
    split.eval(), bn.eval()
    split.running_mean.copy_(bn.running_mean), split.running_var.copy_(bn.running_var)
    assert torch.allclose(split(x), bn(x))  # eval: the running statistics, as BatchNorm2d
    split.train()
    with pytest.raises(ValueError, match="not divisible by 4 splits"):
        split(x[:6])


def test_shuffle_bn_target_is_split_bn_of_the_shuffled_batch():
    torch.manual_seed(0)
    model = tiny_model(target_bn="shuffle", target_bn_splits=2)
    plain = tiny_model(target_bn="standard")
    plain.load_state_dict(model.state_dict())  # same keys: split BN shares the names
    x = torch.randn(8, 1, 12, 12)
    torch.manual_seed(1)
    z = model.target(x)
    torch.manual_seed(1)
    perm = torch.randperm(8)
    with torch.no_grad():
        h = torch.cat([plain.momentum_backbone(c) for c in x[perm].chunk(2)])
        expected = nn.functional.normalize(plain.momentum_projector(h), dim=1)[perm.argsort()]
    assert torch.allclose(z, expected, atol=1e-5)
    assert not torch.allclose(z, plain.target(x), atol=1e-3)
    bns = [m for m in model.momentum_backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, SplitBatchNorm2d) for m in bns)
    assert not any(isinstance(m, SplitBatchNorm2d) for m in model.backbone.modules())
    model.set_target_bn_splits(1)  # one BN group per process, as under DDP shuffle BN
    assert all(m.num_splits == 1 for m in bns)


def test_imagenet_heads_last_linear_without_bias_and_projector_bn():
    proj = mlp(32, 64, 16, num_layers=3, last_bias=False, last_bn=True)
    last_linear, last_bn = proj[-2], proj[-1]
    assert isinstance(last_linear, nn.Linear) and last_linear.bias is None
    assert isinstance(last_bn, nn.BatchNorm1d) and not last_bn.affine
    z = proj(torch.randn(64, 32))
    assert torch.allclose(z.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(z.var(0, unbiased=False), torch.ones(16), atol=1e-2)
    model = tiny_model(
        pred_hidden_dim=16, proj_last_bias=False, proj_last_bn=True, pred_last_bias=False
    )
    assert model.projector[-2].bias is None and isinstance(model.projector[-1], nn.BatchNorm1d)
    assert model.predictor[-1].bias is None
    default = tiny_model(pred_hidden_dim=16)  # CIFAR heads: last Linear with bias, no BN
    assert default.projector[-1].bias is not None and default.predictor[-1].bias is not None


def test_sym_enqueues_both_global_views_targets_in_order():
    torch.manual_seed(0)
    model = tiny_model(queue_size=16, sym=True)
    views = [torch.randn(4, 1, 12, 12), torch.randn(4, 1, 12, 12)]
    expected = torch.cat([model.target(views[0]), model.target(views[1])])
    model(views)
    assert int(model.queue_ptr) == 8
    assert torch.allclose(model.queue[:8], expected, atol=1e-6)


def test_gather_keys_hook_feeds_the_queue():
    class TwoRanks(SCEModel):  # as if a second rank held the negated keys
        def gather_keys(self, keys):
            return torch.cat([keys, -keys])

    backbone, dim = resnet("resnet18", width=4, cifar_stem=True, in_channels=1)
    model = TwoRanks(backbone, dim, proj_hidden_dim=16, proj_output_dim=8, queue_size=32, sym=True)
    views = [torch.randn(4, 1, 12, 12), torch.randn(4, 1, 12, 12)]
    t0, t1 = model.target(views[0]), model.target(views[1])
    model(views)
    assert int(model.queue_ptr) == 16
    assert torch.allclose(model.queue[:16], torch.cat([t0, -t0, t1, -t1]), atol=1e-6)


def test_bad_target_bn():
    with pytest.raises(ValueError, match="target_bn must be one of standard, shuffle"):
        tiny_model(target_bn="sync")
