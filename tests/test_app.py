"""The Hydra app end to end on real Fashion-MNIST files: train, fail cleanly, resume exactly."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.support import ROOT, TINY, read_json, read_metrics, run_cli, wait_until

pytestmark = pytest.mark.slow


def _state(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)


def _without_times(rows):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _assert_same_run(a, b):
    sa, sb = _state(a), _state(b)
    assert sa["model"].keys() == sb["model"].keys()
    for key in sa["model"]:
        assert torch.equal(sa["model"][key], sb["model"][key]), key
    assert torch.equal(sa["model"]["queue"], sb["model"]["queue"])
    assert _without_times(read_metrics(a)) == _without_times(read_metrics(b))
    ra, rb = read_json(a / "result.json"), read_json(b / "result.json")
    assert ra["knn_top1"] == rb["knn_top1"] and ra["loss"] == rb["loss"]


def _start(run_dir):
    cmd = [sys.executable, "-m", "sce_sweeps", *TINY, "tracker=none", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_run_writes_result_metrics_and_checkpoint(tiny_run):
    tmp_path = tiny_run.run_dir
    result = read_json(tmp_path / "result.json")
    assert result["status"] == "completed" and result["epochs"] == 2
    assert 10.0 < result["knn_top1"] <= 100.0
    for key in ("loss", "wall_time_s", "config_hash", "git_commit", "seed", "overrides"):
        assert key in result
    params = result["params"]  # the resolved config, flat, and the group choices
    assert params["trainer.epochs"] == 2 and params["model.arch"] == "resnet18"
    assert params["experiment"] == "demo" and isinstance(params["aug.crop_scale"], list)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    assert _state(tmp_path)["epoch"] == 2


def test_killed_after_epoch_one_resumes_identically(tmp_path, tiny_run):
    straight, killed = tiny_run.run_dir, tmp_path / "killed"

    proc = _start(killed)
    ckpt = killed / "checkpoint.pt"
    wait_until(lambda: ckpt.exists() and _state(killed)["epoch"] == 1, proc=proc, interval=0.01)
    proc.kill()  # SIGKILL: nothing gets to clean up
    proc.wait()
    assert not (killed / "result.json").exists()

    resumed = run_cli(*TINY, "tracker=none", f"hydra.run.dir={killed}")
    assert "resuming from epoch 1" in resumed.stderr
    _assert_same_run(straight, killed)


def test_sigterm_mid_epoch_checkpoints_and_resumes_identically(tmp_path, tiny_run):
    straight, stopped = tiny_run.run_dir, tmp_path / "stopped"

    proc = _start(stopped)
    wait_until(
        lambda: (stopped / "checkpoint.pt").exists(), proc=proc, interval=0.01
    )  # epoch 1 is done
    time.sleep(0.3)  # a few steps into epoch 2
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err
    state = _state(stopped)
    assert state["epoch"] == 1 and 0 < state["step_in_epoch"] < 8, state["step_in_epoch"]

    resumed = run_cli(*TINY, "tracker=none", f"hydra.run.dir={stopped}")
    assert f"step {state['step_in_epoch']}" in resumed.stderr
    _assert_same_run(straight, stopped)


def test_nan_loss_is_recorded_as_failed(tmp_path):
    proc = run_cli(*TINY, "tracker=none", "optim.lr=1e12", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1
    assert "run failed" in proc.stderr and "loss is nan" in proc.stderr.lower()
    result = read_json(tmp_path / "result.json")
    assert result["status"] == "failed" and "NonFiniteLossError" in result["reason"]


def test_missing_dataset_is_one_clear_failure(tmp_path):
    proc = run_cli(
        *TINY,
        "tracker=none",
        "dataset=cifar10",
        f"dataset.root={tmp_path / 'nowhere'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 1
    assert str(tmp_path / "nowhere") in proc.stderr and "download" in proc.stderr


def test_plain_multirun_survives_a_failing_point(failing_point_sweep):
    tmp_path = failing_point_sweep.run_dir  # optim.lr=0.06,1e12: the second point diverges
    ok, bad = read_json(tmp_path / "0" / "result.json"), read_json(tmp_path / "1" / "result.json")
    assert ok["status"] == "completed" and bad["status"] == "failed"
    assert os.path.isdir(tmp_path / "0" / ".hydra")


def test_sweep_dirs_are_unique_within_the_same_second(tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sce_sweeps.app import CONF_DIR

    dirs = set()
    for _ in range(5):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", return_hydra_config=True)
            dirs.add(OmegaConf.select(cfg, "hydra.sweep.dir"))
    assert len(dirs) == 5
