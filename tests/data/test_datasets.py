"""Loaders of sce_sweeps.data.datasets on tiny fixtures in the real on-disk formats."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets as tvd

from sce_sweeps.config import Config, ConfigError, DatasetConfig
from sce_sweeps.data import DatasetNotFoundError, build_datasets, load_dataset
from sce_sweeps.data import datasets as ds
from sce_sweeps.data.datasets import subset_indices
from tests.synthetic import (
    write_cifar,
    write_fashion_mnist,
    write_image_folder,
    write_stl10,
)

REAL_FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def no_md5(monkeypatch):
    """Let torchvision's own readers (the reference) open fixtures that are not the official
    files: their md5 check becomes an existence check. Our loaders are not touched."""
    import torchvision.datasets.cifar
    import torchvision.datasets.stl10

    def exists(path, md5=None) -> bool:
        return os.path.isfile(path)

    for module in (torchvision.datasets.cifar, torchvision.datasets.stl10):
        monkeypatch.setattr(module, "check_integrity", exists)


def dataset_cfg(**overrides) -> DatasetConfig:
    return OmegaConf.structured(DatasetConfig(**overrides))


def rgb_cfg(name: str, root, **overrides) -> DatasetConfig:
    return dataset_cfg(
        name=name, root=str(root), in_channels=3, mean=[0.5] * 3, std=[0.25] * 3, **overrides
    )


def as_array(dataset, index: int) -> np.ndarray:
    return np.asarray(dataset[index][0])


@pytest.mark.parametrize("layout", ["plain", "torchvision"])
@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx(tmp_path, layout, compress):
    write_fashion_mnist(tmp_path, 30, 12, layout=layout, compress=compress)
    train = load_dataset(dataset_cfg(root=str(tmp_path)), "train")
    test = load_dataset(dataset_cfg(root=str(tmp_path)), "test")
    assert (len(train), len(test)) == (30, 12)
    image, label = train[3]
    assert image.mode == "L" and image.size == (28, 28) and label == train.targets[3]
    if layout == "torchvision" and not compress:  # torchvision reads the same files the same way
        reference = tvd.FashionMNIST(str(tmp_path), train=True, download=False)
        assert train.targets == reference.targets.tolist()
        assert np.array_equal(as_array(train, 5), reference.data[5].numpy())


def test_cifar10_matches_torchvision_reader(tmp_path, no_md5):
    write_cifar(tmp_path, "cifar10", num_train=23, num_test=7)
    train = load_dataset(rgb_cfg("cifar10", tmp_path), "train")
    test = load_dataset(rgb_cfg("cifar10", tmp_path), "test")
    assert (len(train), len(test)) == (23, 7)
    assert train[0][0].mode == "RGB" and train[0][0].size == (32, 32)

    for split, ours in (("train", train), ("test", test)):
        reference = tvd.CIFAR10(str(tmp_path), train=split == "train")
        assert ours.targets == list(reference.targets)
        for i in (0, len(ours) - 1):
            assert np.array_equal(as_array(ours, i), reference.data[i])


def test_cifar100_fine_labels(tmp_path, no_md5):
    write_cifar(tmp_path, "cifar100", num_train=40, num_test=10)
    train = load_dataset(rgb_cfg("cifar100", tmp_path, num_classes=100), "train")

    reference = tvd.CIFAR100(str(tmp_path), train=True)
    assert train.targets == list(reference.targets)
    assert np.array_equal(as_array(train, 7), reference.data[7])


def test_stl10_splits_match_torchvision_reader(tmp_path, no_md5):
    write_stl10(tmp_path, num_train=6, num_test=4, num_unlabeled=5)
    cfg = rgb_cfg("stl10", tmp_path)

    for split in ("train", "test", "unlabeled", "train+unlabeled"):
        ours = load_dataset(cfg, split)
        reference = tvd.STL10(str(tmp_path), split=split)
        assert ours.targets == reference.labels.tolist()
        assert ours[0][0].size == (96, 96)
        for i in (0, len(ours) - 1):
            assert np.array_equal(as_array(ours, i), np.asarray(reference[i][0]))


def test_image_folder_rgb(tmp_path):
    Image.new("L", (20, 20), 128).save(tmp_path / "gray.png")
    write_image_folder(tmp_path, {"train": 9, "val": 3}, num_classes=3)
    os.replace(tmp_path / "gray.png", tmp_path / "train" / "class0" / "zz_gray.png")
    train = load_dataset(rgb_cfg("image_folder", tmp_path), "train")
    assert len(train) == 10 and sorted(set(train.targets)) == [0, 1, 2]
    assert all(train[i][0].mode == "RGB" for i in range(len(train)))
    assert len(load_dataset(rgb_cfg("image_folder", tmp_path), "val")) == 3


@pytest.mark.skipif(not os.path.isdir(REAL_FMNIST), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    cfg = dataset_cfg(root=None)  # no root: Debian's package
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    assert (len(train), len(test)) == (60000, 10000)
    for split in (train, test):
        assert sorted(set(split.targets)) == list(range(10))
        assert np.bincount(split.targets).min() == len(split) // 10  # balanced classes
    image, label = test[0]
    assert image.mode == "L" and image.size == (28, 28) and label == 9  # an ankle boot


def test_subset_is_fixed_and_seed_independent(tmp_path):
    write_fashion_mnist(tmp_path, 50, 20)
    cfg = dataset_cfg(root=str(tmp_path), train_samples=10, test_samples=5)
    a, b = load_dataset(cfg, "train"), load_dataset(cfg, "train")
    full = load_dataset(dataset_cfg(root=str(tmp_path)), "train")
    assert len(a) == 10 and a.indices == b.indices and a.targets == b.targets
    assert a.indices != list(range(10))  # random, not the first ones
    assert a.targets == [full.targets[i] for i in a.indices]
    assert np.array_equal(as_array(a, 3), as_array(full, a.indices[3]))
    assert len(load_dataset(cfg, "test")) == 5
    with pytest.raises(ValueError, match="dataset.train_samples=51"):
        load_dataset(dataset_cfg(root=str(tmp_path), train_samples=51), "train")


@pytest.mark.e2e
def test_subset_and_sample_seeds_same_in_another_process():
    code = (
        "from sce_sweeps.data import EpochSampler;"
        "from sce_sweeps.data.datasets import subset_indices;"
        "print(subset_indices(1000, 7), list(EpochSampler(100, 3, 2, 4))[:3])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from sce_sweeps.data import EpochSampler

    assert out.stdout.strip() == f"{subset_indices(1000, 7)} {list(EpochSampler(100, 3, 2, 4))[:3]}"


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "cifar100", "stl10", "image_folder"])
def test_missing_dataset_names_the_path(tmp_path, monkeypatch, name):
    monkeypatch.setattr(ds, "SYSTEM_FASHION_MNIST", str(tmp_path / "no-system-copy"))
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(rgb_cfg(name, root), "train")
    assert str(root) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    hints = {
        "fashion_mnist": "apt-get install dataset-fashion-mnist",
        "image_folder": "<root>/<split>/<class>/<image>",
    }
    assert hints.get(name, "dataset.download=true") in str(info.value)


@pytest.fixture
def system_copy(tmp_path, monkeypatch):
    """A tiny stand-in for Debian's Fashion-MNIST files (50 train / 20 test images)."""
    folder = tmp_path / "system"
    write_fashion_mnist(folder, 50, 20)
    monkeypatch.setattr(ds, "SYSTEM_FASHION_MNIST", str(folder))
    return folder


