"""The weighted kNN on raw pixels: the same kNN as the network's, cached per data."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sce_sweeps.engine.knn import pixel_knn_accuracy
from tests.helpers import TINY, read_json, run_cli


def _loaders(seed=0, n_bank=300, n_query=100, classes=4):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 1, 6, 6, generator=g)
    yb = torch.randint(classes, (n_bank,), generator=g)
    yq = torch.randint(classes, (n_query,), generator=g)
    xb = centres[yb] + 1.5 * torch.randn(n_bank, 1, 6, 6, generator=g)
    xq = centres[yq] + 1.5 * torch.randn(n_query, 1, 6, 6, generator=g)
    return DataLoader(TensorDataset(xb, yb), 64), DataLoader(TensorDataset(xq, yq), 64)


def _naive(bank_loader, query_loader, classes, k, temp):
    xb, yb = (torch.cat(t) for t in zip(*bank_loader))
    xq, yq = (torch.cat(t) for t in zip(*query_loader))
    bank, queries = F.normalize(xb.flatten(1), dim=1), F.normalize(xq.flatten(1), dim=1)
    correct = 0
    for q, label in zip(queries, yq):
        sims = [(float(q @ b), int(c)) for b, c in zip(bank, yb)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * classes
        for sim, c in sims[:k]:
            votes[c] += torch.tensor(sim / temp).exp().item()
        correct += int(max(range(classes), key=votes.__getitem__) == int(label))
    return 100.0 * correct / len(yq)


@pytest.mark.parametrize("k", [1, 20, 200])
def test_pixel_knn_matches_a_naive_loop(k, tmp_path, monkeypatch):
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path))
    bank, queries = _loaders()
    got = pixel_knn_accuracy(bank, queries, 4, k=k, temp=0.1, cache=False)
    assert got == pytest.approx(_naive(bank, queries, 4, k, 0.1), abs=1e-6)
    assert 25.0 < got <= 100.0  # well above chance on separable data


def test_pixel_knn_is_cached_per_bank_and_queries(tmp_path, monkeypatch):
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path))
    bank, queries = _loaders()
    first = pixel_knn_accuracy(bank, queries, 4)
    (entry,) = (tmp_path / "knn_pixels").glob("*.json")
    assert json.loads(entry.read_text())["knn_top1_pixels"] == first
    entry.write_text(json.dumps({"knn_top1_pixels": 12.5}))
    assert pixel_knn_accuracy(bank, queries, 4) == 12.5  # read back, not recomputed
    assert pixel_knn_accuracy(bank, queries, 4, k=5) != 12.5  # another k: another entry
    other_bank, _ = _loaders(seed=1)
    assert pixel_knn_accuracy(other_bank, queries, 4) != 12.5  # other pixels: another entry
    assert len(list((tmp_path / "knn_pixels").glob("*.json"))) == 3


@pytest.mark.slow
def test_a_run_records_both_baselines(tmp_path, monkeypatch):
    """A real run on Fashion-MNIST with eval_random_init records the random-init network's
    kNN and the raw-pixel kNN on the same bank and queries."""
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    overrides = [*TINY, "trainer.epochs=1", "trainer.eval_random_init=true"]
    run_cli(*overrides, "tracker=none", f"hydra.run.dir={run_dir}")
    result = read_json(run_dir / "result.json")
    assert 10.0 < result["knn_top1_pixels"] <= 100.0
    assert 10.0 < result["knn_top1_init"] <= 100.0
    (entry,) = (tmp_path / "cache" / "knn_pixels").glob("*.json")
    assert json.loads(entry.read_text())["knn_top1_pixels"] == result["knn_top1_pixels"]
