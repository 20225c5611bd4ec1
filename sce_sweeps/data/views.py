"""The augmented views of SCE (and the deterministic eval transform).

``aug.mode="weak_strong"`` is SCE's CIFAR recipe: a weak view (crop + flip) for the target
(momentum) branch and a strong one (crop + flip + colour jitter + grayscale + blur + solarize)
for the online branch. ``aug.mode="two_strong"`` is the MoCo v3 style recipe of SCE's ImageNet
runs: two strong views, which may differ in their blur and solarize probabilities
(``aug.view0_blur_p``, ``aug.view0_solarize_p``; the official ones are 1.0/0.1 and 0/0.2).
Local crops (multi-crop) go to the online branch only, through the strong pipeline with their
own blur and solarize probabilities (``aug.local_blur_p``, ``aug.local_solarize_p``): either
``aug.num_local_crops`` crops of ``aug.local_crop_size`` and ``aug.local_crop_scale``, or one
crop per entry of ``aug.local_crop_sizes`` / ``aug.local_crop_scales`` (the official
192/160/128/96 multi-crop).

Blur is torchvision's ``GaussianBlur`` (``aug.blur_type=kernel``: a kernel of
``aug.blur_kernel_size``, by default 10% of the crop side) or Pillow's ``GaussianBlur``
(``aug.blur_type=pil``: radius sigma, as in the official CIFAR-10 recipe); sigma is drawn
uniformly in [0.1, 2] either way.

The transforms are torchvision's (v1, on PIL images), so all their randomness comes from
torch's global CPU generator: seeding it right before a call makes the views a pure function
of the seed (see :class:`sce_sweeps.data.SSLDataset`).

For 1-channel (``'L'``) images, saturation, hue and random grayscale are left out (they are
no-ops on grayscale pixels); brightness and contrast jitter, blur and solarize are kept.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

#: Eval-time resize ratio of ImageNet-style folders: Resize(crop / 0.875) + CenterCrop(crop).
EVAL_CROP_RATIO = 0.875


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def _blur_kernel(size: int) -> int:
    """An odd Gaussian kernel of about 10% of the image side (at least 3), as in SimCLR."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


#: Range of the blur's standard deviation (SimCLR, MoCo v3 and SCE).
BLUR_SIGMA = (0.1, 2.0)


class PILGaussianBlur:
    """Pillow's Gaussian blur with a radius (standard deviation) drawn uniformly in ``sigma``,
    from torch's generator (so it follows the view seeding)."""

    def __init__(self, sigma: tuple[float, float] = BLUR_SIGMA) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        radius = float(torch.empty(1).uniform_(self.sigma[0], self.sigma[1]))
        return image.filter(ImageFilter.GaussianBlur(radius=radius))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def _blur(aug: Any, size: int) -> Any:
    if aug.blur_type == "pil":
        return PILGaussianBlur(BLUR_SIGMA)
    if aug.blur_type == "kernel":
        kernel = aug.blur_kernel_size or _blur_kernel(size)
        return T.GaussianBlur(kernel, sigma=BLUR_SIGMA)
    raise ValueError(f"aug.blur_type={aug.blur_type!r} is invalid: must be kernel or pil")


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


