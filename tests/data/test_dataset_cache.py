"""Decoded splits are cached as tensor files: decoded once, then read back unchanged."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from omegaconf import OmegaConf

from sce_sweeps.config import DatasetConfig
from sce_sweeps.data.datasets import cache_dir, load_dataset
from tests.synthetic import write_fake_dataset


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path / "cache"))
    return cache_dir() / "datasets"


def _pixels(dataset):
    return np.stack([np.asarray(dataset[i][0]) for i in range(len(dataset))])


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist"])
def test_second_load_reads_the_cache_and_sees_the_same_split(tmp_path, cache, monkeypatch, name):
    write_fake_dataset(name, tmp_path / "data", num_train=20, num_test=10)
    cfg = OmegaConf.structured(DatasetConfig(name=name, root=str(tmp_path / "data")))
    first = load_dataset(cfg, "train")
    assert len(list(cache.glob("*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(pickle, "load", no_decoding)
    monkeypatch.setattr("sce_sweeps.data.datasets.read_idx", no_decoding)
    second = load_dataset(cfg, "train")
    assert second.targets == first.targets
    assert np.array_equal(_pixels(second), _pixels(first))


def test_changed_files_are_decoded_again(tmp_path, cache):
    root = tmp_path / "data"
    write_fake_dataset("cifar10", root, num_train=20, num_test=10)
    cfg = OmegaConf.structured(DatasetConfig(name="cifar10", root=str(root)))
    load_dataset(cfg, "test")
    write_fake_dataset("cifar10", root, num_train=20, num_test=12)  # new test_batch
    assert len(load_dataset(cfg, "test")) == 12
    assert len(list(cache.glob("*.pt"))) == 2


def test_a_corrupt_or_unwritable_cache_only_costs_the_decoding(tmp_path, cache, monkeypatch):
    write_fake_dataset("cifar10", tmp_path / "data", num_train=20, num_test=10)
    cfg = OmegaConf.structured(DatasetConfig(name="cifar10", root=str(tmp_path / "data")))
    expected = load_dataset(cfg, "test")
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(b"not a tensor file")
    assert np.array_equal(_pixels(load_dataset(cfg, "test")), _pixels(expected))
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(not_a_dir))  # mkdir fails under it
    assert np.array_equal(_pixels(load_dataset(cfg, "test")), _pixels(expected))
