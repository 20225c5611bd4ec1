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
uniformly in [0.1, 2] either way. For 1-channel images, saturation, hue and random grayscale
(no-ops on gray pixels) are left out.

The transforms are torchvision's (v1, on PIL images): all their randomness comes from torch's
global CPU generator, so seeding it right before a call makes the views a pure function of
the seed (see :class:`sce_sweeps.data.SSLDataset`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

#: Eval-time resize ratio of ImageNet-style folders: Resize(crop / 0.875) + CenterCrop(crop).
EVAL_CROP_RATIO = 0.875


#: Range of the blur's standard deviation (SimCLR, MoCo v3 and SCE).
BLUR_SIGMA = (0.1, 2.0)


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


def blur_kernel(aug: Any, size: int) -> int:
    """``aug.blur_kernel_size``, else an odd kernel of about 10% of the side (at least 3), as
    in SimCLR."""
    return aug.blur_kernel_size or max(3, int(0.1 * size) // 2 * 2 + 1)


class PILGaussianBlur:
    """Pillow's Gaussian blur with a radius (standard deviation) drawn uniformly in
    :data:`BLUR_SIGMA` from torch's generator (so it follows the view seeding)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        radius = float(torch.empty(1).uniform_(*BLUR_SIGMA))
        return image.filter(ImageFilter.GaussianBlur(radius=radius))


class View(NamedTuple):
    """One view: its side, crop scale, and whether it is strong, with what probabilities."""

    size: int
    scale: list[float]
    strong: bool
    blur_p: float
    solarize_p: float


def view_specs(aug: Any) -> list[View]:
    """The views ``[view0, view1, *local crops]``; a null ``view0_*`` / ``local_*``
    probability is ``aug.blur_p`` / ``aug.solarize_p``."""
    if aug.mode not in ("weak_strong", "two_strong"):
        raise ValueError(f"aug.mode={aug.mode!r} is invalid: must be weak_strong or two_strong")

    def p(value: float | None, default: float) -> float:
        return default if value is None else value

    size, scale = int(aug.crop_size), _floats(aug.crop_scale)
    view1 = View(size, scale, True, aug.blur_p, aug.solarize_p)
    view0 = View(size, scale, False, 0.0, 0.0)  # weak: crop + flip only
    if aug.mode == "two_strong":
        view0 = view1._replace(
            blur_p=p(aug.view0_blur_p, aug.blur_p),
            solarize_p=p(aug.view0_solarize_p, aug.solarize_p),
        )
    local = (True, p(aug.local_blur_p, aug.blur_p), p(aug.local_solarize_p, aug.solarize_p))
    return [view0, view1] + [View(side, crop, *local) for side, crop in local_crops(aug)]


def jitter_strengths(aug: Any, color: bool) -> tuple[float, float, float, float] | None:
    """``(brightness, contrast, saturation, hue)`` of the colour jitter, None when it is off;
    saturation and hue are 0 on 1-channel images."""
    s = float(aug.color_jitter)
    if s <= 0 or aug.color_jitter_p <= 0:
        return None
    saturation = s if aug.jitter_saturation is None else float(aug.jitter_saturation)
    return s, s, saturation if color else 0.0, min(s / 4, 0.5) if color else 0.0


def view_pipeline(aug: Any, dataset: Any, view: View) -> T.Compose:
    """Crop + flip, for a strong view then colour jitter + grayscale + blur + solarize, then
    a normalised ``C x size x size`` tensor."""
    ops: list[Any] = [
        T.RandomResizedCrop(view.size, scale=tuple(view.scale)),
        T.RandomHorizontalFlip(p=aug.hflip_p),
    ]
    color = dataset.in_channels == 3
    if view.strong:
        jitter = jitter_strengths(aug, color)
        if jitter:
            ops.append(T.RandomApply([T.ColorJitter(*jitter)], p=aug.color_jitter_p))
        if color and aug.grayscale_p > 0:
            ops.append(T.RandomGrayscale(p=aug.grayscale_p))
        if view.blur_p > 0:
            if aug.blur_type == "pil":
                blur = PILGaussianBlur()
            else:
                blur = T.GaussianBlur(blur_kernel(aug, view.size), sigma=BLUR_SIGMA)
            ops.append(T.RandomApply([blur], p=view.blur_p))
        if view.solarize_p > 0:
            ops.append(T.RandomSolarize(threshold=128, p=view.solarize_p))
    ops += [T.ToTensor(), T.Normalize(_floats(dataset.mean), _floats(dataset.std))]
    return T.Compose(ops)


class MultiViewTransform:
    """Applies one transform per view to the same image: ``[view0, view1, *local_crops]``."""

    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]


def build_ssl_transform(aug: Any, dataset: Any) -> MultiViewTransform:
    """The view generator of SCE training: a PIL image to ``[view0 (target branch), view1
    (online branch), *local crops]`` (:func:`view_specs`)."""
    return MultiViewTransform([view_pipeline(aug, dataset, v) for v in view_specs(aug)])


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
        self.size = size
        self.resize = T.Compose([T.Resize(int(size / ratio)), T.CenterCrop(size)])

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.size == (self.size, self.size) else self.resize(image)


def build_eval_transform(dataset: Any, aug: Any) -> T.Compose:
    """The deterministic transform of kNN / linear evaluation, to a normalised tensor.

    Images of side ``aug.crop_size`` stay as they are, at the scale of the train views
    (CIFAR, Tiny-ImageNet's 64 px folder); others are resized and centre-cropped to it:
    small sets' to fit, ``image_folder`` images (ImageNet) with
    ``Resize(int(crop_size / 0.875))`` + ``CenterCrop(crop_size)``.
    """
    ratio = EVAL_CROP_RATIO if dataset.name == "image_folder" else 1.0
    normalize = T.Normalize(_floats(dataset.mean), _floats(dataset.std))
    return T.Compose([_FitSize(aug.crop_size, ratio), T.ToTensor(), normalize])
