"""Lines that used to run only on CUDA, run here on the CPU: random draws that must not depend
on the device, the checkpoint's CUDA generator states, the data path of the official presets
on a CUDA device, and the linear stage's own protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch.overrides import TorchFunctionMode

from sce_sweeps.app import CONF_DIR
from sce_sweeps.data.device import use_device_path
from sce_sweeps.engine import checkpoint as ckpt
from sce_sweeps.engine.knn import linear_probe_top1
from sce_sweeps.runtime import record
from tests.support import compose


def _features(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 16, generator=g) * 3
    train_y = torch.randint(0, 4, (200,), generator=g)
    test_y = torch.randint(0, 4, (100,), generator=g)
    train_x = centres[train_y] + torch.randn(200, 16, generator=g)
    test_x = centres[test_y] + torch.randn(100, 16, generator=g)
    return train_x, train_y, test_x, test_y


class OffCPUDrawError(AssertionError):
    """A random draw into a tensor that is not on the CPU."""


class RandomDrawsOnCPU(TorchFunctionMode):
    """Fails every random draw whose result is not on the CPU. A draw on the device depends on
    the device's generator (and a CPU generator given to a CUDA draw raises: "Expected a
    'cuda' device type for generator but found 'cpu'"); a draw on the CPU, then moved, is the
    same on every device. Run with tensors on the ``meta`` device, which every torch build
    has, it finds the draws that a GPU run would make on the GPU."""

    DRAWS = {"normal_", "uniform_", "randperm", "randn", "rand", "randint", "bernoulli_",
             "random_", "multinomial", "normal", "rand_like", "randn_like"}  # fmt: skip

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in self.DRAWS and isinstance(out, torch.Tensor) and out.device.type != "cpu":
            raise OffCPUDrawError(f"{name} drew on {out.device} (generator: {kwargs})")
        return out


def test_linear_probe_draws_on_the_cpu_whatever_the_features_device():
    """Features on a device other than the CPU (``meta``: shapes only) go through the whole
    probe, its draws (initial weights, batch order) made on the CPU and moved, up to the
    final read-back of the accuracy, which ``meta`` cannot give."""
    train_x, train_y, test_x, test_y = (t.to("meta") for t in _features())
    with RandomDrawsOnCPU(), pytest.raises(RuntimeError, match="item\\(\\) cannot be called"):
        linear_probe_top1(train_x, train_y, test_x, test_y, 4, epochs=2, batch_size=64)


def test_linear_probe_draws_are_those_of_the_seed():
    """The classifier's initial weights and the batch order come from the seed alone: the same
    accuracy whatever the global generators."""
    args = (*_features(), 4)
    first = linear_probe_top1(*args, epochs=2, batch_size=32, seed=3)
    torch.manual_seed(123)
    assert linear_probe_top1(*args, epochs=2, batch_size=32, seed=3) == first
    assert first > 50


def test_linear_classifier_initialisation_is_drawn_on_the_cpu():
    """The linear stage's classifier starts from the same weights on every device: drawn from
    the seed on the CPU, then moved to the trunk's device."""
    from sce_sweeps.engine.linear import build_probe

    cfg = compose("trainer.device=cpu", validate=True)
    cpu = build_probe(cfg, None).classifier.weight
    assert cpu.std().item() == pytest.approx(0.01, rel=0.2)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # untyped: meta is no device of the schema
    cfg.trainer.device = "meta"
    with RandomDrawsOnCPU():
        meta = build_probe(cfg, None).classifier.weight
    assert meta.device.type == "meta" and meta.shape == cpu.shape


