"""The device data path: the whole train split on the device, views drawn there in batches.

For datasets that fit in device memory (Fashion-MNIST, CIFAR, STL-10, Tiny-ImageNet) the
decoded split is one ``uint8`` tensor ``N x C x H x W`` on the training device; each step
gathers its batch from it and draws the views of the whole batch at once with Kornia
(``kornia.augmentation``), every sample with its own parameters, as the official SCE code
does on the GPU. Batches follow the seeded
permutation of :class:`EpochSampler`, so both paths train on the same images in the same order.

Kornia draws with torch's global CPU generator: the views of a group of consecutive steps
(:data:`SAMPLES_PER_DRAW` samples) are drawn in one call, with that generator forked and
seeded with :func:`batch_seed`, so a step's batch is a pure function of ``(seed, epoch,
step)`` and the training loop's own RNG is untouched. Per rank too: N processes draw other
views than one process with the same global batch.

Differences from the CPU path (torchvision on PIL images), by construction of the libraries:

- the order of the four colour-jitter operations is drawn once per batch, not per image;
- crops are resampled bilinearly without antialiasing (the CPU path resizes with PIL's
  antialiasing filter); this matters only for crops shrunk by more than 2x, not for crops of
  a small image resized back to its own size;
- pixels stay floating point between the operations (the CPU path rounds to ``uint8`` after
  each PIL operation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sce_sweeps.config import DataPath
from sce_sweeps.data import EpochSampler, _hash63
from sce_sweeps.data.datasets import ArrayImageDataset, SubsetWithTargets, decoded
from sce_sweeps.data.views import (
    BLUR_SIGMA,
    View,
    _floats,
    blur_kernel,
    jitter_strengths,
    view_specs,
)

#: The datasets whose split is held as one array, so that the device path applies to them.
_IN_MEMORY = ("fashion_mnist", "cifar10", "cifar100", "stl10")


def batch_seed(seed: int, epoch: int, group: int, rank: int = 0) -> int:
    """The augmentation seed of the group of steps ``group`` (0-based) of ``epoch`` of a run
    seeded ``seed`` (and of process ``rank``'s slice of the batches, with several processes)."""
    return _hash63(seed, epoch, group, 1, rank)  # 5 numbers: never equal to a sample seed


def use_device_path(data_path: str, dataset_name: str, device: torch.device) -> bool:
    """Whether a run takes the device path: ``"device"`` always, ``"cpu"`` never, ``"auto"`` on
    a CUDA device for the datasets held in memory (image folders stay on the CPU loader)."""
    if data_path not in DataPath.__members__:
        allowed = ", ".join(DataPath.__members__)
        raise ValueError(f"trainer.data_path={data_path!r} is invalid: must be one of {allowed}")
    if data_path == "auto":
        return device.type == "cuda" and dataset_name in _IN_MEMORY
    return data_path == "device"


def _decode_all(dataset: Dataset) -> np.ndarray:
    """All the images of a dataset of ``(PIL.Image, int)``, stacked; they must share a size."""
    first = np.asarray(dataset[0][0])
    pixels = np.empty((len(dataset), *first.shape), np.uint8)
    for i in range(len(dataset)):
        image = np.asarray(dataset[i][0])
        if image.shape != first.shape:
            raise ValueError(
                f"the device data path needs images of one size: image {i} is {image.shape}, "
                f"image 0 {first.shape}; use trainer.data_path=cpu"
            )
        pixels[i] = image
    return pixels


def split_tensor(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of a dataset as one ``uint8`` tensor ``N x C x H x W``, and its labels.

    Array datasets (and fixed subsets of them) are read as they are; any other dataset of
    ``(PIL.Image, int)`` (an image folder such as Tiny-ImageNet's) is decoded once, needs
    images of one size, and is cached like the other decoded splits (:func:`decoded`).
    """
    base, indices = dataset, None
    if isinstance(dataset, SubsetWithTargets):
        base, indices = dataset.base, dataset.indices
    if isinstance(base, ArrayImageDataset):
        pixels = base.pixels(indices)
    else:
        files = [path for path, _ in getattr(base, "samples", [])]  # an ImageFolder
        if files and indices is not None:
            files = [files[i] for i in indices]
        decode = lambda: (_decode_all(dataset), list(dataset.targets))  # noqa: E731
        pixels = decoded(files, decode).pixels() if files else decode()[0]
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if not pixels.flags.writeable:  # e.g. read from a buffer: torch wants its own copy
        pixels = pixels.copy()
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.long)


class DeviceViews:
    """Draws the views of a batch of ``uint8`` images with per-sample random parameters: the
    views of :func:`sce_sweeps.data.views.view_specs`, op for op as on the CPU path."""

    def __init__(self, aug: Any, dataset: Any) -> None:
        self.color = dataset.in_channels == 3
        self.pipelines = [self._pipeline(aug, view) for view in view_specs(aug)]
        self.mean = torch.tensor(_floats(dataset.mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(_floats(dataset.std)).view(1, -1, 1, 1)

    def _pipeline(self, aug: Any, view: View) -> Any:
        import kornia.augmentation as K  # imported here: only runs on this path pay for it

        size = view.size
        ops: list[Any] = [
            K.RandomResizedCrop((size, size), scale=tuple(view.scale), cropping_mode="resample"),
            K.RandomHorizontalFlip(p=aug.hflip_p),
        ]
        if view.strong:
            jitter = jitter_strengths(aug, self.color)
            if jitter:
                ops.append(K.ColorJitter(*jitter, p=aug.color_jitter_p))
            if self.color and aug.grayscale_p > 0:
                ops.append(K.RandomGrayscale(p=aug.grayscale_p))
            if view.blur_p > 0:
                # Pillow's radius-sigma blur: a kernel spanning 3 sigma at the largest sigma,
                # narrower than the image (as reflect padding needs)
                kernel = blur_kernel(aug, size)
                if aug.blur_type == "pil":
                    kernel = min(2 * math.ceil(3 * BLUR_SIGMA[1]) + 1, (size - 1) // 2 * 2 + 1)
                ops.append(K.RandomGaussianBlur((kernel, kernel), BLUR_SIGMA, p=view.blur_p))
            if view.solarize_p > 0:  # threshold 0.5, as 128 on 0..255 on the CPU path
                ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=view.solarize_p))
        return K.AugmentationSequential(*ops)

    def __call__(self, images: torch.Tensor, seed: int) -> list[torch.Tensor]:
        """The normalised views ``[view0, view1, *local crops]`` of ``B x C x H x W`` ``uint8``
        images, on their device, drawn with ``seed``; the caller's RNG is restored."""
        device = images.device
        cuda: list[int] = []
        if device.type == "cuda":
            cuda = [torch.cuda.current_device() if device.index is None else device.index]
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed(seed)
            x = images.float().div_(255)
            views = [pipeline(x) for pipeline in self.pipelines]
        mean, std = self.mean.to(device), self.std.to(device)
        return [v.sub_(mean).div_(std) for v in views]


#: Samples whose views are drawn in one call. Kornia costs some milliseconds of Python per
#: call whatever the batch, as much as a whole ResNet-18 step on CIFAR on a GPU: drawing the
#: views of several steps at once pays it once per this many samples rather than every step.
SAMPLES_PER_DRAW = 2048

Batch = tuple[list[torch.Tensor], torch.Tensor]


class DeviceData:
    """The train split on the device and the views of one epoch's batches, step by step.

    The views are drawn for ``group`` consecutive steps at once (the groups of an epoch are
    counted from step 0, each drawn with the seed :func:`batch_seed`), so a step's batch is a
    pure function of ``(seed, epoch, step)``: resuming mid-group draws the group again and
    skips the steps already trained. On a GPU the views are drawn on a side stream, so that
    Kornia's copies of its parameters to the device wait only for that stream and never for
    the training step queued on the main one.

    ``images`` (``N x C x H x W`` ``uint8``) and ``labels`` move to ``device``, where the
    views are drawn; ``seed`` to ``world_size`` are as for :class:`EpochSampler` (each process
    draws its slice of each batch with its own seed); a group is ``samples_per_draw`` samples.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        views: DeviceViews,
        seed: int,
        batch_size: int,
        max_steps: int | None,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        samples_per_draw: int = SAMPLES_PER_DRAW,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.views = views
        self.device = device
        self.order = EpochSampler(len(labels), seed, 0, batch_size, 0, max_steps, rank, world_size)
        self.group = max(1, samples_per_draw // self.order.local_batch_size)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    @classmethod
    def from_dataset(
        cls, dataset: Dataset, cfg: Any, device: torch.device, rank: int = 0, world_size: int = 1
    ) -> DeviceData:
        """The device data of a run's train split (``dataset``: the split before any transform)."""
        images, labels = split_tensor(dataset)
        t = cfg.trainer
        args = (cfg.seed, t.batch_size, t.max_steps_per_epoch, device, rank, world_size)
        return cls(images, labels, DeviceViews(cfg.aug, cfg.dataset), *args)

    def _permutation(self, epoch: int, start_step: int = 0) -> torch.Tensor:
        """The epoch's order of images, the same as on the CPU path (``start_step`` checked)."""
        self.order.set_epoch(epoch, start_step)
        return torch.tensor(self.order.permutation(), device=self.device)

    def batch(self, epoch: int, step: int) -> Batch:
        """The views and labels of step ``step`` of ``epoch`` (a pure function of both)."""
        return self._draw(self._permutation(epoch), epoch, step // self.group)[step % self.group]

    def _draw(self, order: torch.Tensor, epoch: int, group: int) -> list[Batch]:
        """The batches of the steps of ``group`` (the last group of an epoch may be short)."""
        s = self.order
        first, last = group * self.group, min((group + 1) * self.group, s.steps)
        lb, offset = s.local_batch_size, s.rank * s.local_batch_size
        b = s.batch_size
        index = torch.cat([order[i * b + offset : i * b + offset + lb] for i in range(first, last)])
        seed = batch_seed(s.seed, epoch, group, s.rank)
        if self.stream is None:
            views = self.views(self.images[index], seed)
        else:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                views = self.views(self.images[index], seed)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            for v in views:  # used on the main stream: not freed before that is done
                v.record_stream(torch.cuda.current_stream(self.device))
        labels = self.labels[index]
        return [
            ([v[i * lb : (i + 1) * lb] for v in views], labels[i * lb : (i + 1) * lb])
            for i in range(last - first)
        ]

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from step ``start_step`` on, as ``(views, labels)``."""
        order = self._permutation(epoch, start_step)
        for group in range(start_step // self.group, -(-self.order.steps // self.group)):
            for i, batch in enumerate(self._draw(order, epoch, group)):
                if group * self.group + i >= start_step:
                    yield batch

    def steps(self) -> int:
        """Steps per epoch."""
        return self.order.steps