def test_unset_root_reads_the_system_copy_of_fashion_mnist(system_copy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data here
    assert len(load_dataset(dataset_cfg(root=None), "train")) == 50


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "stl10", "image_folder"])
def test_explicit_root_that_does_not_exist_is_an_error(system_copy, tmp_path, name):
    root = tmp_path / "typo"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(rgb_cfg(name, root), "train")
    message = str(info.value)
    assert f"dataset.root={root} does not exist" in message and "\n" not in message


def test_explicit_root_never_falls_back_to_the_system_copy(system_copy, tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetNotFoundError, match="not found in: " + str(tmp_path / "mine")):
        load_dataset(dataset_cfg(root=str(tmp_path / "mine")), "train")
    write_fashion_mnist(tmp_path / "mine", 30, 10)
    assert len(load_dataset(dataset_cfg(root=str(tmp_path / "mine")), "train")) == 30


def test_empty_image_folder_is_not_found(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetNotFoundError, match="<root>/<split>/<class>/<image>"):
        load_dataset(rgb_cfg("image_folder", tmp_path), "train")


def test_bad_split_is_a_value_error(tmp_path):
    write_fashion_mnist(tmp_path, 10, 10)
    with pytest.raises(ValueError, match="dataset.train_split"):
        load_dataset(dataset_cfg(root=str(tmp_path)), "val")


def run_cfg(**dataset) -> Config:
    cfg = OmegaConf.structured(Config)
    cfg.dataset = OmegaConf.merge(cfg.dataset, dataset)
    return cfg


def test_build_datasets_channel_mismatch(tmp_path):
    write_cifar(tmp_path, "cifar10", 10, 10)
    cfg = run_cfg(name="cifar10", root=str(tmp_path))  # in_channels=1 by default
    with pytest.raises(ConfigError, match=r"dataset.in_channels=1 .* 3 channel"):
        build_datasets(cfg)


def test_build_datasets_label_range(tmp_path):
    write_cifar(tmp_path, "cifar100", 30, 10)
    cfg = run_cfg(
        name="cifar100",
        root=str(tmp_path),
        in_channels=3,
        mean=[0.5] * 3,
        std=[0.2] * 3,
        num_classes=10,
    )
    with pytest.raises(ConfigError, match="dataset.num_classes=10"):
        build_datasets(cfg)


