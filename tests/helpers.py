"""Shared helpers: tiny CPU overrides and running the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A width-4 ResNet-18 on 512 Fashion-MNIST images: about a second per epoch.
TINY = [
    "model=resnet18_tiny",
    "dataset.train_samples=512",
    "dataset.test_samples=256",
    "dataset.num_workers=0",
    "loss.queue_size=128",
    "trainer.batch_size=64",
    "trainer.epochs=2",
    "trainer.eval_random_init=false",
    "trainer.linear_probe=false",
    "trainer.data_path=cpu",  # DataLoader workers, as dataset.num_workers asks
    "trainer.eval_every=1",
    "trainer.knn_k=20",
    "trainer.num_threads=1",
    "optim.warmup_epochs=1",
]

# A multirun of two one-epoch TINY jobs, one at a time, the second diverging (lr 1e12: NaN loss).
FAILING_POINT = [
    *TINY,
    "tracker=none",
    "trainer.epochs=1",
    "optim.warmup_epochs=0",
    "optim.lr=0.06,1e12",
    "hydra.launcher.poll_s=0.5",
    "hydra.launcher.max_parallel=1",
]


def run_cli(
    *args: str, timeout: float = 300, check: bool = True, **popen: object
) -> subprocess.CompletedProcess:
    """``python -m sce_sweeps *args`` from the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sce_sweeps", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **popen,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