def test_resume_on_a_node_with_fewer_gpus_restores_the_states_it_can(monkeypatch):
    """A checkpoint holding the states of 4 GPUs resumes on a node with fewer (here none):
    only the current device's state is restored, where the node has a device. CUDA is marked
    initialised so that torch sets a state at once (as on a GPU node) instead of queueing it
    for CUDA's initialisation, which never comes on the CPU; setting device 0's state here
    raises IndexError, as setting device 3's on a node of 2 GPUs does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    state = ckpt.rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(4)]
    expected = torch.rand(3)
    torch.set_rng_state(state["torch"])
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected)
    assert ckpt.rng_state()["cuda"] == []  # no device: no CUDA state saved


PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
OFFICIAL = [p for p in PRESETS if p not in ("demo", "none")]


def test_the_official_presets_are_all_checked():
    assert {"cifar10", "cifar100", "stl10", "tiny_imagenet", "imagenet"} <= set(OFFICIAL)


@pytest.mark.parametrize("preset", OFFICIAL)
def test_official_presets_keep_their_pipeline_on_cuda(preset):
    """The official CIFAR recipe augments with PIL transforms in CPU DataLoader workers
    (CEA-LIST/SCE sce/configs/transform/multi_crop_transform/
    two_crops_soft_and_strong_pil_contrastive_cifar10.yaml): its presets pin that pipeline,
    so a GPU does not swap it for the batched one. The ImageNet presets read image folders,
    which stay on the CPU loader."""
    cfg = compose(f"experiment={preset}", validate=True)
    assert not use_device_path(cfg.trainer.data_path, cfg.dataset.name, torch.device("cuda"))
    if cfg.dataset.name != "image_folder" or preset == "tiny_imagenet":
        assert cfg.trainer.data_path == "cpu" and cfg.aug.blur_type == "pil"
        # the batched path stays one override away
        cfg = compose(f"experiment={preset}", "trainer.data_path=device", validate=True)
        assert use_device_path(cfg.trainer.data_path, cfg.dataset.name, torch.device("cuda"))


def _run_dir_of(tmp_path, *overrides: str):
    cfg = compose(*overrides, validate=True)
    record.save_checkpoint(
        {"config": OmegaConf.to_container(cfg, resolve=True)}, tmp_path / record.CHECKPOINT
    )
    return tmp_path


def test_linear_stage_takes_the_runs_own_protocol(tmp_path):
    """``python -m sce_sweeps.cli linear RUN_DIR`` of an ImageNet run evaluates with the ImageNet
    protocol the run was configured with (batch 1024, lr 0.1 x 4, cosine, 90 epochs,
    random-resized crops), not the default group's CIFAR one; overrides still apply."""
    from sce_sweeps.engine.linear import run_dir_config

    run_dir = _run_dir_of(tmp_path, "experiment=imagenet")
    lin = run_dir_config(run_dir, []).linear
    assert (lin.batch_size, lin.lr, lin.schedule, lin.epochs, lin.train_crop) == (
        1024,
        0.1,
        "cosine",
        90,
        "random_resized",
    )
    lin = run_dir_config(run_dir, ["linear.epochs=10"]).linear
    assert (lin.epochs, lin.lr, lin.schedule) == (10, 0.1, "cosine")
    lin = run_dir_config(run_dir, ["linear=cifar", "linear.epochs=5"]).linear
    assert (lin.epochs, lin.lr, lin.schedule, lin.train_crop) == (5, 30.0, "step", "pad_crop")


def test_loaders_pin_host_memory_only_for_a_cuda_device(monkeypatch, tmp_path):
    """Pinned host memory serves copies to a GPU: a run on the CPU of a machine that has a GPU
    does not pin its batches (CUDA is reported present here)."""
    from sce_sweeps.engine.train import Trainer
    from sce_sweeps.runtime.tracking import NullTracker
    from tests.support import TINY

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    t = Trainer(
        compose(*TINY, "tracker=none", "trainer.device=cpu", validate=True), tmp_path, NullTracker()
    )
    assert not t.bank_loader.pin_memory and not t.query_loader.pin_memory


def test_the_demo_evaluates_its_narrow_network_at_a_learning_rate_that_fits_it():
    """The official linear lr (30, for a ResNet-18's 512 features) is the CIFAR protocol's;
    the embedded default's width-8 network takes linear=narrow (lr 0.3, measured best), and a
    protocol chosen on the command line keeps its own rate."""
    assert compose(validate=True).linear.lr == 0.3
    assert compose("experiment=cifar10", validate=True).linear.lr == 30.0
    assert compose("linear=cifar", validate=True).linear.lr == 30.0
