"""Data of an SCE run: datasets, augmented views, and a resumable, seeded epoch sampler.

Augmentations are a pure function of ``(index, sample_seed)``: :class:`EpochSampler` yields
those pairs (a seeded permutation per epoch, which can start mid-epoch), and
:class:`SSLDataset` seeds torch's CPU generator with ``sample_seed`` around each transform.
So a batch is bit-identical whatever the number of DataLoader workers, and a run resumed at
step ``k`` of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from sce_sweeps.config import ConfigError
from sce_sweeps.data.datasets import (
    DatasetNotFoundError,
    NamedImageFolder,
    dataset_root,
    listed,
    load_dataset,
    unreadable_images,
)
from sce_sweeps.data.loader import StopSafeDataLoader  # noqa: F401  (the trainer's loader)
from sce_sweeps.data.views import build_eval_transform, build_ssl_transform


def _hash63(*values: int) -> int:
    """A 63-bit int from ints, the same in every process (unlike ``hash``)."""
    blob = ",".join(str(int(v)) for v in values).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") & (2**63 - 1)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` of a run seeded ``seed``."""
    return _hash63(seed, epoch, index)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator (not CUDA's) and ``random`` with ``seed``, restoring both
    afterwards: the training loop's randomness is the same with 0 or many DataLoader workers."""
    torch_state = torch.get_rng_state()
    random_state = random.getstate()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(random_state)


def steps_per_epoch(num_samples: int, batch_size: int, max_steps: int | None = None) -> int:
    """Full batches in one epoch (the last incomplete one is dropped), capped at ``max_steps``;
    ValueError if not even one full batch fits in ``num_samples``."""
    if batch_size <= 0 or num_samples < batch_size:
        raise ValueError(
            f"a batch of {batch_size} needs at least that many samples, got {num_samples}"
        )
    steps = num_samples // batch_size
    return steps if max_steps is None else min(steps, max_steps)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` for one epoch: a seeded permutation in full batches.

    The permutation of ``hash(seed, epoch)`` is cut to ``steps_per_epoch(...) * batch_size``
    items (at most ``max_steps`` batches); iteration starts at batch ``start_step``, so that a
    run resumed mid-epoch skips the batches it has trained on. With several processes
    ``batch_size`` is the global batch and ``rank`` yields its contiguous slice of each one
    (``local_batch_size``); the ranks' slices, in rank order, are the batches of one process.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        epoch: int,
        batch_size: int,
        start_step: int = 0,
        max_steps: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size or not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} of {world_size}: the batch of {batch_size} must split evenly"
            )
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = batch_size // world_size
        self.num_samples, self.seed, self.batch_size = num_samples, seed, batch_size
        self.steps = steps_per_epoch(num_samples, batch_size, max_steps)
        self.set_epoch(epoch, start_step)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Move to ``epoch``, starting at batch ``start_step`` (reuse with persistent workers)."""
        if not 0 <= start_step <= self.steps:
            raise ValueError(f"start_step={start_step} must be in [0, {self.steps}]")
        self.epoch = epoch
        self.start_step = start_step

    def permutation(self) -> list[int]:
        """The epoch's full order of dataset indices (all ``steps`` batches, from step 0)."""
        generator = torch.Generator().manual_seed(_hash63(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=generator)
        return order[: self.steps * self.batch_size].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.permutation()[self.start_step * self.batch_size :]
        if self.world_size > 1:  # this rank's slice of each global batch
            b, lo = self.local_batch_size, self.rank * self.local_batch_size
            order = [
                i for s in range(0, len(order), self.batch_size) for i in order[s + lo : s + lo + b]
            ]
        for index in order:
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.local_batch_size


class EvalDataset(Dataset):
    """A base dataset of ``(PIL.Image, int)`` with ``.targets``, and a deterministic transform
    (kNN bank and queries: :func:`build_eval_transform`)."""

    def __init__(self, base: Dataset, transform: Callable[[Image.Image], Any]) -> None:
        self.base = base
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        """The labels of the base dataset (``-1`` for unlabeled images)."""
        return self.base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), int(label)


class SSLDataset(EvalDataset):
    """A base dataset with the multi-view SSL transform (:func:`build_ssl_transform`),
    indexed by ``(index, sample_seed)``."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor], int]:
        """The views of image ``index`` drawn with ``sample_seed``, and its label."""
        index, seed = key
        with seeded(seed):
            return super().__getitem__(index)


def collate_views(
    batch: list[tuple[list[torch.Tensor], int]],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stack a list of ``(views, label)`` into ``([N x C x H x W per view], N labels)``."""
    views, labels = zip(*batch, strict=True)
    stacked = [torch.stack(position) for position in zip(*views, strict=True)]
    return stacked, torch.tensor(labels, dtype=torch.long)


def _check_dataset(cfg: Any, base: Dataset, key: str, split: str, labelled: bool) -> None:
    """Fail with a :class:`ConfigError` if channels or labels contradict ``cfg.dataset``."""
    d = cfg.dataset
    if len(base) == 0:
        raise ConfigError(f"{key}={split!r} is invalid: the split has no images")
    channels = len(base[0][0].getbands())
    if channels != d.in_channels:
        raise ConfigError(
            f"dataset.in_channels={d.in_channels} is invalid: the images of {d.name} "
            f"(root {d.root}, split {split!r}) have {channels} channel(s); set "
            f"dataset.in_channels={channels} with matching dataset.mean/std"
        )
    if labelled:
        low, high = min(base.targets), max(base.targets)
        if low < 0 or high >= d.num_classes:
            raise ConfigError(
                f"dataset.num_classes={d.num_classes} is invalid: the labels of {d.name} "
                f"(split {split!r}) range over [{low}, {high}]"
            )


def _check_size(cfg: Any, num_train: int) -> None:
    """Fail with a :class:`ConfigError` if a batch or the queue outgrows the train images there;
    :func:`sce_sweeps.config.validate` only knows the nominal size of a dataset."""
    d = cfg.dataset
    where = f"{num_train} training images of {d.name} in {dataset_root(d)}"
    if d.train_samples is not None:
        where += f" (dataset.train_samples={d.train_samples})"
    for key, value in (
        ("trainer.batch_size", cfg.trainer.batch_size),
        ("loss.queue_size", cfg.loss.queue_size),
    ):
        if value > num_train:
            raise ConfigError(f"{key}={value} is invalid: must be <= the {where}")


def build_datasets(cfg: Any) -> tuple[SSLDataset, EvalDataset, EvalDataset]:
    """The datasets ``(ssl_train, knn_bank, knn_queries)`` of a run: the train split with the
    SSL views, the train split with the eval transform (for STL-10 trained on ``unlabeled`` /
    ``train+unlabeled``, the labelled ``train`` split), and the test split with it.

    Raises:
        DatasetNotFoundError: if a split's files are missing.
        ConfigError: if the images' channels or labels contradict ``cfg.dataset``, or a batch
            or the queue holds more images than the train split has.
    """
    d, aug = cfg.dataset, cfg.aug
    train = load_dataset(d, d.train_split)
    bank, bank_split = train, d.train_split
    if d.name == "stl10" and "unlabeled" in d.train_split:
        bank, bank_split = load_dataset(d, "train"), "train"
    test = load_dataset(d, d.test_split)
    _check_dataset(cfg, train, "dataset.train_split", d.train_split, labelled=bank is train)
    if bank is not train:
        _check_dataset(cfg, bank, "dataset.train_split", bank_split, labelled=True)
    _check_dataset(cfg, test, "dataset.test_split", d.test_split, labelled=True)
    _check_size(cfg, len(train))
    eval_transform = build_eval_transform(d, aug)
    return (
        SSLDataset(train, build_ssl_transform(aug, d)),
        EvalDataset(bank, eval_transform),
        EvalDataset(test, eval_transform),
    )


def unreadable_of(*datasets: Dataset) -> list[str]:
    """The image files that the datasets (or the datasets they wrap) left out as unreadable
    (``dataset.skip_unreadable``), relative to the dataset root, each once."""
    found: dict[str, None] = {}
    for dataset in datasets:
        while dataset is not None:
            found.update(dict.fromkeys(getattr(dataset, "unreadable", [])))
            dataset = getattr(dataset, "base", None)
    return list(found)


_CHECKED: dict[str, list[str]] = {}  # the problems of each dataset config checked already


def check_data(cfg: Any) -> list[str]:
    """The problems of a run's data, found by reading it all without training: one line per
    split that is missing or holds image files that cannot be decoded (with the option that
    leaves them out); none when every file reads. A sweep's dry run calls it on every job
    (``hydra.launcher.check_data=true``); a dataset is read once per process."""
    d = cfg.dataset
    key = repr(sorted(dict(d).items()))
    if key in _CHECKED:
        return _CHECKED[key]
    problems = []
    for split in dict.fromkeys([d.train_split, d.test_split]):
        try:
            dataset = load_dataset(d, split)
        except (DatasetNotFoundError, ValueError) as err:
            problems.append(f"{d.name} {split}: {err}")
            continue
        base = getattr(dataset, "base", dataset)
        if not isinstance(base, NamedImageFolder):
            continue  # decoded whole when loaded
        bad = base.unreadable or unreadable_images(base.dataset_root, [p for p, _ in base.samples])
        skip = "set dataset.skip_unreadable=true to leave them out"
        if d.skip_unreadable:
            skip = "left out by dataset.skip_unreadable=true"
        if bad:
            where = f"{base.dataset_root} ({split})"
            problems.append(f"{len(bad)} unreadable images in {where}: {listed(bad)}; {skip}")
    _CHECKED[key] = problems
    return problems
