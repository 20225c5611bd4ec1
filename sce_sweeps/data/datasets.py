"""The image datasets of a run as ``(PIL.Image, int)`` datasets with cheap ``.targets``.

Loaders read the files of each dataset's usual distribution (torchvision's layout, Debian's
``dataset-fashion-mnist``, ImageNet-style folders); small sets are held as ``uint8`` arrays,
STL-10 is memory-mapped. torchvision only *downloads* (``dataset.download=true``): its dataset
classes check the md5 of the official files, which would refuse the tests' tiny fixtures.

An unset ``dataset.root`` reads Debian's Fashion-MNIST, else ``./data``; a root that is set is
the only place looked at. A missing dataset raises :class:`DatasetNotFoundError`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets as tvd

from sce_sweeps.runtime.record import atomic_write, write_json_atomic

#: Where Debian's ``dataset-fashion-mnist`` package puts the gzip IDX files.
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

#: Where the datasets are when ``dataset.root`` is not set (besides Debian's Fashion-MNIST).
DEFAULT_ROOT = "data"

#: Seed of the fixed random subsets (``dataset.train_samples`` / ``dataset.test_samples``);
#: independent of the run seed so that every run of a sweep sees the same images.
SUBSET_SEED = 0

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": "labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "label_key": "fine_labels",
    },
}
_STL10_SPLITS = ("train", "test", "unlabeled", "train+unlabeled")


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the config says; the message says how to get them."""


class UnreadableImageError(RuntimeError):
    """An image file of a dataset that cannot be decoded; the message names the file and
    ``dataset.skip_unreadable=true``."""

    def __init__(self, message: str) -> None:
        # torch re-raises a DataLoader worker's exception as ``type(text)``, the text being the
        # worker's traceback: keep its last line, ours, so a run's reason names the file.
        mark = f"{type(self).__name__}: "
        if message.startswith("Caught ") and mark in message:
            message = message.rsplit(mark, 1)[1].strip()
        super().__init__(message)


