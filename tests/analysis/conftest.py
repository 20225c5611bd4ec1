"""Real tiny sweeps, run once per test session with the trainer and shared by the tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sce_sweeps.runtime.record import Manifest
from tests.support import TINY, copy_sweep, run_cli
from tests.synthetic import write_fake_dataset

# the runs record their baselines (random-init network, raw pixels), as the demo's do
SWEEP = ["tracker=none", "loss.coeff=0,1", "seed=0,1", "trainer.eval_random_init=true"]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """λ ∈ {0, 1} × seeds {0, 1} on 512 Fashion-MNIST images, 2 epochs (4 real runs)."""
    sweep = tmp_path_factory.mktemp("analysis") / "sweep"
    run_cli("-m", *TINY, *SWEEP, f"hydra.sweep.dir={sweep}")
    return sweep


@pytest.fixture(scope="session")
def partial_sweep(tiny_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sweep plus a run that failed (lr 1e12: NaN loss) as ``4/``, and run ``3``
    without its result.json, as if still running."""
    base = tmp_path_factory.mktemp("partial")
    sweep = copy_sweep(tiny_sweep, base / "sweep")
    failing = ["tracker=none", "loss.coeff=1", "seed=2", "optim.lr=1e12", SWEEP[-1]]
    proc = run_cli("-m", *TINY, *failing, f"hydra.sweep.dir={base / 'failing'}", check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]  # its one job failed
    shutil.copytree(base / "failing" / "0", sweep / "4")
    (sweep / "3" / "result.json").unlink()
    manifest = Manifest.load(sweep)  # and its launcher saw it start, not end
    manifest.jobs[3].state, manifest.jobs[3].finished_at = "running", None
    manifest.save()
    return sweep


@pytest.fixture(scope="session")
def cifar_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """λ ∈ {0, 1}, one seed, on a tiny CIFAR-10 written in the real pickle format."""
    base = tmp_path_factory.mktemp("cifar")
    write_fake_dataset("cifar10", base / "data", num_train=128, num_test=64)
    overrides = [o for o in TINY if not o.startswith(("dataset.", "loss.queue", "trainer.batch"))]
    run_cli(
        "-m",
        *overrides,
        "dataset=cifar10",
        f"dataset.root={base / 'data'}",
        "dataset.train_samples=null",
        "dataset.num_workers=0",
        "loss.queue_size=64",
        "trainer.batch_size=32",
        "tracker=none",
        "loss.coeff=0,1",
        "seed=0",
        f"hydra.sweep.dir={base / 'sweep'}",
    )
    return base / "sweep"