def strong_pipeline(
    aug: Any,
    dataset: Any,
    size: int,
    scale: Any,
    blur_p: float | None = None,
    solarize_p: float | None = None,
) -> T.Compose:
    """Crop + flip + colour jitter + grayscale + blur + solarize, then a normalised tensor.

    Args:
        aug: the augmentation config (``hflip_p``, ``color_jitter``, ``jitter_saturation``,
            ``color_jitter_p``, ``grayscale_p``, ``blur_type``, ``blur_kernel_size``,
            ``blur_p``, ``solarize_p`` are read).
        dataset: the dataset config (``in_channels``, ``mean``, ``std`` are read).
        size: output side in pixels.
        scale: ``[min, max]`` area fraction of the crop.
        blur_p, solarize_p: probabilities of this view; None: ``aug.blur_p``,
            ``aug.solarize_p``.

    Returns:
        A transform from a PIL image to a ``C x size x size`` tensor.
    """
    blur_p = aug.blur_p if blur_p is None else blur_p
    solarize_p = aug.solarize_p if solarize_p is None else solarize_p
    color = dataset.in_channels == 3
    ops: list[Any] = [
        T.RandomResizedCrop(size, scale=tuple(_floats(scale))),
        T.RandomHorizontalFlip(p=aug.hflip_p),
    ]
    s = float(aug.color_jitter)
    saturation = s if aug.jitter_saturation is None else float(aug.jitter_saturation)
    if s > 0 and aug.color_jitter_p > 0:
        jitter = T.ColorJitter(
            brightness=s,
            contrast=s,
            saturation=saturation if color else 0.0,
            hue=min(s / 4, 0.5) if color else 0.0,
        )
        ops.append(T.RandomApply([jitter], p=aug.color_jitter_p))
    if color and aug.grayscale_p > 0:
        ops.append(T.RandomGrayscale(p=aug.grayscale_p))
    if blur_p > 0:
        ops.append(T.RandomApply([_blur(aug, size)], p=blur_p))
    if solarize_p > 0:
        ops.append(T.RandomSolarize(threshold=128, p=solarize_p))
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
        first = strong_pipeline(
            aug, dataset, aug.crop_size, aug.crop_scale, aug.view0_blur_p, aug.view0_solarize_p
        )
    else:
        raise ValueError(f"aug.mode={aug.mode!r} is invalid: must be weak_strong or two_strong")
    second = strong_pipeline(aug, dataset, aug.crop_size, aug.crop_scale)
    local = [
        strong_pipeline(aug, dataset, size, scale, aug.local_blur_p, aug.local_solarize_p)
        for size, scale in local_crops(aug)
    ]
    return MultiViewTransform([first, second, *local])


def local_crops(aug: Any) -> list[tuple[int, list[float]]]:
    """(side, [min, max] scale) of each local crop: ``aug.local_crop_sizes`` and
    ``aug.local_crop_scales`` when given, else ``aug.num_local_crops`` equal crops."""
    if aug.local_crop_sizes:
        return [(int(s), _floats(c)) for s, c in zip(aug.local_crop_sizes, aug.local_crop_scales)]
    return [(int(aug.local_crop_size), _floats(aug.local_crop_scale))] * aug.num_local_crops


class _FitSize:
    """An image of ``size`` x ``size`` as it is; any other: resize (shorter side) to
    ``size / ratio``, then centre crop to ``size``."""

    def __init__(self, size: int, ratio: float = 1.0) -> None:
        self.size, self.ratio = size, ratio
        self.resize = T.Compose([T.Resize(int(size / ratio)), T.CenterCrop(size)])

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.size == (self.size, self.size) else self.resize(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, ratio={self.ratio})"


def build_eval_transform(dataset: Any, aug: Any) -> T.Compose:
    """The deterministic transform of kNN / linear evaluation.

    Images of side ``aug.crop_size`` stay as they are, at the scale of the train views
    (CIFAR, Tiny-ImageNet's 64 px folder); others are resized and centre-cropped to it:
    small sets' to fit, ``image_folder`` images (ImageNet) with
    ``Resize(int(crop_size / 0.875))`` + ``CenterCrop(crop_size)``.

    Args:
        dataset: the dataset config (``name``, ``mean``, ``std`` are read).
        aug: the augmentation config (``crop_size`` is read).

    Returns:
        A transform from a PIL image to a ``C x crop_size x crop_size`` normalised tensor.
    """
    size = aug.crop_size
    ratio = EVAL_CROP_RATIO if dataset.name == "image_folder" else 1.0
    return T.Compose(
        [
            _FitSize(size, ratio),
            T.ToTensor(),
            T.Normalize(_floats(dataset.mean), _floats(dataset.std)),
        ]
    )
