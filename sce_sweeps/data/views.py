"""The augmented views of SCE (and the deterministic eval transform).

``aug.mode="weak_strong"`` is SCE's CIFAR recipe: a weak view (crop + flip) for the target
(momentum) branch and a strong one (crop + flip + colour jitter + grayscale + blur + solarize)
for the online branch. ``aug.mode="two_strong"`` is the BYOL / MoCo v3 style recipe of SCE's
ImageNet runs: both views go through the *same* strong pipeline (with ``aug.blur_p`` and
``aug.solarize_p`` for both; BYOL's asymmetric 1.0/0.1 blur and 0.0/0.2 solarize are not
reproduced, which matters little with the symmetric loss). Local crops (multi-crop) always use
the strong pipeline at ``aug.local_crop_size`` and go to the online branch only.

The transforms are torchvision's (v1, on PIL images), so all their randomness comes from
torch's global CPU generator: seeding it right before a call makes the views a pure function
of the seed (see :class:`sce_sweeps.data.SSLDataset`).

For 1-channel (``'L'``) images, saturation, hue and random grayscale are left out (they are
no-ops on grayscale pixels); brightness and contrast jitter, blur and solarize are kept.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

#: Eval-time resize ratio of ImageNet-style folders: Resize(crop / 0.875) + CenterCrop(crop).
EVAL_CROP_RATIO = 0.875


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def _blur_kernel(size: int) -> int:
    """An odd Gaussian kernel of about 10% of the image side (at least 3), as in SimCLR."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def weak_pipeline(aug: Any, dataset: Any, size: int, scale: Any) -> T.Compose:
    """Random resized crop + horizontal flip, then to a normalised tensor.

    Args:
        aug: the augmentation config (``hflip_p`` is read).
        dataset: the dataset config (``mean``, ``std`` are read).
        size: output side in pixels.
        scale: ``[min, max]`` area fraction of the crop.

    Returns:
        A transform from a PIL image to a ``C x size x size`` tensor.
    """
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=tuple(_floats(scale))),
            T.RandomHorizontalFlip(p=aug.hflip_p),
            T.ToTensor(),
            T.Normalize(_floats(dataset.mean), _floats(dataset.std)),
        ]
    )


def strong_pipeline(aug: Any, dataset: Any, size: int, scale: Any) -> T.Compose:
    """Crop + flip + colour jitter + grayscale + blur + solarize, then a normalised tensor.

    Args:
        aug: the augmentation config (``hflip_p``, ``color_jitter``, ``color_jitter_p``,
            ``grayscale_p``, ``blur_p``, ``solarize_p`` are read).
        dataset: the dataset config (``in_channels``, ``mean``, ``std`` are read).
        size: output side in pixels.
        scale: ``[min, max]`` area fraction of the crop.

    Returns:
        A transform from a PIL image to a ``C x size x size`` tensor.
    """
    color = dataset.in_channels == 3
    ops: list[Any] = [
        T.RandomResizedCrop(size, scale=tuple(_floats(scale))),
        T.RandomHorizontalFlip(p=aug.hflip_p),
    ]
    s = float(aug.color_jitter)
    if s > 0 and aug.color_jitter_p > 0:
        jitter = T.ColorJitter(
            brightness=s,
            contrast=s,
            saturation=s if color else 0.0,
            hue=min(s / 4, 0.5) if color else 0.0,
        )
        ops.append(T.RandomApply([jitter], p=aug.color_jitter_p))
    if color and aug.grayscale_p > 0:
        ops.append(T.RandomGrayscale(p=aug.grayscale_p))
    if aug.blur_p > 0:
        blur = T.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))
        ops.append(T.RandomApply([blur], p=aug.blur_p))
    if aug.solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=128, p=aug.solarize_p))
    ops += [T.ToTensor(), T.Normalize(_floats(dataset.mean), _floats(dataset.std))]
    return T.Compose(ops)


class MultiViewTransform:
    """Applies one transform per view to the same image: ``[view0, view1, *local_crops]``.

    Args:
        transforms: one transform per output view, in order.
    """

    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]

    def __repr__(self) -> str:
        inner = "\n".join(f"  {i}: {t!r}" for i, t in enumerate(self.transforms))
        return f"{type(self).__name__}(\n{inner}\n)"


def build_ssl_transform(aug: Any, dataset: Any) -> MultiViewTransform:
    """The view generator of SCE training.

    Args:
        aug: the ``AugConfig``-like augmentation config.
        dataset: the ``DatasetConfig``-like dataset config (channels, mean, std).

    Returns:
        A callable from a PIL image to ``[view0, view1, *local_crops]``: ``view0`` (target
        branch) and ``view1`` (online branch) are ``C x crop_size x crop_size``, the
        ``aug.num_local_crops`` local crops ``C x local_crop_size x local_crop_size``.
    """
    if aug.mode == "weak_strong":
        first = weak_pipeline(aug, dataset, aug.crop_size, aug.crop_scale)
    elif aug.mode == "two_strong":
        first = strong_pipeline(aug, dataset, aug.crop_size, aug.crop_scale)
    else:
        raise ValueError(f"aug.mode={aug.mode!r} is invalid: must be weak_strong or two_strong")
    second = strong_pipeline(aug, dataset, aug.crop_size, aug.crop_scale)
    local = strong_pipeline(aug, dataset, aug.local_crop_size, aug.local_crop_scale)
    return MultiViewTransform([first, second] + [local] * aug.num_local_crops)


class _FitSize:
    """Resize (shorter side) + center crop to ``size`` only when the image is not that size."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.resize = T.Compose([T.Resize(size), T.CenterCrop(size)])

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.size == (self.size, self.size) else self.resize(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


def build_eval_transform(dataset: Any, aug: Any) -> T.Compose:
    """The deterministic transform of kNN / linear evaluation.

    Small sets keep their images as they are unless their side differs from ``aug.crop_size``
    (then resize + center crop to it); ``image_folder`` images get
    ``Resize(int(crop_size / 0.875))`` + ``CenterCrop(crop_size)``.

    Args:
        dataset: the dataset config (``name``, ``mean``, ``std`` are read).
        aug: the augmentation config (``crop_size`` is read).

    Returns:
        A transform from a PIL image to a ``C x crop_size x crop_size`` normalised tensor.
    """
    size = aug.crop_size
    if dataset.name == "image_folder":
        resize: list[Any] = [T.Resize(int(size / EVAL_CROP_RATIO)), T.CenterCrop(size)]
    else:
        resize = [_FitSize(size)]
    return T.Compose(
        resize + [T.ToTensor(), T.Normalize(_floats(dataset.mean), _floats(dataset.std))]
    )
