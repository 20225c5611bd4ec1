"""Linear evaluation: a stage of the job after pretraining, or alone on a run dir; it resumes
exactly, beats the same network at random initialisation, and leads the ablation tables."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from sce_sweeps.analysis.tables import default_metrics
from sce_sweeps.engine.linear import LINEAR_DIR, run_dir_config, run_linear
from sce_sweeps.engine.linear import main as linear_main
from sce_sweeps.runtime.tracking import NullTracker
from tests.support import ROOT, TINY, read_json, run_cli, run_in_process

# The embedded default (experiment=demo: width-8 ResNet-18, Fashion-MNIST) on 3072 images for
# 2 epochs, with a queue that fits them (linear top-1 ~53% against ~22% at random init).
SHORT_RUN = [
    "dataset.train_samples=3072",
    "trainer.epochs=2",
    "trainer.linear_probe=false",
    "loss.queue_size=2048",
    "dataset.test_samples=1000",
    "dataset.num_workers=0",
    "trainer.num_threads=1",
    "trainer.eval_every=0",
    "trainer.eval_random_init=false",
    "tracker=none",
]
# A short protocol: 3 epochs of 16 batches of 128, step decay at epoch 2, milder crops for
# 28 px images.
LINEAR = [
    "linear.epochs=3",
    "linear.batch_size=128",
    "linear.max_steps_per_epoch=16",
    "linear.lr=0.2",
    "linear.milestones=[2]",
    "linear.crop_scale=[0.5,1.0]",
]


def _linear_cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "sce_sweeps.cli", "linear", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_linear_stage_of_a_short_run_beats_random_init(tmp_path):
    run_cli(*SHORT_RUN, "linear.enabled=true", *LINEAR, f"hydra.run.dir={tmp_path}", timeout=900)
    result = read_json(tmp_path / "result.json")
    assert result["status"] == "completed" and result["linear_epochs"] == 3
    assert 10.0 < result["linear_top1"] <= result["linear_top5"] <= 100.0
    assert (tmp_path / LINEAR_DIR / "checkpoint.pt").exists()

    proc = _linear_cli(str(tmp_path), "--random-init", *LINEAR)  # alone, on the run dir
    assert "linear top-1" in proc.stdout
    result = read_json(tmp_path / "result.json")
    trained, init = result["linear_top1"], result["linear_top1_init"]
    print(f"\nlinear top-1: trained {trained:.2f}%, random init {init:.2f}%")
    assert trained > init + 2.0


class _StopAtFirstEval(NullTracker):
    """Sends the process SIGTERM when the first epoch's accuracy is logged (a requeue)."""

    def log(self, *args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_linear_stage_resumes_exactly_after_a_stop(tmp_path):
    pretrained = tmp_path / "pretrained"
    run_cli(*TINY, "tracker=none", "trainer.epochs=1", f"hydra.run.dir={pretrained}")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for run_dir in (straight, stopped):
        run_dir.mkdir()
        shutil.copy(pretrained / "checkpoint.pt", run_dir / "checkpoint.pt")
    overrides = [o for o in LINEAR if "max_steps" not in o]
    overrides += ["linear.eval_every=1", "linear.max_steps_per_epoch=3"]
    cfg = run_dir_config(straight, overrides)

    expected = run_linear(cfg, straight)
    with pytest.raises(SystemExit):
        run_linear(cfg, stopped, tracker=_StopAtFirstEval())
    assert torch.load(stopped / LINEAR_DIR / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = run_linear(cfg, stopped)

    speed = "linear_images_per_s"
    assert {k: v for k, v in resumed.items() if k != speed} == {
        k: v for k, v in expected.items() if k != speed
    }
    rows = [json.loads(line) for line in (straight / LINEAR_DIR / "metrics.jsonl").open()]
    best = max(rows, key=lambda r: r["top1"])  # every epoch evaluated (eval_every=1)
    assert (resumed["linear_top1_best"], resumed["linear_best_epoch"]) == (
        best["top1"],
        best["epoch"],
    )
    assert resumed["linear_top1"] == rows[-1]["top1"] and len(rows) == 3
    a = torch.load(straight / LINEAR_DIR / "checkpoint.pt", weights_only=False)["classifier"]
    b = torch.load(stopped / LINEAR_DIR / "checkpoint.pt", weights_only=False)["classifier"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tables_lead_with_linear_top1_when_the_runs_have_it():
    assert default_metrics(["knn_top1", "loss"]) == ["knn_top1", "loss"]
    with_linear = ["knn_top1", "knn_top1_init", "linear_top1", "linear_top1_init", "loss"]
    assert default_metrics(with_linear) == [
        "linear_top1",
        "linear_top1_init",
        "knn_top1",
        "knn_top1_init",
        "loss",
    ]


def test_linear_alone_needs_a_pretraining_checkpoint(tmp_path):
    proc = run_in_process(str(tmp_path), main=linear_main)
    assert proc.returncode == 2 and "checkpoint.pt" in proc.stderr


@pytest.mark.parametrize(
    "preset, crop", [("cifar10", "pad_crop"), ("stl10", "pad_crop"), ("imagenet", "random_resized")]
)
def test_linear_train_view_follows_the_preset(preset, crop):
    """CIFAR-10's official linear train view is RandomCrop(32, padding=4) + flip; ImageNet's a
    random-resized crop."""
    import torchvision.transforms as T
    from hydra import compose, initialize_config_dir
    from omegaconf.errors import ValidationError
    from PIL import Image

    from sce_sweeps.app import CONF_DIR
    from sce_sweeps.config import validate
    from sce_sweeps.engine.linear import linear_train_transform

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"])
    validate(cfg)
    assert cfg.linear.train_crop == crop
    (view,) = linear_train_transform(cfg).transforms
    kinds = [type(t) for t in view.transforms]
    size = cfg.aug.crop_size
    if crop == "pad_crop":
        assert T.RandomResizedCrop not in kinds
        (pad,) = [t for t in view.transforms if isinstance(t, T.RandomCrop)]
        assert (pad.size, pad.padding) == ((size, size), 4)
    else:
        assert T.RandomCrop not in kinds and T.RandomResizedCrop in kinds
    image = Image.new("RGB", (cfg.dataset.image_size, cfg.dataset.image_size))
    assert view(image).shape == (3, size, size)
    with pytest.raises(ValidationError, match=r"'center', expected one of \[random_resized, pad_"):
        cfg.linear.train_crop = "center"  # a choice of the schema's enum
