"""Stop signals sent to EVERY process of a job, as SLURM sends them (``scontrol requeue``, a
node set DOWN, preemption, a time limit), with DataLoader workers as real jobs run them: the
workers survive, the trainer checkpoints and stops, and the run resumes to the result of an
uninterrupted run. A plain DataLoader is the control: its workers die of the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    ROOT,
    TINY,
    checkpoint_epoch,
    read_json,
    requeue_job_0,
    run_cli,
    wait_until,
)

WORKERS = [o for o in TINY if not o.startswith("dataset.num_workers")] + [
    "dataset.num_workers=2",
    "dataset.train_samples=1024",
    "trainer.epochs=3",
    "tracker=none",
    "seed=0",
]

# Iterates a slow dataset with 2 workers while a thread signals the whole process group every
# 20 ms, from before the workers exist to the last batch; the main process records the signals.
SIGNAL_STORM = """
import os, signal, sys, threading, time
import torch
from torch.utils.data import DataLoader, Dataset
from sce_sweeps.data import StopSafeDataLoader

class Slow(Dataset):
    def __len__(self): return 48
    def __getitem__(self, i):
        time.sleep(0.01)
        return torch.tensor(i)

got = []
for sig in (signal.SIGTERM, signal.SIGUSR2):
    signal.signal(sig, lambda n, f: got.append(n))
cls = StopSafeDataLoader if sys.argv[1] == "stop_safe" else DataLoader
done = threading.Event()

def storm():
    while not done.is_set():
        os.killpg(0, signal.SIGTERM if len(got) % 2 else signal.SIGUSR2)
        time.sleep(0.02)

threading.Thread(target=storm, daemon=True).start()
items = []
for epoch in range(3):  # new workers each epoch, started in the middle of the storm
    items += [int(x) for batch in cls(Slow(), batch_size=4, num_workers=2) for x in batch]
done.set()
assert sorted(items) == sorted(list(range(48)) * 3), items
print(f"batches complete; main process got {len(got)} signals")
"""


@pytest.mark.e2e
@pytest.mark.parametrize("loader", ["stop_safe", "plain"])
def test_workers_outlive_a_storm_of_stop_signals(loader):
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_STORM, loader],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # its own process group, as a SLURM job step
    )
    if loader == "plain":  # the control: the fault this guards against is real
        assert proc.returncode != 0 and "DataLoader worker" in proc.stderr, proc.stderr[-2000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "batches complete" in proc.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("reference")
    run_cli(*WORKERS, f"hydra.run.dir={run_dir}")
    return read_json(run_dir / "result.json")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["TERM", "USR2"])
def test_a_signal_to_every_process_stops_and_resumes_the_run(tmp_path, reference, sig):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "sce_sweeps", *WORKERS, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        pgrep = ["pgrep", "-g", str(proc.pid)]

        def in_epoch_2_with_its_workers() -> bool:
            group = subprocess.run(pgrep, capture_output=True, text=True).stdout.split()
            return checkpoint_epoch(run_dir) >= 1 and len(group) >= 3

        wait_until(
            in_epoch_2_with_its_workers, 180, "epoch 1's checkpoint", proc=proc, interval=0.1
        )
        os.killpg(proc.pid, sig)  # every process of the group: main and 2 DataLoader workers
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "killed by signal" not in err and not (run_dir / "result.json").exists(), err[-3000:]

    resumed = run_cli(*WORKERS, f"hydra.run.dir={run_dir}")
    assert "resuming from epoch " in resumed.stderr and ", step " in resumed.stderr
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed" and result["epochs"] == reference["epochs"]
    assert (result["knn_top1"], result["loss"]) == (reference["knn_top1"], reference["loss"])


@pytest.mark.slow
@pytest.mark.slurm
def test_scontrol_requeue_with_dataloader_workers(slurm_cluster, tmp_path, reference):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sce_sweeps", "-m", "+sweep=lambda_ablation", *WORKERS]
    cmd += ["loss.coeff=0.5", "hydra.launcher.poll_s=0.5", "launcher=slurm", "cluster=local"]
    cmd += [f"hydra.sweep.dir={sweep_dir}"]
    returncode, err, job_id = requeue_job_0(cmd, sweep_dir)
    assert returncode == 0, err[-3000:]
    assert "job #0 completed" in err and "job #0 failed" not in err, err[-3000:]  # never failed
    job = read_json(sweep_dir / "manifest.json")["jobs"][0]
    log = Path(job["log"]).read_text()
    assert "DUE TO JOB REQUEUE" in log and "resuming from epoch" in log, log[-3000:]
    assert "killed by signal" not in log, log[-3000:]
    assert job["job_ids"] == [job_id] and job["state"] == "completed"
    result = read_json(sweep_dir / "0" / "result.json")
    assert result["status"] == "completed" and result["epochs"] == reference["epochs"]
    assert (result["knn_top1"], result["loss"]) == (reference["knn_top1"], reference["loss"])
