"""Which jobs of an array SLURM still holds pending, from one squeue call (what a poll of the
SLURM launcher skips), on the real one-node cluster."""

from __future__ import annotations

import subprocess

import pytest

from sce_sweeps.runtime.slurm import queued_jobs

pytestmark = pytest.mark.slurm


def test_pending_tasks_of_an_array_are_queued_and_others_are_not(slurm_cluster, tmp_path):
    out = subprocess.run(
        ["sbatch", "--parsable", "--hold", "--array=0-3", "-p", slurm_cluster.partition,
         "-o", str(tmp_path / "%A_%a.out"), "--wrap", "true"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    array = out.stdout.strip().split(";")[0]
    try:
        ids = [f"{array}_{i}" for i in range(4)]
        assert queued_jobs([*ids, "999999_0"]) == set(ids)
        subprocess.run(["scontrol", "release", f"{array}_1"], check=True, timeout=60)
        subprocess.run(["scancel", f"{array}_2"], check=True, timeout=60)
        queued = queued_jobs(ids)
        assert queued is not None and f"{array}_2" not in queued
        assert {f"{array}_0", f"{array}_3"} <= queued
    finally:
        subprocess.run(["scancel", array], timeout=60)
    assert queued_jobs([]) == set()


APP = """
import os
import hydra
from hydra.core.hydra_config import HydraConfig
from sce_sweeps.runtime import record


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    run_dir = HydraConfig.get().runtime.output_dir
    record.write_result(run_dir, {"status": "completed", "x": float(cfg.x)})
    return float(cfg.x)


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_a_sweep_of_more_jobs_than_the_queue_query_threshold_completes(slurm_cluster, tmp_path):
    """More jobs than QUEUE_QUERY_FROM: the polls skip the pending ones by squeue's word, and
    every job still ends recorded as it ended."""
    import json
    import sys

    from hydra_plugins.sce_sweeps_launchers.launchers import QUEUE_QUERY_FROM

    n = QUEUE_QUERY_FROM + 8
    (tmp_path / "app.py").write_text(APP)
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "app.py", "-m", "hydra/launcher=sce_slurm", "hydra/sweeper=sce_grid"]
    cmd += [f"+x=range(0,{n})", f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.poll_s=0.2"]
    cmd += [f"hydra.launcher.partition={slurm_cluster.partition}", "hydra.launcher.mem_gb=1"]
    cmd += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.array_parallelism=8"]
    cmd += ["hydra.launcher.timeout_min=10"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = json.loads((sweep_dir / "manifest.json").read_text())["jobs"]
    assert [j["state"] for j in jobs] == ["completed"] * n
    assert [j["objective"] for j in jobs] == [float(i) for i in range(n)]
