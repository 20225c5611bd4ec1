"""Tiny datasets written in the real on-disk formats, for the tests and scripts/gpu_check.sh.

Each writer produces the files the loaders of :mod:`sce_sweeps.data.datasets` read (and
torchvision downloads): gzip IDX files for Fashion-MNIST, the python pickles of CIFAR-10/100,
STL-10's binaries, and an ImageNet-style folder of PNGs. Images are class templates plus
noise, so a kNN classifier on raw pixels is well above chance. All writers are deterministic.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Sequence

import numpy as np
from PIL import Image


def fake_images(
    num: int, shape: Sequence[int], num_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``num`` class-template-plus-noise ``uint8`` images of ``shape`` and their ``int64``
    labels; ``seed`` draws the noise (the templates depend only on ``shape``/``num_classes``)."""
    templates = np.random.default_rng(1234).integers(0, 256, (num_classes, *shape))
    rng = np.random.default_rng(seed)
    labels = np.arange(num) % num_classes
    rng.shuffle(labels)
    noise = rng.integers(0, 256, (num, *shape))
    images = (0.7 * templates[labels] + 0.3 * noise).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a ``uint8`` array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(
    root: str | os.PathLike,
    num_train: int = 64,
    num_test: int = 32,
    layout: str = "plain",
    compress: bool = True,
) -> str:
    """Write Fashion-MNIST IDX files (28x28 grayscale, 10 classes), ``.gz`` if ``compress``, in
    ``root`` (``layout="plain"``, as Debian ships them) or ``root/FashionMNIST/raw``
    (``"torchvision"``); returns that folder."""
    folder = os.path.join(root, "FashionMNIST", "raw") if layout == "torchvision" else str(root)
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if compress else ""
    for prefix, num, seed in (("train", num_train, 0), ("t10k", num_test, 1)):
        images, labels = fake_images(num, (28, 28), 10, seed)
        write_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte{suffix}"), images)
        write_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte{suffix}"), labels)
    return folder


def write_cifar(
    root: str | os.PathLike, name: str = "cifar10", num_train: int = 50, num_test: int = 20
) -> str:
    """Write CIFAR-10 / CIFAR-100 python-version pickles as torchvision extracts them
    (``cifar-10-batches-py/``: five train batches, ``cifar-100-python/``: fine and coarse
    labels); returns their folder."""
    num_classes = 10 if name == "cifar10" else 100
    folder = os.path.join(root, "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    os.makedirs(folder, exist_ok=True)

    def dump(filename: str, obj: dict) -> None:
        with open(os.path.join(folder, filename), "wb") as f:
            pickle.dump(obj, f, protocol=2)

    def entry(images: np.ndarray, labels: np.ndarray, tag: str) -> dict:
        data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # N x 3072, CHW rows
        out = {"batch_label": tag, "data": data, "filenames": [f"{i}.png" for i in labels]}
        if name == "cifar10":
            out["labels"] = labels.tolist()
        else:
            out["fine_labels"] = labels.tolist()
            out["coarse_labels"] = (labels // 5).tolist()
        return out

    train, train_labels = fake_images(num_train, (32, 32, 3), num_classes, seed=0)
    test, test_labels = fake_images(num_test, (32, 32, 3), num_classes, seed=1)
    if name == "cifar10":
        for i, chunk in enumerate(np.array_split(np.arange(num_train), 5), start=1):
            dump(f"data_batch_{i}", entry(train[chunk], train_labels[chunk], f"batch {i}"))
        dump("test_batch", entry(test, test_labels, "testing batch"))
        dump("batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    else:
        dump("train", entry(train, train_labels, "train"))
        dump("test", entry(test, test_labels, "test"))
        dump("meta", {"fine_label_names": [f"fine{i}" for i in range(100)]})
    return folder


def write_stl10(
    root: str | os.PathLike, num_train: int = 20, num_test: int = 10, num_unlabeled: int = 10
) -> str:
    """Write STL-10 binaries (``stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin``): 96x96
    RGB column-major per channel, labels ``1..10``, as the official files; returns the folder."""
    folder = os.path.join(root, "stl10_binary")
    os.makedirs(folder, exist_ok=True)
    for split, num, seed in (("train", num_train, 0), ("test", num_test, 1)):
        images, labels = fake_images(num, (96, 96, 3), 10, seed)
        images.transpose(0, 3, 2, 1).tofile(os.path.join(folder, f"{split}_X.bin"))
        (labels + 1).astype(np.uint8).tofile(os.path.join(folder, f"{split}_y.bin"))
    images, _ = fake_images(num_unlabeled, (96, 96, 3), 10, seed=2)
    images.transpose(0, 3, 2, 1).tofile(os.path.join(folder, "unlabeled_X.bin"))
    with open(os.path.join(folder, "class_names.txt"), "w") as f:
        f.write("\n".join(f"class{i}" for i in range(10)) + "\n")
    return folder


def write_image_folder(
    root: str | os.PathLike,
    splits: dict[str, int] | None = None,
    num_classes: int = 3,
    size: tuple[int, int] = (40, 36),
) -> str:
    """Write an ImageNet-style tree ``root/<split>/<class>/<i>.png`` of RGB PNGs of ``size``
    (width, height: not square by default), ``splits`` images per split; returns ``root``."""
    splits = {"train": 12, "val": 6} if splits is None else splits
    width, height = size
    for seed, (split, num) in enumerate(splits.items()):
        images, labels = fake_images(num, (height, width, 3), num_classes, seed)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = os.path.join(root, split, f"class{label}")
            os.makedirs(folder, exist_ok=True)
            Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"))
    return str(root)


def write_fake_dataset(name: str, root: str | os.PathLike, num_train: int, num_test: int) -> str:
    """Write a tiny dataset named as in ``dataset.name`` under ``root`` (``image_folder``: the
    splits ``train`` and ``val``; ``stl10``: ``num_test`` unlabeled images too)."""
    if name == "fashion_mnist":
        return write_fashion_mnist(root, num_train, num_test)
    if name in ("cifar10", "cifar100"):
        return write_cifar(root, name, num_train, num_test)
    if name == "stl10":
        return write_stl10(root, num_train, num_test, num_test)
    if name == "image_folder":
        return write_image_folder(root, {"train": num_train, "val": num_test})
    raise ValueError(f"unknown dataset name {name!r}")
