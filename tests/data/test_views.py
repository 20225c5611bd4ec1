"""Views of sce_sweeps.data.views and the (index, seed) determinism of SSLDataset."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from sce_sweeps.config import AugConfig, DatasetConfig
from sce_sweeps.data import EvalDataset, SSLDataset, collate_views, seeded
from sce_sweeps.data.datasets import ArrayImageDataset
from sce_sweeps.data.views import build_eval_transform, build_ssl_transform

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
