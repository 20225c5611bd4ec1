"""The evaluation of raw pixels: the same kNN and linear probe as the network's, cached per
data."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sce_sweeps.engine.baselines import pixel_metrics
from sce_sweeps.engine.knn import linear_probe_top1, pixel_features
from tests.support import TINY, read_json, run_cli


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
    got = pixel_metrics(bank, queries, 4, k, 0.1, False)["knn_top1_pixels"]
    assert got == pytest.approx(_naive(bank, queries, 4, k, 0.1), abs=1e-6)
    assert 25.0 < got <= 100.0  # well above chance on separable data


def _pixel_knn(bank, queries, k=200, linear_probe=False):
    return pixel_metrics(bank, queries, 4, k, 0.1, linear_probe)["knn_top1_pixels"]


def test_pixel_knn_is_cached_per_bank_and_queries(tmp_path, monkeypatch):
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path))
    bank, queries = _loaders()
    first = _pixel_knn(bank, queries)
    (entry,) = (tmp_path / "baselines_pixels").glob("*.json")
    assert json.loads(entry.read_text())["knn_top1_pixels"] == first
    entry.write_text(json.dumps({"knn_top1_pixels": 12.5}))
    assert _pixel_knn(bank, queries) == 12.5  # read back, not recomputed
    assert _pixel_knn(bank, queries, k=5) != 12.5  # another k: another entry
    assert _pixel_knn(bank, queries, linear_probe=True) != 12.5  # with the probe: another
    other_bank, _ = _loaders(seed=1)
    assert _pixel_knn(other_bank, queries) != 12.5  # other pixels: another entry
    assert len(list((tmp_path / "baselines_pixels").glob("*.json"))) == 4


def test_the_linear_probe_separates_separable_classes_deterministically():
    bank, queries = _loaders(n_bank=600, n_query=200)
    train, test = pixel_features(bank), pixel_features(queries)
    top1 = linear_probe_top1(*train, *test, 4, epochs=30)
    assert top1 == linear_probe_top1(*train, *test, 4, epochs=30)
    assert top1 > 90.0  # well-separated Gaussian classes: a linear boundary exists
    shuffled = train[1][torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(0))]
    assert linear_probe_top1(train[0], shuffled, *test, 4, epochs=30) < 50.0  # labels matter


@pytest.mark.slow
def test_a_run_records_both_baselines(tmp_path, monkeypatch):
    """A real run on Fashion-MNIST with eval_random_init records the random-init network's
    kNN and the raw-pixel kNN on the same bank and queries."""
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    overrides = [*TINY, "trainer.epochs=1", "trainer.eval_random_init=true"]
    overrides += ["trainer.linear_probe=true"]
    run_cli(*overrides, "tracker=none", f"hydra.run.dir={run_dir}")
    result = read_json(run_dir / "result.json")
    assert 10.0 < result["knn_top1_pixels"] <= 100.0
    assert 10.0 < result["knn_top1_init"] <= 100.0
    for metric in ("probe_top1", "probe_top1_init", "probe_top1_pixels"):
        assert 10.0 < result[metric] <= 100.0, metric
    (entry,) = (tmp_path / "cache" / "baselines_pixels").glob("*.json")
    assert json.loads(entry.read_text())["knn_top1_pixels"] == result["knn_top1_pixels"]