class ArrayImageDataset(Dataset):
    """``uint8`` images (``N x H x W`` for ``'L'``, ``N x H x W x 3`` for ``'RGB'``; any
    int-indexable array-like) with int labels (``-1``: unlabeled)."""

    def __init__(self, images: Any, targets: Sequence[int]) -> None:
        self.images = images
        self.targets: list[int] = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(np.asarray(self.images[index])), self.targets[index]

    def pixels(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """The images ``indices`` (all when None) as one ``uint8`` array."""
        if isinstance(self.images, _STL10Images):
            return self.images.pixels(indices)
        array = np.asarray(self.images)
        return array if indices is None else array[np.asarray(indices)]


class _STL10Images:
    """STL-10's column-major ``N x 3 x 96 x 96`` binaries (one per part of the split),
    memory-mapped and indexed as one array of ``H x W x C`` images."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.parts = [np.memmap(p, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96) for p in paths]
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        # Stored as [channel][column][row]: (c, x, y) -> (y, x, c).
        return np.ascontiguousarray(self.parts[part][index - self.offsets[part]].transpose(2, 1, 0))

    def pixels(self, indices: Sequence[int] | None) -> np.ndarray:
        """The images ``indices`` (all when None) as one ``N x H x W x C`` array."""
        whole = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
        chosen = whole if indices is None else whole[np.asarray(indices)]
        return np.ascontiguousarray(chosen.transpose(0, 3, 2, 1))

    def __getstate__(self) -> list[str]:
        # Re-open the memory maps in DataLoader workers rather than pickling the pixels.
        return self.paths

    def __setstate__(self, paths: list[str]) -> None:
        self.__init__(paths)


class SubsetWithTargets(Dataset):
    """The items ``indices`` of ``base``, with their ``.targets``."""

    def __init__(self, base: Dataset, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.targets: list[int] = [int(base.targets[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.base[self.indices[index]]


def subset_indices(num_items: int, num_samples: int, seed: int = SUBSET_SEED) -> list[int]:
    """``num_samples`` sorted indices of a fixed random subset of ``range(num_items)``, the
    same in every process."""
    if not 0 < num_samples <= num_items:
        raise ValueError(f"a subset of {num_samples} samples needs 0 < samples <= {num_items}")
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(num_items, generator=generator)[:num_samples].tolist())


def load_dataset(cfg: Any, split: str) -> Dataset:
    """One split of the dataset ``cfg`` (a ``DatasetConfig``) names: ``"train"``/``"test"``
    (STL-10 also ``"unlabeled"``, ``"train+unlabeled"``), a folder for ``image_folder``; the
    fixed subset of ``cfg.train_samples`` / ``cfg.test_samples`` images when set.

    Raises:
        DatasetNotFoundError: the files are missing (and could not be downloaded).
        ValueError: an unknown dataset name or split, or a subset larger than the split.
    """
    loaders = {
        "fashion_mnist": _load_fashion_mnist,
        "cifar10": _load_cifar,
        "cifar100": _load_cifar,
        "stl10": _load_stl10,
        "image_folder": _load_image_folder,
    }
    if cfg.name not in loaders:
        raise ValueError(f"dataset.name={cfg.name!r} is invalid: must be one of {list(loaders)}")
    if cfg.root is not None and not cfg.download and not os.path.isdir(cfg.root):
        unset = "Debian's dataset-fashion-mnist" if cfg.name == "fashion_mnist" else DEFAULT_ROOT
        raise DatasetNotFoundError(
            f"dataset.root={cfg.root} does not exist ({os.path.abspath(cfg.root)}): set it to "
            f"the folder that holds {cfg.name}, leave it unset to read {unset}, or set "
            f"dataset.download=true to download it there"
        )
    dataset = loaders[cfg.name](cfg, split)
    samples, key = None, None
    if split == cfg.train_split and cfg.train_samples is not None:
        samples, key = cfg.train_samples, "dataset.train_samples"
    elif split == cfg.test_split and cfg.test_samples is not None:
        samples, key = cfg.test_samples, "dataset.test_samples"
    if samples is not None:
        if samples > len(dataset):
            raise ValueError(
                f"{key}={samples} is invalid: the {split!r} split of {cfg.name} has only "
                f"{len(dataset)} images"
            )
        dataset = SubsetWithTargets(dataset, subset_indices(len(dataset), samples))
    return dataset


def dataset_root(cfg: Any) -> str:
    """The folder ``cfg`` (a ``DatasetConfig``) reads from: ``dataset.root``, or ``./data``."""
    return DEFAULT_ROOT if cfg.root is None else cfg.root


def _check_split(cfg: Any, split: str, allowed: Sequence[str]) -> None:
    if split not in allowed:
        raise ValueError(
            f"split {split!r} of dataset {cfg.name} is invalid (dataset.train_split / "
            f"dataset.test_split): must be one of {list(allowed)}"
        )


def _download(cfg: Any, make: Callable) -> None:
    """Run a torchvision download, turning its failures into :class:`DatasetNotFoundError`."""
    try:
        make()
    except Exception as err:  # no network, a proxy, a bad mirror: all end the same way
        raise DatasetNotFoundError(
            f"could not download {cfg.name} into {os.path.abspath(dataset_root(cfg))}: {err}"
        ) from err


def _require(cfg: Any, split: str, files: list[str], folder: str, download: Callable) -> None:
    """Download the missing ``files`` with ``dataset.download=true``; raise
    :class:`DatasetNotFoundError` naming those still missing and torchvision's ``folder``."""
    if not all(map(os.path.isfile, files)) and cfg.download:
        _download(cfg, download)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DatasetNotFoundError(
            f"{cfg.name} {split} files not found: {', '.join(map(os.path.abspath, missing))}. "
            f"Set dataset.download=true (needs internet), or put torchvision's {folder} in "
            f"{os.path.abspath(dataset_root(cfg))}."
        )


# --- per-machine caches of what was read from the dataset files -----------------------------

#: Bump when the decoded layout changes: older cache files are then ignored.
_CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where decoded splits (and other per-machine caches) go: ``$SCE_SWEEPS_CACHE``, else
    ``~/.cache/sce_sweeps``."""
    return Path(os.environ.get("SCE_SWEEPS_CACHE") or Path.home() / ".cache" / "sce_sweeps")


def _cache_file(kind: str, sources: Sequence[str], suffix: str) -> Path:
    """``<cache_dir()>/<kind>/<key><suffix>``, keyed by the files' paths, sizes and mtimes."""
    stats = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in sources]
    blob = json.dumps([_CACHE_VERSION, kind, stats]).encode()
    return cache_dir() / kind / f"{hashlib.sha256(blob).hexdigest()[:32]}{suffix}"


