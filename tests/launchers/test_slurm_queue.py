"""Which jobs of an array SLURM still holds pending, from one squeue call (what a poll of the
SLURM launcher skips), on the real one-node cluster."""

from __future__ import annotations

import subprocess

import pytest

from sce_sweeps.sweep.status import queued_slurm_jobs

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
        assert queued_slurm_jobs([*ids, "999999_0"]) == set(ids)
        subprocess.run(["scontrol", "release", f"{array}_1"], check=True, timeout=60)
        subprocess.run(["scancel", f"{array}_2"], check=True, timeout=60)
        queued = queued_slurm_jobs(ids)
        assert queued is not None and f"{array}_2" not in queued
        assert {f"{array}_0", f"{array}_3"} <= queued
    finally:
        subprocess.run(["scancel", array], timeout=60)
    assert queued_slurm_jobs([]) == set()
