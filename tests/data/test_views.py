"""Views of sce_sweeps.data.views and the (index, seed) determinism of SSLDataset."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageFilter
from torchvision import transforms as T

from sce_sweeps.config import AugConfig, DatasetConfig
from sce_sweeps.data import EvalDataset, SSLDataset, collate_views, seeded
from sce_sweeps.data.datasets import ArrayImageDataset
from sce_sweeps.data.views import PILGaussianBlur, build_eval_transform, build_ssl_transform

STRONG = dict(blur_p=0.5, solarize_p=0.2)  # every op of the strong pipeline switched on


def configs(channels: int, **aug):
    dataset = OmegaConf.structured(
        DatasetConfig(in_channels=channels, mean=[0.5] * channels, std=[0.25] * channels)
    )
    return OmegaConf.structured(AugConfig(**aug)), dataset


def image(channels: int, size=(28, 28), seed: int = 0) -> Image.Image:
    shape = (size[1], size[0]) + ((3,) if channels == 3 else ())
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["weak_strong", "two_strong"])
@pytest.mark.parametrize("local", [0, 2])
def test_view_shapes(channels, mode, local):
    aug, dataset = configs(
        channels, mode=mode, num_local_crops=local, crop_size=24, local_crop_size=12, **STRONG
    )
    views = build_ssl_transform(aug, dataset)(image(channels))
    assert len(views) == 2 + local
    assert [tuple(v.shape) for v in views] == [(channels, 24, 24)] * 2 + [
        (channels, 12, 12)
    ] * local
    assert all(v.dtype == torch.float32 for v in views)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_a_function_of_the_torch_seed(channels):
    aug, dataset = configs(channels, mode="two_strong", num_local_crops=1, **STRONG)
    transform, img = build_ssl_transform(aug, dataset), image(channels)

    def draw(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return transform(img)

    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[1])  # two different views of the image


def test_weak_view_has_no_colour_change():
    # A flat image: crops and flips keep it flat, the strong view's jitter does not.
    aug, dataset = configs(3, mode="weak_strong", color_jitter_p=1.0, crop_size=16)
    transform = build_ssl_transform(aug, dataset)
    flat = Image.new("RGB", (28, 28), (100, 150, 200))
    torch.manual_seed(0)
    weak, strong = transform(flat)
    expected = (torch.tensor([100, 150, 200]) / 255 - 0.5) / 0.25
    assert torch.allclose(weak, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-6)
    assert not torch.allclose(strong, weak)


def test_ssl_dataset_seeding_is_local_and_worker_independent():
    aug, dataset = configs(1, num_local_crops=1, **STRONG)
    images = np.stack([np.asarray(image(1, seed=i)) for i in range(6)])
    ssl = SSLDataset(ArrayImageDataset(images, list(range(6))), build_ssl_transform(aug, dataset))

    torch.manual_seed(123)
    random.seed(123)
    before = (torch.get_rng_state(), random.getstate())
    first = ssl[(4, 99)]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]

    torch.manual_seed(7)  # another global state: same views for the same (index, seed)
    again, other = ssl[(4, 99)], ssl[(4, 100)]
    assert first[1] == again[1] == 4
    assert all(torch.equal(x, y) for x, y in zip(first[0], again[0], strict=True))
    assert not torch.equal(first[0][1], other[0][1])

    with seeded(99):  # the seed is applied exactly as a torch.manual_seed would
        image4 = ssl.base[4][0]
    torch.manual_seed(99)
    direct = ssl.transform(image4)
    assert all(torch.equal(x, y) for x, y in zip(first[0], direct, strict=True))

    views, labels = collate_views([ssl[(i, i)] for i in range(3)])
    assert [tuple(v.shape) for v in views] == [(3, 1, 28, 28)] * 2 + [(3, 1, 12, 12)]
    assert labels.tolist() == [0, 1, 2] and labels.dtype == torch.long


def test_eval_transform_sizes():
    aug, dataset = configs(3, crop_size=32)
    small = build_eval_transform(dataset, aug)
    assert small(image(3, (32, 32))).shape == (3, 32, 32)
    assert small(image(3, (96, 96))).shape == (3, 32, 32)
    same = image(3, (32, 32))
    expected = (torch.from_numpy(np.array(same)).permute(2, 0, 1) / 255 - 0.5) / 0.25
    assert torch.allclose(small(same), expected, atol=1e-6)  # as is, only normalised

    dataset.name = "image_folder"
    folder = build_eval_transform(dataset, aug)
    assert folder(image(3, (50, 41))).shape == (3, 32, 32)

    bank = EvalDataset(ArrayImageDataset(np.zeros((2, 32, 32, 3), np.uint8), [1, 0]), small)
    tensor, label = bank[0]
    assert tensor.shape == (3, 32, 32) and label == 1 and bank.targets == [1, 0]


@pytest.mark.parametrize("preset", ["tiny_imagenet", "imagenet"])
def test_eval_views_are_at_the_scale_of_the_train_views(preset):
    """Tiny-ImageNet's 64 px images train (pretraining and linear train views) at 64 px: its
    test views keep them at that scale, not Resize(73) + CenterCrop(64). ImageNet's images,
    larger than the crop, get Resize(crop / 0.875) + CenterCrop(crop)."""
    from hydra import compose, initialize_config_dir

    from sce_sweeps.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"])
    size = cfg.aug.crop_size
    normalise = T.Compose(
        [T.ToTensor(), T.Normalize(list(cfg.dataset.mean), list(cfg.dataset.std))]
    )
    view = build_eval_transform(cfg.dataset, cfg.aug)
    at_size = image(3, (size, size))
    assert torch.allclose(view(at_size), normalise(at_size), atol=1e-6)  # as is
    larger = image(3, (size * 2 + 10, size * 2))
    zoomed = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size)])(larger)
    assert torch.allclose(view(larger), normalise(zoomed), atol=1e-6)


def _ops(pipeline) -> list:
    """The transforms of a pipeline, RandomApply's content listed with its probability."""
    ops = []
    for t in pipeline.transforms:
        if isinstance(t, T.RandomApply):
            ops += [(type(inner).__name__, t.p) for inner in t.transforms]
        else:
            ops.append((type(t).__name__, getattr(t, "p", None)))
    return ops


