"""The baselines (the same network at random initialisation, raw pixels) are evaluated once
the run has trained, once per sweep and data, by the same code as the run's own metrics."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
import torch

from sce_sweeps.engine.baselines import CACHE, cached_metrics, init_key
from sce_sweeps.engine.train import Trainer, initial_model, train
from sce_sweeps.runtime.tracking import NullTracker
from tests.support import TINY, compose

CPU = torch.device("cpu")


def key_of(*overrides):
    cfg = compose(*TINY, "tracker=none", *overrides)
    return init_key(initial_model(cfg).backbone, cfg, CPU)


def test_the_key_follows_the_initial_network_and_the_data_not_the_loss():
    base = key_of()
    assert key_of("loss.coeff=0.1", "loss.temp_m=0.07", "loss.queue_size=64") == base
    assert key_of("dataset.num_workers=1") == base
    others = ("seed=1", "model.width=8", "dataset.test_samples=128", "trainer.knn_k=10")
    for other in (*others, "trainer.linear_probe=true"):
        assert key_of(other) != base, other


def test_the_initial_network_depends_on_the_config_alone(tmp_path):
    cfg = compose(*TINY, "tracker=none")
    torch.manual_seed(123)
    first = initial_model(cfg).state_dict()
    torch.rand(100)  # whatever the global random state
    again = initial_model(cfg).state_dict()
    trained = Trainer(cfg, tmp_path, NullTracker()).model.state_dict()  # the run's step-0 network
    for name, tensor in first.items():
        assert torch.equal(tensor, again[name]) and torch.equal(tensor, trained[name]), name


def test_cached_value_is_read_back_and_evaluated_once(tmp_path):
    calls = []

    def evaluate():
        calls.append(1)
        return {"knn_top1_init": 42.5}

    path = tmp_path / CACHE / "k.json"
    assert cached_metrics(path, evaluate) == {"knn_top1_init": 42.5}
    assert cached_metrics(path, evaluate) == {"knn_top1_init": 42.5}
    assert len(calls) == 1
    path.write_text("{torn")
    assert cached_metrics(path, evaluate) == {"knn_top1_init": 42.5} and len(calls) == 2


def _evaluate_slowly(path, log):
    def evaluate():
        with open(log, "a") as f:
            f.write("evaluated\n")
        time.sleep(1.0)  # the others arrive while this one evaluates
        return {"knn_top1_init": 50.0}

    assert cached_metrics(path, evaluate) == {"knn_top1_init": 50.0}


@pytest.mark.e2e
def test_runs_that_miss_the_cache_together_evaluate_once(tmp_path):
    path, log = tmp_path / CACHE / "k.json", tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_evaluate_slowly, args=(path, log)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert log.read_text().splitlines() == ["evaluated"]


@pytest.mark.slow
def test_baselines_come_after_training_and_a_second_run_reads_them(tmp_path):
    cfg = compose(
        *TINY,
        "tracker=none",
        "trainer.eval_random_init=true",
        "trainer.epochs=1",
        "optim.warmup_epochs=0",
    )
    cached_during_training = []

    def on_epoch_end(epoch, row):
        cached_during_training.append((tmp_path / CACHE).exists())
        return False

    first = train(cfg, tmp_path / "0", on_epoch_end=on_epoch_end)
    assert cached_during_training == [False]  # nothing evaluated before the training ended
    (entry,) = (tmp_path / CACHE).glob("*.json")
    assert json.loads(entry.read_text())["knn_top1_init"] == first["knn_top1_init"]
    entry.write_text(json.dumps({"knn_top1_init": 12.5}))  # proves the next run reads it
    cfg.loss.coeff = 0.2
    assert train(cfg, tmp_path / "1")["knn_top1_init"] == 12.5


def test_every_batch_of_an_evaluation_beats_the_heartbeat(tmp_path, monkeypatch):
    """An evaluation (the first one, or the baselines after training, may last far longer than
    a step) beats the heartbeat as it goes, so that a sweep watching for stalled jobs
    (``hydra.launcher.stall_after``) never takes it for a hung job."""
    from sce_sweeps.engine import train as trainer

    cfg = compose(
        *TINY, "tracker=none", "trainer.linear_probe=true", "trainer.eval_random_init=true"
    )
    t = Trainer(cfg, tmp_path / "run", NullTracker())
    events = []
    monkeypatch.setattr(
        trainer.record, "beat", lambda run_dir, step, total: events.append(("beat", step))
    )
    t.model.backbone.register_forward_hook(lambda *_: events.append(("batch", None)))
    trainer.evaluate(t, step=7)
    batches = [i for i, (kind, _) in enumerate(events) if kind == "batch"]
    assert len(batches) == len(t.bank_loader) + len(t.query_loader) >= 2
    for i in batches:
        assert events[i - 1] == ("beat", 7), events[: i + 1]

    events.clear()  # the baselines: the random-init network, then raw pixels, batch by batch
    trainer.baselines(t)
    last_step = t.total_steps - 1
    assert events == [("beat", last_step)] * 2 * (len(t.bank_loader) + len(t.query_loader))
