"""Sweep presets, launcher and cluster profiles, dry run, validation before submission, status
and resume bookkeeping: everything about sweeps that runs no training."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sce_sweeps.app import CONF_DIR
from sce_sweeps.runtime.plan import gpus_per_job, remove_unused_sweep_dir
from sce_sweeps.runtime.record import Job, Manifest
from sce_sweeps.runtime.resume import resume_command
from sce_sweeps.runtime.status import exit_code, format_table, job_status, sweep_status
from sce_sweeps.runtime.status import main as status_main
from tests.support import ROOT, compose, run_in_process

PRESETS = {  # sweep: (swept key, number of values)
    "lambda_ablation": ("loss.coeff", 9),
    "tau_m_ablation": ("loss.temp_m", 7),
    "tau_ablation": ("loss.temp", 6),
    "queue_ablation": ("loss.queue_size", 6),
    "crops_ablation": ("aug.num_local_crops", 4),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_sweeps_its_axis_over_three_seeds(name):
    text = (Path(CONF_DIR) / "sweep" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ") and "Why:" in text
    assert "launcher" not in text and "cluster" not in text
    cfg = compose(f"+sweep={name}", hydra=True)
    params = cfg.hydra.sweeper.params
    key, count = PRESETS[name]
    assert cfg.sweep_name == name
    assert len(str(params[key]).split(",")) == count
    assert params.seed == "0,1,2"


def test_lambda_grid_is_zero_to_one_in_eighths():
    params = compose("+sweep=lambda_ablation", hydra=True).hydra.sweeper.params
    assert [float(v) for v in params["loss.coeff"].split(",")] == [i / 8 for i in range(9)]


@pytest.mark.parametrize("launcher", ["local", "slurm"])
@pytest.mark.parametrize("cluster", [None, "local", "example_gpu"])
def test_launcher_and_cluster_profiles_compose(launcher, cluster):
    cfg = compose(f"launcher={launcher}", *([f"cluster={cluster}"] if cluster else []), hydra=True)
    target = cfg.hydra.launcher._target_
    assert target.endswith("LocalLauncher" if launcher == "local" else "SlurmLauncher")
    assert cfg.hydra.launcher.max_num_timeout >= 1  # USR2 before a time limit requeues
    if cluster == "example_gpu":
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1
    if cluster == "local":
        assert cfg.hydra.launcher.partition == "debug"


def test_default_launcher_is_local_with_two_processes():
    launcher = compose(hydra=True).hydra.launcher
    assert launcher._target_.endswith("LocalLauncher") and launcher.max_parallel == 2


def test_dry_run_of_crops_ablation_on_example_gpu_cluster():
    made = not (ROOT / "sweeps" / "crops_ablation").exists()
    proc = run_in_process(
        "-m",
        "+sweep=crops_ablation",
        "launcher=slurm",
        "cluster=example_gpu",
        "hydra.launcher.dry_run=true",
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "DRY RUN: 24 jobs of sweep crops_ablation would be submitted to SLURM" in out
    assert "partition=gpu account=my_lab qos=normal constraint=a100" in out
    assert "1 task, 1 GPU, 10 CPUs per task, 64 GB, time limit 12:00:00" in out
    assert "GPU-hours:  288 at most (24 jobs x 1 GPU x 12 h time limit" in out
    assert "setup:      module load cuda/12.4; source .venv/bin/activate" in out
    row = r"^\s+(\d+)\s+aug\.num_local_crops=(\d) aug\.local_crop_size=(\d+) seed=(\d)"
    rows = re.findall(row, out, re.M)
    assert len(rows) == 24
    assert {(c, s) for _, c, s, _ in rows} == {(c, s) for c in "0246" for s in ("8", "12")}
    assert "submitted" not in proc.stderr
    if made:  # no sweep dir, run dir or empty parent is left behind
        assert not (ROOT / "sweeps" / "crops_ablation").exists()


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("hydra.launcher.stalled=stop", "hydra.launcher.stalled=stop: must be one of flag, kill"),
        ("hydra.launcher.stall_after=0", "hydra.launcher.stall_after=0.0: must be a number of"),
    ],
)
def test_bad_stall_settings_fail_naming_the_key(tmp_path, override, says):
    proc = run_in_process("-m", override, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()


def test_grid_point_too_big_for_the_dataset_fails_before_submission(tmp_path):
    proc = run_in_process(
        "-m",
        "+sweep=queue_ablation",
        "dataset.train_samples=10000",
        "launcher=slurm",
        "cluster=local",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    bad = [line for line in proc.stderr.splitlines() if "invalid config" in line]
    assert len(bad) == 3  # queue of 4 x 4096 = 16384 > 10000 images, for each of 3 seeds
    assert all("loss.queue_size=16384" in line and "10000 training images" in line for line in bad)
    assert "nothing was launched" in proc.stderr and "submitted" not in proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_gpus_per_job_reads_every_way_of_asking():
    assert gpus_per_job({"gpus_per_node": 2, "nodes": 2}) == 4
    assert gpus_per_job({"gpus_per_task": 1, "tasks_per_node": 4}) == 4
    assert gpus_per_job({"gres": "gpu:a100:2"}) == 2
    assert gpus_per_job({"gres": "gpu:3"}) == 3
    assert gpus_per_job({"cpus_per_task": 8}) == 0


def test_unused_sweep_dir_is_removed_but_nothing_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = Path("sweeps/x/2024-01-01/12-00-00_abc")
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    (tmp_path / "sweeps" / "README.md").write_text("keep")
    remove_unused_sweep_dir(sweep)
    assert not (tmp_path / "sweeps" / "x").exists() and (tmp_path / "sweeps" / "README.md").exists()
    used = Path("sweeps/y/1")
    used.mkdir(parents=True)
    (used / "multirun.yaml").write_text("{}")
    (used / "manifest.json").write_text("{}")
    remove_unused_sweep_dir(used)
    assert (used / "manifest.json").exists()


# --- status and resume bookkeeping on real files ------------------------------------------


def _manifest(sweep_dir: Path, launcher: str = "local") -> Manifest:
    manifest = Manifest.create(sweep_dir, "lambda_ablation", launcher)
    manifest.pid = 999_999_999  # no such process: the launcher is gone
    manifest.program = ["-m", "sce_sweeps"]
    manifest.argv = ["-m", "+sweep=lambda_ablation", "seed=0", f"hydra.sweep.dir={sweep_dir}"]
    manifest.metric = "knn_top1"  # as the launcher records the app's record.metric
    for num, (state, result) in enumerate(
        [
            ("completed", {"status": "completed", "knn_top1": 51.2}),
            ("failed", {"status": "failed", "reason": "NonFiniteLossError: loss is nan"}),
            ("running", None),  # its process died: interrupted
            ("pending", None),  # never started, and its launcher is gone
        ]
    ):
        job = Job(num, [f"loss.coeff={num / 8}", "seed=0"], f"hash{num}", str(num), state)
        job.job_ids = [str(999_999_990 + num)] if state != "pending" else []
        manifest.jobs.append(job)
        if result:
            (sweep_dir / str(num)).mkdir(parents=True)
            result["config_hash"] = f"hash{num}"
            (sweep_dir / str(num) / "result.json").write_text(json.dumps(result))
    manifest.save()
    return manifest


def test_status_reads_run_dirs_and_says_why(tmp_path):
    _manifest(tmp_path)
    manifest = Manifest.load(tmp_path)
    statuses = sweep_status(manifest)
    assert [s.state for s in statuses] == ["completed", "failed", "interrupted", "interrupted"]
    assert statuses[0].value == 51.2
    assert statuses[1].reason == "NonFiniteLossError: loss is nan"
    assert exit_code(statuses) == 1
    table = format_table(manifest, statuses)
    assert "knn_top1 51.2" in table and "1 completed, 1 failed, 2 interrupted" in table


def test_status_exit_codes_from_the_command_line(tmp_path):
    _manifest(tmp_path)
    proc = run_in_process(str(tmp_path), "--json", main=status_main)
    assert proc.returncode == 1
    assert [j["state"] for j in json.loads(proc.stdout)["jobs"]][:2] == ["completed", "failed"]
    proc = run_in_process(str(tmp_path / "nowhere"), main=status_main)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr


def test_a_result_of_another_config_does_not_count(tmp_path):
    manifest = _manifest(tmp_path)
    manifest.jobs[0].config_hash = "other"
    assert sweep_status(manifest)[0].state == "interrupted"


def test_live_local_processes_are_running_or_pending(tmp_path):
    manifest = _manifest(tmp_path)
    assert manifest.host == socket.gethostname()
    # a process whose command line names the sweep dir, as submitit's local job process does
    job = subprocess.Popen(["sh", "-c", "sleep 60; :", tmp_path.name])
    try:
        cmdline = Path(f"/proc/{job.pid}/cmdline")
        while tmp_path.name.encode() not in cmdline.read_bytes():  # until it has exec'd
            time.sleep(0.01)
        manifest.jobs[2].job_ids = [str(job.pid)]
        manifest.pid = os.getpid()  # the launcher lives: a job it has not started is pending
        states = [s.state for s in sweep_status(manifest)]
        assert states == ["completed", "failed", "running", "pending"]
        assert exit_code(sweep_status(manifest)) == 1  # a failure outweighs live jobs
    finally:
        job.kill()
        job.wait()
    assert sweep_status(manifest)[2].state == "interrupted"


def test_resume_replays_the_command_with_resume_on(tmp_path):
    manifest = _manifest(tmp_path)
    cmd = resume_command(manifest, ["launcher=slurm", "hydra.launcher.dry_run=true"])
    assert cmd[:3] == [sys.executable, "-m", "sce_sweeps"]
    assert cmd[3:6] == ["-m", "+sweep=lambda_ablation", "seed=0"]
    assert f"hydra.sweep.dir={tmp_path}" in cmd and "hydra.launcher.resume=true" in cmd
    assert cmd[-2:] == ["launcher=slurm", "hydra.launcher.dry_run=true"]
    assert sum(a.startswith("hydra.sweep.dir=") for a in cmd) == 1


def test_resume_of_a_dir_without_manifest_is_refused(tmp_path):
    proc = run_in_process(
        "-m", "seed=0,1", f"hydra.sweep.dir={tmp_path}", "hydra.launcher.resume=true"
    )
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr


def test_a_final_result_wins_over_slurm_accounting_that_lags(tmp_path):
    manifest = _manifest(tmp_path, launcher="slurm")
    done, failed = manifest.jobs[0], manifest.jobs[1]
    slurm = {done.job_ids[-1]: ("RUNNING", "None"), failed.job_ids[-1]: ("RUNNING", "None")}
    assert job_status(manifest, done, slurm, False).state == "completed"
    # a failed run's job that SLURM runs again (requeued, resumed) is running
    assert job_status(manifest, failed, slurm, False).state == "running"
    # ... unless the launcher saw that job end: then SLURM's accounting is only behind
    failed.finished_at = "2026-01-01T00:00:00+0000"
    assert job_status(manifest, failed, slurm, False).state == "failed"