def test_build_datasets_stl10_unlabeled_uses_train_as_bank(tmp_path):
    write_stl10(tmp_path, num_train=4, num_test=3, num_unlabeled=5)
    cfg = run_cfg(
        name="stl10",
        root=str(tmp_path),
        in_channels=3,
        mean=[0.5] * 3,
        std=[0.2] * 3,
        train_split="train+unlabeled",
    )
    cfg.aug.crop_size = 64
    cfg.trainer.batch_size, cfg.loss.queue_size = 4, 8
    ssl, bank, queries = build_datasets(cfg)
    assert (len(ssl), len(bank), len(queries)) == (9, 4, 3)
    assert ssl.targets[-1] == -1 and min(bank.targets) >= 0
    assert bank[0][0].shape == (3, 64, 64)


@pytest.mark.parametrize(
    ("dataset", "queue", "batch", "key", "found"),
    [
        ({"train_samples": 40}, 41, 8, "loss.queue_size=41", "40 training images"),
        ({}, 4096, 8, "loss.queue_size=4096", "50 training images"),  # nominally 60000
        ({"train_samples": 40}, 16, 41, "trainer.batch_size=41", "40 training images"),
    ],
)
def test_queue_and_batch_are_checked_against_the_images_there(
    tmp_path, dataset, queue, batch, key, found
):
    write_fashion_mnist(tmp_path, 50, 20)
    cfg = run_cfg(root=str(tmp_path), **dataset)
    cfg.loss.queue_size, cfg.trainer.batch_size = queue, batch
    with pytest.raises(ConfigError) as info:
        build_datasets(cfg)
    message = str(info.value)
    assert message.startswith(key) and found in message and str(tmp_path) in message
    cfg.loss.queue_size, cfg.trainer.batch_size = 40, 40
    assert len(build_datasets(cfg)[0]) == dataset.get("train_samples", 50)


def test_bad_root_and_queue_are_one_line_from_the_app(tmp_path):
    from tests.support import TINY, run_in_process

    typo = run_in_process(*TINY, "tracker=none", f"dataset.root={tmp_path / 'typo'}",
                          f"hydra.run.dir={tmp_path / 'a'}")  # fmt: skip
    assert typo.returncode == 1
    line = f"run failed: DatasetNotFoundError: dataset.root={tmp_path / 'typo'} does not exist"
    assert line in typo.stderr, typo.stderr[-2000:]

    write_fashion_mnist(tmp_path / "small", 100, 20)  # fewer images than the 60000 nominal
    small = [f"dataset.root={tmp_path / 'small'}", "dataset.train_samples=null"]
    queue = run_in_process(*TINY, "tracker=none", *small, "dataset.test_samples=null",
                           f"hydra.run.dir={tmp_path / 'b'}")  # fmt: skip
    assert queue.returncode == 1
    line = "run failed: ConfigError: loss.queue_size=128 is invalid: must be <= the 100 training"
    assert line in queue.stderr, queue.stderr[-2000:]


def _damage(root) -> list[str]:
    """Cut one PNG of the train split short and add a file that is no image at all; their
    paths relative to the dataset root."""
    png = root / "train" / "class1" / sorted(os.listdir(root / "train" / "class1"))[0]
    png.write_bytes(png.read_bytes()[:60])  # truncated, as by a copy that stopped
    (root / "train" / "class2" / "zz_notes.png").write_bytes(b"not an image\n")
    return [f"train/class1/{png.name}", "train/class2/zz_notes.png"]


def _first_item_error(dataset, num_workers: int) -> str:
    loader = DataLoader(dataset, batch_size=4, num_workers=num_workers, collate_fn=len)
    with pytest.raises(ds.UnreadableImageError) as err:
        for _ in loader:
            pass
    return str(err.value)


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.e2e)])  # workers fork
def test_a_damaged_image_is_named_with_the_option_that_skips_it(tmp_path, num_workers):
    write_image_folder(tmp_path, {"train": 12, "val": 3}, num_classes=3)
    damaged = _damage(tmp_path)
    train = load_dataset(rgb_cfg("image_folder", tmp_path), "train")
    assert len(train) == 13  # listed; read only when used
    message = _first_item_error(train, num_workers)  # from a DataLoader worker too
    assert message.splitlines()[0] == message  # one line, not the worker's traceback
    assert message.startswith(f"{damaged[0]}: unreadable image (")
    assert "dataset.skip_unreadable=true" in message


def test_skip_unreadable_drops_counts_and_logs_the_damaged_images(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path / "cache"))
    write_image_folder(tmp_path / "data", {"train": 12, "val": 3}, num_classes=3)
    damaged = _damage(tmp_path / "data")
    cfg = rgb_cfg("image_folder", tmp_path / "data", skip_unreadable=True)
    for _ in range(2):  # the second time from the cached scan
        train = load_dataset(cfg, "train")
        assert len(train) == 11 and train.unreadable == damaged
        assert all(train[i][0].mode == "RGB" for i in range(len(train)))
        assert len(train.targets) == 11
        err = capfd.readouterr().err
        assert "skipping 2 unreadable images" in err and all(d in err for d in damaged)
    assert load_dataset(cfg, "val").unreadable == []
    # a damaged file replaced by a good one is read again
    Image.new("RGB", (40, 36)).save(tmp_path / "data" / damaged[1])
    assert load_dataset(cfg, "train").unreadable == damaged[:1]
