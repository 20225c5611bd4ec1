"""The random-init kNN baseline is evaluated once per sweep for the same network and data."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from sce_sweeps.app import CONF_DIR
from sce_sweeps.engine.init_knn import CACHE, cached_init_knn, init_key
from sce_sweeps.engine.train import train
from sce_sweeps.sce import build_model
from tests.helpers import TINY

CPU = torch.device("cpu")


def compose_cfg(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, "tracker=none", *overrides])


def key_of(*overrides):
    cfg = compose_cfg(*overrides)
    torch.manual_seed(cfg.seed)
    return init_key(build_model(cfg).backbone, cfg, CPU)


def test_the_key_follows_the_initial_network_and_the_data_not_the_loss():
    base = key_of()
    assert key_of("loss.coeff=0.1", "loss.temp_m=0.07", "loss.queue_size=64") == base
    assert key_of("dataset.num_workers=1") == base
    for other in ("seed=1", "model.width=8", "dataset.test_samples=128", "trainer.knn_k=10"):
        assert key_of(other) != base, other


def test_cached_value_is_read_back_and_evaluated_once(tmp_path):
    calls = []

    def evaluate():
        calls.append(1)
        return 42.5

    assert cached_init_knn(tmp_path, "k", evaluate) == 42.5
    assert cached_init_knn(tmp_path, "k", evaluate) == 42.5
    assert len(calls) == 1
    (tmp_path / CACHE / "k.json").write_text("{torn")
    assert cached_init_knn(tmp_path, "k", evaluate) == 42.5 and len(calls) == 2


@pytest.mark.slow
def test_a_second_run_of_the_sweep_reads_the_baseline(tmp_path):
    cfg = compose_cfg("trainer.eval_random_init=true", "trainer.epochs=1", "optim.warmup_epochs=0")
    first = train(cfg, tmp_path / "0")
    (entry,) = (tmp_path / CACHE).glob("*.json")
    assert json.loads(entry.read_text())["knn_top1_init"] == first["knn_top1_init"]
    entry.write_text(json.dumps({"knn_top1_init": 12.5}))  # proves the next run reads it
    cfg.loss.coeff = 0.2
    assert train(cfg, tmp_path / "1")["knn_top1_init"] == 12.5
