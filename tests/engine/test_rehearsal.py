"""A multi-GPU rehearsal on the CPU: the official CIFAR-10 preset (a tiny CIFAR-10 in its real
pickle format, a width-4 ResNet-18) as one job of 4 gloo ranks through the local launcher:
a kNN evaluation and the linear probe every epoch, then the linear stage. The same job, sent
SIGTERM (every rank, as SLURM signals a job) mid-epoch and run again, resumes from its
checkpoint and ends exactly as the uninterrupted job.

(1 process vs N ranks with the same global batch and BatchNorm: tests/engine/
test_distributed.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support import ROOT, read_json, read_metrics, run_cli, wait_until
from tests.synthetic import write_fake_dataset

pytestmark = pytest.mark.slow


def _job(data: Path) -> list[str]:
    return [
        "-m",
        "experiment=cifar10",
        "model=resnet18_tiny",
        f"dataset.root={data}",
        "dataset.num_workers=0",
        "loss.queue_size=64",
        "trainer.devices=4",
        "trainer.sync_bn=false",  # SyncBatchNorm needs CUDA
        "trainer.data_path=cpu",
        "trainer.batch_size=32",  # 8 images per rank, 16 steps per epoch
        "trainer.epochs=2",
        "trainer.eval_every=1",
        "optim.warmup_epochs=1",
        "trainer.linear_probe=true",
        "trainer.eval_random_init=false",
        "trainer.knn_k=20",
        "trainer.num_threads=1",
        "trainer.progress=false",
        "linear.enabled=true",
        "linear.epochs=1",
        "linear.batch_size=64",
        "tracker=none",
        "hydra.launcher.poll_s=0.5",
    ]


def _ranks(pid: int) -> list[int]:
    """The job's rank processes among the descendants of ``pid``."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                todo.append(child)
                try:
                    env = Path(f"/proc/{child}/environ").read_bytes()
                except OSError:
                    continue
                if b"SUBMITIT_LOCAL_GLOBALID=" in env:
                    found.append(child)
    return found


def _run_dir(sweep: Path) -> Path:
    (job,) = read_json(sweep / "manifest.json")["jobs"]
    return sweep / job["run_dir"]


def test_four_ranks_of_the_cifar10_preset_stop_on_sigterm_and_resume_as_uninterrupted(tmp_path):
    data = tmp_path / "data"
    write_fake_dataset("cifar10", data, num_train=512, num_test=64)
    whole = tmp_path / "whole"
    run_cli(*_job(data), f"hydra.sweep.dir={whole}")

    stopped = tmp_path / "stopped"
    args = [sys.executable, "-m", "sce_sweeps", *_job(data), f"hydra.sweep.dir={stopped}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        epoch_1 = lambda: next(stopped.glob("*/checkpoint.pt"), None)  # noqa: E731
        wait_until(epoch_1, 300, "epoch 1's checkpoint", proc=proc, interval=0.05)
        ranks = _ranks(proc.pid)
        assert len(ranks) == 4, ranks
        for pid in ranks:
            os.kill(pid, signal.SIGTERM)
        proc.communicate(timeout=300)
    finally:
        proc.kill()
    run_dir = _run_dir(stopped)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and 0 < state["step_in_epoch"] < 16  # mid-epoch 2
    assert (
        not (run_dir / "result.json").exists()
        or read_json(run_dir / "result.json")["status"] != "completed"
    )

    run_cli(*_job(data), f"hydra.sweep.dir={stopped}", "hydra.launcher.resume=true")
    a, b = read_json(_run_dir(whole) / "result.json"), read_json(run_dir / "result.json")
    assert a["status"] == b["status"] == "completed"
    for key in ("loss", "knn_top1", "probe_top1", "linear_top1", "epochs"):
        assert a[key] == b[key], key
    assert read_metrics(_run_dir(whole)) != []
    assert [r["loss"] for r in read_metrics(_run_dir(whole))] == [
        r["loss"] for r in read_metrics(run_dir)
    ]
    wa = torch.load(_run_dir(whole) / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