def decoded(
    sources: Sequence[str], decode: Callable[[], tuple[np.ndarray, Sequence[int]]]
) -> ArrayImageDataset:
    """The split decoded from the files ``sources``: the first job on a machine decodes them
    and saves a tensor file that later jobs memory-map. A missing, stale or unreadable cache
    file, or a cache directory that cannot be written, only costs the decoding."""
    path = _cache_file("datasets", sources, ".pt")
    try:
        cached = torch.load(path, mmap=True, weights_only=True)
        return ArrayImageDataset(cached["images"].numpy(), cached["targets"].tolist())
    except Exception:  # missing, truncated or of another format: decode
        pass
    images, labels = decode()
    try:
        pixels = torch.from_numpy(images if images.flags.writeable else images.copy())
        state = {"images": pixels, "targets": torch.from_numpy(np.array(labels, np.int64))}
        with atomic_write(path, sync=False) as f:
            torch.save(state, f)
    except OSError:
        pass
    return ArrayImageDataset(images, labels)


# --- Fashion-MNIST: IDX files ---------------------------------------------------------------


def read_idx(path: str) -> np.ndarray:
    """The ``uint8`` array of an IDX file of unsigned bytes (gzip-compressed if ``.gz``)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08" or len(data) < 4:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path} holds {array.size} bytes, its header says {shape}")
    return array.reshape(shape)


def _find_idx(folders: Sequence[str], stem: str) -> str | None:
    """The first of the files ``<folder>/<stem>[.gz]`` that exists, or None."""
    candidates = (os.path.join(f, stem + gz) for f in folders for gz in ("", ".gz"))
    return next((path for path in candidates if os.path.isfile(path)), None)


def _load_fashion_mnist(cfg: Any, split: str) -> ArrayImageDataset:
    _check_split(cfg, split, ("train", "test"))
    prefix = {"train": "train", "test": "t10k"}[split]
    root = dataset_root(cfg)
    folders = [os.path.join(root, "FashionMNIST", "raw"), root]
    if cfg.root is None:  # not set: Debian's copy first, then ./data
        folders.insert(0, SYSTEM_FASHION_MNIST)
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(folders, stem) for stem in stems]
    if None in paths and cfg.download:
        _download(cfg, partial(tvd.FashionMNIST, root, train=split == "train", download=True))
        paths = [_find_idx(folders, stem) for stem in stems]
    if None in paths:
        looked = ", ".join(os.path.abspath(f) for f in folders)
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} files ({stems[0]}[.gz], {stems[1]}[.gz]) not found in: "
            f"{looked}. Install them with `apt-get install dataset-fashion-mnist`, or set "
            f"dataset.download=true (needs internet) to download them into {root}."
        )
    return decoded(paths, lambda: tuple(read_idx(p) for p in paths))


# --- CIFAR-10 / CIFAR-100: python pickles ---------------------------------------------------


def _load_cifar(cfg: Any, split: str) -> ArrayImageDataset:
    _check_split(cfg, split, ("train", "test"))
    spec, root = _CIFAR[cfg.name], dataset_root(cfg)
    folder = os.path.join(root, spec["folder"])
    files = [os.path.join(folder, name) for name in spec[split]]
    cls = tvd.CIFAR10 if cfg.name == "cifar10" else tvd.CIFAR100
    hint = f"{spec['folder']}/ folder (from the python version of the dataset)"
    _require(cfg, split, files, hint, partial(cls, root, train=split == "train", download=True))

    def decode() -> tuple[np.ndarray, list[int]]:
        images, labels = [], []
        for path in files:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            images.append(np.asarray(entry["data"], dtype=np.uint8))
            labels.extend(entry[spec["label_key"]])
        pixels = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(pixels), labels

    return decoded(files, decode)


# --- STL-10: binary files -------------------------------------------------------------------


def _load_stl10(cfg: Any, split: str) -> ArrayImageDataset:
    _check_split(cfg, split, _STL10_SPLITS)
    root = dataset_root(cfg)
    folder = os.path.join(root, "stl10_binary")
    parts = split.split("+")
    needed = [os.path.join(folder, f"{p}_X.bin") for p in parts]
    needed += [os.path.join(folder, f"{p}_y.bin") for p in parts if p != "unlabeled"]
    download = partial(tvd.STL10, root, split=split, download=True)
    _require(cfg, split, needed, "stl10_binary/ folder", download)
    images = _STL10Images(needed[: len(parts)])
    labels: list[int] = []
    for part, x in zip(parts, images.parts):
        if part == "unlabeled":
            labels += [-1] * len(x)
        else:
            y = np.fromfile(os.path.join(folder, f"{part}_y.bin"), dtype=np.uint8)
            labels += (y.astype(np.int64) - 1).tolist()  # stored as 1..10
    return ArrayImageDataset(images, labels)


# --- ImageNet-style folders -----------------------------------------------------------------


def _rgb_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")  # decodes the whole image: a truncated one fails


def _unreadable(path: str) -> bool:
    try:
        _rgb_loader(path)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... on bad files
        return True
    return False


def unreadable_images(root: str, paths: Sequence[str]) -> list[str]:
    """Those of the image files ``paths`` that cannot be decoded, relative to ``root``: each
    decoded once, on a thread per CPU; the answer is cached so that the other jobs of a sweep
    on the same machine do not decode them again."""
    from concurrent.futures import ThreadPoolExecutor

    cached = _cache_file("unreadable", paths, ".json")
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        bad = [os.path.relpath(p, root) for p, b in zip(paths, pool.map(_unreadable, paths)) if b]
    try:
        write_json_atomic(bad, cached, sync=False)
    except OSError:
        pass
    return bad


def listed(paths: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` of ``paths``, and how many more there are."""
    more = len(paths) - shown
    return ", ".join(paths[:shown]) + (f" and {more} more" if more > 0 else "")


