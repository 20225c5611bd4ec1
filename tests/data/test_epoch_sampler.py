"""EpochSampler: seeded permutations in full batches, mid-epoch resume, worker independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from sce_sweeps.config import AugConfig, DatasetConfig
from sce_sweeps.data import EpochSampler, SSLDataset, collate_views, sample_seed, steps_per_epoch
from sce_sweeps.data.datasets import ArrayImageDataset
from sce_sweeps.data.views import build_ssl_transform


def test_permutation_in_full_batches():
    items = list(EpochSampler(num_samples=103, seed=0, epoch=0, batch_size=10))
    indices = [i for i, _ in items]
    assert len(items) == len(EpochSampler(103, 0, 0, 10)) == 100 == 10 * steps_per_epoch(103, 10)
    assert len(set(indices)) == 100 and set(indices) <= set(range(103))
    assert indices != sorted(indices)
    assert all(s == sample_seed(0, 0, i) and 0 <= s < 2**63 for i, s in items)
    assert len({s for _, s in items}) == 100


def test_same_arguments_same_items_and_epochs_differ():
    a, b = list(EpochSampler(64, 5, 3, 8)), list(EpochSampler(64, 5, 3, 8))
    assert a == b
    next_epoch = list(EpochSampler(64, 5, 4, 8))
    other_seed = list(EpochSampler(64, 6, 3, 8))
    assert [i for i, _ in a] != [i for i, _ in next_epoch] != [i for i, _ in other_seed]
    assert sample_seed(5, 3, 0) != sample_seed(5, 4, 0) != sample_seed(6, 3, 0)


@pytest.mark.parametrize("start_step", [0, 1, 4, 7])
def test_resume_is_the_tail_of_the_epoch(start_step):
    full = list(EpochSampler(60, 1, 2, 8))  # 7 steps
    resumed = EpochSampler(60, 1, 2, 8, start_step=start_step)
    assert list(resumed) == full[start_step * 8 :]
    assert len(resumed) == (7 - start_step) * 8


def test_set_epoch_and_max_steps():
    sampler = EpochSampler(60, 1, 0, 8, max_steps=3)
    assert len(sampler) == 24 and sampler.steps == 3
    assert list(sampler) == list(EpochSampler(60, 1, 0, 8))[:24]
    sampler.set_epoch(2, start_step=1)
    assert list(sampler) == list(EpochSampler(60, 1, 2, 8))[8:24]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="batch of 16"):
        EpochSampler(10, 0, 0, 16)
    with pytest.raises(ValueError, match="start_step=8"):
        EpochSampler(60, 0, 0, 8, start_step=8)


@pytest.mark.e2e
def test_batches_identical_with_workers_and_after_resume():
    aug = OmegaConf.structured(AugConfig(crop_size=20, blur_p=0.5, solarize_p=0.2))
    dataset = OmegaConf.structured(DatasetConfig())
    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    ssl = SSLDataset(
        ArrayImageDataset(images, [i % 10 for i in range(24)]), build_ssl_transform(aug, dataset)
    )

    def batches(workers: int, start_step: int = 0):
        sampler = EpochSampler(len(ssl), seed=0, epoch=1, batch_size=4, start_step=start_step)
        loader = DataLoader(
            ssl, batch_size=4, sampler=sampler, collate_fn=collate_views, num_workers=workers
        )
        return list(loader)

    serial, parallel, resumed = batches(0), batches(2), batches(0, start_step=4)
    assert len(serial) == 6 and len(resumed) == 2
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a[1], b[1])
        assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    for a, b in zip(serial[4:], resumed, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