def test_pil_blur_is_pillow_gaussian_with_seeded_radius():
    img = image(3, (32, 32))
    blur = PILGaussianBlur()
    torch.manual_seed(5)
    out = blur(img)
    torch.manual_seed(5)
    radius = float(torch.empty(1).uniform_(0.1, 2.0))
    assert 0.1 <= radius <= 2.0
    assert np.array_equal(np.asarray(out), np.asarray(img.filter(ImageFilter.GaussianBlur(radius))))
    assert not np.array_equal(np.asarray(out), np.asarray(img))


def test_cifar_strong_view_has_pil_blur():
    # the official CIFAR-10 strong view: PIL Gaussian blur sigma in [0.1, 2], p 0.5, no solarize
    aug, dataset = configs(3, mode="weak_strong", crop_size=32, blur_p=0.5, blur_type="pil")
    weak, strong = build_ssl_transform(aug, dataset).transforms
    assert ("PILGaussianBlur", 0.5) in _ops(strong)
    assert not any(name in ("RandomSolarize", "GaussianBlur") for name, _ in _ops(strong))
    assert [name for name, _ in _ops(weak)] == [
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
    ]
    views = build_ssl_transform(aug, dataset)(image(3, (32, 32)))
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2


def test_two_strong_views_are_asymmetric():
    # the official ImageNet views: blur 1.0 / 0.1, solarize 0 / 0.2, saturation 0.2
    aug, dataset = configs(
        3,
        mode="two_strong",
        crop_size=24,
        blur_p=0.1,
        solarize_p=0.2,
        view0_blur_p=1.0,
        view0_solarize_p=0.0,
        jitter_saturation=0.2,
        blur_kernel_size=23,
    )
    view0, view1 = build_ssl_transform(aug, dataset).transforms
    ops0, ops1 = _ops(view0), _ops(view1)
    assert ("GaussianBlur", 1.0) in ops0 and not any(n == "RandomSolarize" for n, _ in ops0)
    assert ("GaussianBlur", 0.1) in ops1 and ("RandomSolarize", 0.2) in ops1
    for pipeline in (view0, view1):
        jitter = next(
            t.transforms[0]
            for t in pipeline.transforms
            if isinstance(t, T.RandomApply) and isinstance(t.transforms[0], T.ColorJitter)
        )
        assert jitter.saturation == (0.8, 1.2) and jitter.brightness == (0.6, 1.4)
        assert jitter.hue == (-0.1, 0.1)
        blur = next(
            t.transforms[0]
            for t in pipeline.transforms
            if isinstance(t, T.RandomApply) and isinstance(t.transforms[0], T.GaussianBlur)
        )
        assert blur.kernel_size == (23, 23)


def test_local_crops_of_their_own_sizes_and_scales():
    # the official multi-crop, scaled down: 2 x 24 + 20/16/12/8, local blur 0.5, solarize 0.2
    sizes = [20, 16, 12, 8]
    scales = [[0.172, 0.86], [0.143, 0.715], [0.114, 0.571], [0.086, 0.429]]
    aug, dataset = configs(
        3,
        mode="two_strong",
        crop_size=24,
        num_local_crops=4,
        local_crop_sizes=sizes,
        local_crop_scales=scales,
        blur_p=0.1,
        local_blur_p=0.5,
        local_solarize_p=0.2,
    )
    transform = build_ssl_transform(aug, dataset)
    views = transform(image(3, (40, 40)))
    assert [v.shape[-1] for v in views] == [24, 24, *sizes]
    for pipeline, size, scale in zip(transform.transforms[2:], sizes, scales, strict=True):
        crop = pipeline.transforms[0]
        assert crop.size == (size, size) and list(crop.scale) == scale
        assert ("GaussianBlur", 0.5) in _ops(pipeline) and ("RandomSolarize", 0.2) in _ops(pipeline)