class NamedImageFolder(tvd.ImageFolder):
    """torchvision's ImageFolder of RGB images whose undecodable images raise
    :class:`UnreadableImageError`, or, with ``skip_unreadable``, are left out and listed in
    ``unreadable`` (relative to the dataset root)."""

    def __init__(self, folder: str, root: str, skip_unreadable: bool) -> None:
        super().__init__(folder, loader=_rgb_loader)
        self.dataset_root = root
        self.unreadable: list[str] = []
        if skip_unreadable:
            self.unreadable = unreadable_images(root, [p for p, _ in self.samples])
        if self.unreadable:
            bad = set(self.unreadable)
            self.samples = [s for s in self.samples if os.path.relpath(s[0], root) not in bad]
            self.imgs, self.targets = self.samples, [t for _, t in self.samples]
            print(
                f"sce_sweeps: dataset.skip_unreadable: skipping {len(bad)} unreadable images "
                f"of {root}: {listed(self.unreadable)}",
                file=sys.stderr,
                flush=True,
            )

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, target = self.samples[index]
        try:
            return _rgb_loader(path), target
        except Exception as err:  # see _unreadable
            where = os.path.relpath(path, self.dataset_root)
            raise UnreadableImageError(
                f"{where}: unreadable image ({type(err).__name__}: {err}) in the dataset at "
                f"{os.path.abspath(self.dataset_root)}; set dataset.skip_unreadable=true to "
                "leave out the images that cannot be decoded"
            ) from None


def _load_image_folder(cfg: Any, split: str) -> Dataset:
    folder = os.path.join(dataset_root(cfg), split)
    hint = (
        f"Expected the layout <root>/<split>/<class>/<image>, i.e. "
        f"{os.path.abspath(folder)}/<class>/<image> (dataset.root={cfg.root}, split={split})."
    )
    if not os.path.isdir(folder):
        raise DatasetNotFoundError(f"image folder {os.path.abspath(folder)} not found. {hint}")
    skip = bool(getattr(cfg, "skip_unreadable", False))  # configs from before the option
    try:
        return NamedImageFolder(folder, dataset_root(cfg), skip)
    except FileNotFoundError as err:  # no class folders, or no images in them
        raise DatasetNotFoundError(f"{err}. {hint}") from err
