"""The device data path: views in their configured ranges, as on the CPU path, and seeded.

Each range test draws a few thousand views of a probe image whose pixels make one random
parameter readable (a coordinate ramp for the crop and flip, a flat grey for brightness, a
flat colour for grayscale, an impulse for the blur's sigma, a flat bright image for solarize),
on the device path (Kornia, whole batches) and on the CPU path (torchvision on PIL images, one
seeded sample at a time), and checks both against the configuration and against each other.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import Dataset

from sce_sweeps.config import AugConfig, DatasetConfig
from sce_sweeps.data import EpochSampler, sample_seed, seeded
from sce_sweeps.data.datasets import SubsetWithTargets, load_dataset
from sce_sweeps.data.device import (
    DeviceData,
    DeviceViews,
    batch_seed,
    split_tensor,
    use_device_path,
)
from sce_sweeps.data.views import build_ssl_transform
from tests.synthetic import fake_images, write_fake_dataset

N = 2048  # samples per statistic: a rate's standard error is at most 0.011
BATCH = 512
OFF = dict(color_jitter=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def configs(channels: int, **aug):
    """Augmentation and dataset configs; mean 0 and std 1 keep the views in [0, 1]."""
    dataset = DatasetConfig(in_channels=channels, mean=[0.0] * channels, std=[1.0] * channels)
    return OmegaConf.structured(AugConfig(**aug)), OmegaConf.structured(dataset)


def device_draws(image: np.ndarray, view, aug, dataset, n: int = N, seed: int = 0) -> torch.Tensor:
    """``n`` draws of view ``view`` (a slice: several views) of one ``H x W [x C]`` image on
    the device path."""
    pixels = torch.from_numpy(image).reshape(1, *image.shape[:2], -1).permute(0, 3, 1, 2)
    views, batch = DeviceViews(aug, dataset), min(n, BATCH)
    batches = [
        views(pixels.expand(batch, -1, -1, -1), batch_seed(seed, 0, step))[view]
        for step in range(n // batch)
    ]
    return torch.cat(batches) if isinstance(view, int) else [torch.cat(v) for v in zip(*batches)]


def cpu_draws(image: np.ndarray, view, aug, dataset, n: int = N, seed: int = 0) -> torch.Tensor:
    """``n`` draws of view ``view`` of the same image on the CPU path."""
    transform = build_ssl_transform(aug, dataset)
    pil = Image.fromarray(image)
    out = []
    for i in range(n):
        with seeded(sample_seed(seed, 0, i)):
            out.append(transform(pil)[view])
    return torch.stack(out) if isinstance(view, int) else [torch.stack(v) for v in zip(*out)]


def both(image: np.ndarray, view: int, aug, dataset) -> dict[str, torch.Tensor]:
    return {
        "device": device_draws(image, view, aug, dataset),
        "cpu": cpu_draws(image, view, aug, dataset),
    }


def near(rate: float, expected: float, tol: float = 0.035) -> bool:
    return abs(rate - expected) <= tol


def test_crop_area_aspect_and_flip_rate():
    # Channel 0 holds the x coordinate, channel 1 the y coordinate: a view's extremes give
    # the box it was cropped from, and the sign of its x ramp whether it was flipped.
    side = out = 32
    y, x = np.mgrid[0:side, 0:side]
    image = np.stack([x * 8, y * 8, np.zeros_like(x)], axis=-1).astype(np.uint8)
    aug, dataset = configs(3, crop_size=out, crop_scale=[0.2, 0.8], hflip_p=0.5, **OFF)
    stats = {}
    for path, v in both(image, 0, aug, dataset).items():
        xs, ys = v[:, 0] * 255 / 8, v[:, 1] * 255 / 8
        # out samples spread over the box: the box is (max - min) * out / (out - 1) wide
        width = (xs.amax((1, 2)) - xs.amin((1, 2))) * out / (out - 1)
        height = (ys.amax((1, 2)) - ys.amin((1, 2))) * out / (out - 1)
        area, aspect = width * height / side**2, width / height
        # the sides are whole pixels (12 or more here): +-0.5 px on each moves area and aspect
        assert area.min() > 0.2 - 0.03 and area.max() < 0.8 + 0.03, (path, area.aminmax())
        assert aspect.min() > 3 / 4 * 0.93 and aspect.max() < 4 / 3 / 0.93, (path, aspect)
        flipped = (v[:, 0, :, 0] > v[:, 0, :, -1]).all(dim=1).float().mean().item()
        assert near(flipped, 0.5), (path, flipped)
        stats[path] = torch.quantile(area, torch.tensor([0.1, 0.5, 0.9]))
    assert torch.allclose(stats["device"], stats["cpu"], atol=0.03), stats


def test_brightness_factor_range_and_jitter_rate():
    # On a flat grey image only brightness acts: the view is the image times the factor.
    image = np.full((16, 16), 128, np.uint8)
    aug, dataset = configs(1, crop_size=16, **OFF | {"color_jitter": 0.4})
    stats = {}
    for path, v in both(image, 1, aug, dataset).items():
        factor = v.mean((1, 2, 3)) * 255 / 128
        assert factor.min() > 0.6 - 0.01 and factor.max() < 1.4 + 0.01, path
        changed = (factor - 1).abs() > 0.02  # all but 0.04 / 0.8 of the jittered views
        assert near(changed.float().mean().item(), 0.8 * (1 - 0.04 / 0.8)), path
        applied = factor[changed]
        stats[path] = torch.stack([applied.mean(), applied.std()])
        # uniform on [0.6, 1.4]: mean 1, standard deviation 0.8 / sqrt(12)
        assert torch.allclose(stats[path], torch.tensor([1.0, 0.8 / 12**0.5]), atol=0.02), path
    assert torch.allclose(stats["device"], stats["cpu"], atol=0.02), stats


def test_grayscale_rate():
    image = np.broadcast_to(np.array([100, 150, 200], np.uint8), (16, 16, 3)).copy()
    aug, dataset = configs(3, crop_size=16, **OFF | {"grayscale_p": 0.2})
    for path, v in both(image, 1, aug, dataset).items():
        gray = ((v[:, 0] - v[:, 2]).abs().amax((1, 2)) < 1e-3).float().mean().item()
        assert near(gray, 0.2), (path, gray)
    weak = device_draws(image, 0, aug, dataset, n=BATCH)  # the weak view is never grey
    assert (weak[:, 2] - weak[:, 0]).amin() > 0.3


def test_blur_sigma_range_and_rate():
    # An impulse in the middle of the image: after a 3-tap Gaussian blur of width sigma its
    # value is 1 / (1 + 2e)^2 with e = exp(-1 / (2 sigma^2)), which gives sigma back.
    side = 33  # a 3-pixel kernel (10% of the side), an impulse that a flip leaves in place
    image = np.zeros((side, side), np.uint8)
    image[side // 2, side // 2] = 255
    aug, dataset = configs(1, crop_size=side, crop_scale=[1.0, 1.0], **OFF | {"blur_p": 0.5})
    for path, v in both(image, 1, aug, dataset).items():
        centre = v[:, 0, side // 2, side // 2].double().clamp(1e-6, 1.0)
        e = ((1 / centre.sqrt() - 1) / 2).clamp(1e-300, 0.99)
        sigma = (-1 / (2 * e.log())).sqrt()
        assert sigma.max() < 2.0 + 0.1, (path, sigma.max())
        # sigma is uniform on [0.1, 2] when applied; below ~0.3 a blur is invisible
        for low in (0.5, 1.0, 1.5):
            rate = (sigma > low).double().mean().item()
            assert near(rate, 0.5 * (2.0 - low) / 1.9), (path, low, rate)


def test_solarize_rate():
    image = np.full((16, 16), 200, np.uint8)
    aug, dataset = configs(1, crop_size=16, **OFF | {"solarize_p": 0.2})
    for path, v in both(image, 1, aug, dataset).items():
        values = v.mean((1, 2, 3)) * 255
        solarized = (values - 55).abs() < 1
        assert (((values - 200).abs() < 1) | solarized).all(), path
        assert near(solarized.float().mean().item(), 0.2), path


@pytest.mark.parametrize("channels", [1, 3])
def test_views_of_real_images_match_the_cpu_path(channels):
    # Every operation on at once, two strong views and a local crop: the mean and spread of
    # the views' pixels, per channel, agree between the two paths (1024 draws of each view:
    # the standard error of a mean is about 0.0035).
    images, _ = fake_images(8, (32, 32, 3) if channels == 3 else (32, 32), 10, seed=3)
    aug, dataset = configs(
        channels,
        mode="two_strong",
        crop_size=32,
        num_local_crops=1,
        local_crop_size=16,
        blur_p=0.5,
        solarize_p=0.2,
    )
    stats = {}
    for path, draw in (("device", device_draws), ("cpu", cpu_draws)):
        views = [
            draw(image, slice(1, 3), aug, dataset, n=128, seed=i) for i, image in enumerate(images)
        ]
        for view, v in enumerate(map(torch.cat, zip(*views)), start=1):
            stats[path, view] = torch.stack([v.mean((0, 2, 3)), v.std((2, 3)).mean(0)])
    for view in (1, 2):
        assert torch.allclose(stats["device", view], stats["cpu", view], atol=0.025), stats


def _data(tmp_path, seed=0, batch_size=16, samples_per_draw=32, rank=0, world=1) -> DeviceData:
    write_fake_dataset("cifar10", tmp_path, num_train=100, num_test=10)
    d = OmegaConf.structured(
        DatasetConfig(name="cifar10", root=str(tmp_path), in_channels=3, mean=[0.5] * 3)
    )
    d.std = [0.25] * 3
    aug = OmegaConf.structured(AugConfig(crop_size=32, num_local_crops=1, blur_p=0.5))
    images, labels = split_tensor(load_dataset(d, "train"))
    views = DeviceViews(aug, d)
    cpu = torch.device("cpu")
    args = (seed, batch_size, None, cpu, rank, world, samples_per_draw)
    return DeviceData(images, labels, views, *args)


def test_a_batch_is_a_function_of_seed_epoch_and_step(tmp_path):
    data = _data(tmp_path)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a_views, a_labels = data.batch(epoch=2, step=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is left alone
    b_views, b_labels = data.batch(epoch=2, step=3)
    assert torch.equal(a_labels, b_labels)
    assert all(torch.equal(a, b) for a, b in zip(a_views, b_views, strict=True))
    assert [tuple(v.shape) for v in a_views] == [(16, 3, 32, 32)] * 2 + [(16, 3, 12, 12)]
    for other in (data.batch(epoch=2, step=4), data.batch(epoch=3, step=3)):
        assert not torch.equal(a_views[1], other[0][1])
    reseeded = _data(tmp_path, seed=1).batch(epoch=2, step=3)
    assert not torch.equal(a_views[1], reseeded[0][1])


def test_an_epoch_resumed_mid_way_sees_the_same_batches_in_the_cpu_order(tmp_path):
    data = _data(tmp_path)  # views drawn 2 steps at a time: resuming at step 3 is mid-group
    assert data.group == 2
    full = list(data.epoch(1))
    assert len(full) == data.steps() == 100 // 16
    resumed = list(data.epoch(1, start_step=3))
    assert len(resumed) == len(full) - 3
    for (va, la), (vb, lb) in zip(full[3:], resumed, strict=True):
        assert torch.equal(la, lb) and all(torch.equal(a, b) for a, b in zip(va, vb))
    for step, (views, labels) in enumerate(full):
        same_views, same_labels = data.batch(1, step)
        assert torch.equal(labels, same_labels) and torch.equal(views[1], same_views[1])
    assert not torch.equal(full[0][0][1], full[1][0][1][:16])  # each step its own draws
    # the same images in the same order as the CPU path's sampler
    order = EpochSampler(100, 0, 1, 16).permutation()
    assert torch.equal(torch.cat([labels for _, labels in full]), data.labels[order])


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "stl10", "image_folder"])
def test_split_tensor_holds_the_dataset_pixels(tmp_path, name):
    write_fake_dataset(name, tmp_path, num_train=12, num_test=6)
    d = OmegaConf.structured(DatasetConfig(name=name, root=str(tmp_path)))
    split = {"image_folder": "train", "stl10": "train+unlabeled"}.get(name, "train")
    dataset = load_dataset(d, split)
    if name == "cifar10":
        dataset = SubsetWithTargets(dataset, [5, 1, 7])
    images, labels = split_tensor(dataset)
    assert images.dtype == torch.uint8 and labels.tolist() == list(dataset.targets)
    for i in range(len(dataset)):
        pil, _ = dataset[i]
        expected = torch.from_numpy(np.array(pil)).reshape(pil.height, pil.width, -1)
        assert torch.equal(images[i], expected.permute(2, 0, 1)), i


def test_split_tensor_refuses_images_of_several_sizes():
    images = [np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8)]

    class Ragged(Dataset):
        targets = [0, 0]

        def __len__(self):
            return 2

        def __getitem__(self, index):
            return Image.fromarray(images[index]), 0

    with pytest.raises(ValueError, match="trainer.data_path=cpu"):
        split_tensor(Ragged())


def test_the_config_key_chooses_the_path():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_device_path("device", "cifar10", cpu)
    assert not use_device_path("cpu", "cifar10", cuda)
    assert use_device_path("auto", "cifar10", cuda) and not use_device_path("auto", "cifar10", cpu)
    assert not use_device_path("auto", "image_folder", cuda)
    with pytest.raises(ValueError, match="trainer.data_path='gpu' is invalid"):
        use_device_path("gpu", "cifar10", cpu)


def test_a_wrong_data_path_or_amp_dtype_fails_at_compose_naming_the_key():
    from hydra import compose, initialize_config_dir

    from sce_sweeps.app import CONF_DIR, config_error_line

    for key, value, allowed in (
        ("trainer.data_path", "gpu", "[auto, cpu, device]"),
        ("trainer.amp_dtype", "fp8", "[float16, bfloat16]"),
    ):
        with (
            initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"),
            pytest.raises(Exception) as error,
        ):
            compose("config", overrides=[f"{key}={value}"])
        line = config_error_line(error.value)
        assert f"{key}={value}" in line and allowed in line, line


def test_each_process_draws_its_slice_of_the_same_batches(tmp_path):
    single = _data(tmp_path)
    ranks = [_data(tmp_path, rank=rank, world=2) for rank in range(2)]
    for (_, labels), *parts in zip(single.epoch(0), *(r.epoch(0) for r in ranks), strict=True):
        assert torch.equal(labels, torch.cat([part_labels for _, part_labels in parts]))
        assert all(tuple(v.shape) == (8, 3, 32, 32) for views, _ in parts for v in views[:2])
