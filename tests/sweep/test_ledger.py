"""The GPU-hour ledger (``ledger.json``): each attempt of a run records what it held and for
how long; status, the tables and the dry run sum the attempts, and SLURM's accounting of a
sweep with a requeue agrees with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sce_sweeps.runtime import record
from sce_sweeps.runtime.status import main as status_main
from tests.support import (
    TINY,
    read_json,
    read_only_mount,
    requeue_job_0,
    run_cli,
    run_in_process,
    wait_until,
)

SWEEP = [*TINY, "tracker=none", "seed=0", "hydra.launcher.poll_s=0.5", "loss.coeff=0.0,1.0"]


def _status(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_in_process(str(sweep_dir), *args, main=status_main)


def test_attempt_resources_read_slurms_environment():
    env = {
        "SLURM_JOB_ID": "130",
        "SLURM_ARRAY_JOB_ID": "128",
        "SLURM_ARRAY_TASK_ID": "2",
        "SLURM_CPUS_ON_NODE": "16",
        "SLURM_CPUS_PER_TASK": "4",
        "SLURM_NTASKS": "4",
        "SLURM_GPUS_ON_NODE": "4",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
        "SLURMD_NODENAME": "gpu07",
    }
    got = record.attempt_resources(cpus=2, gpus=1, env=env)  # SLURM's, not the launcher's
    assert (got["job_id"], got["node"], got["tasks"]) == ("128_2", "gpu07", 4)
    assert (got["cpus"], got["gpus"]) == (16, 4)
    env = {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "3", "SLURM_NTASKS": "2"}
    assert record.attempt_resources(env=env)["cpus"] == 6
    env = {"SLURM_JOB_ID": "8", "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_ON_NODE": "32"}
    env["SLURM_GPUS_ON_NODE"] = "8"
    got = record.attempt_resources(env=env)  # nodes alike: one node's times the nodes
    assert (got["nodes"], got["cpus"], got["gpus"]) == (2, 64, 16)
    local = record.attempt_resources(cpus=2, env={"CUDA_VISIBLE_DEVICES": "1,3"})
    assert (local["job_id"], local["cpus"], local["gpus"]) == (None, 2, 2)


def test_sacct_records_fill_the_attempts_and_add_the_unrecorded_one(tmp_path):
    tres = record.parse_tres("billing=8,cpu=8,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1")
    assert (tres["cpu"], tres["gres/gpu"], tres["mem"]) == (8, 2, 65536)
    own = {"job_id": "5_0", "cpus": 8, "gpus": 2, "start": 1000.5, "end": 2700.0}
    record.write_json_atomic({"attempts": [own]}, tmp_path / record.LEDGER)
    assert record.needs_accounting(tmp_path)
    gpus = "cpu=8,gres/gpu:a100=2,mem=64G"
    rows = [  # the first attempt, requeued; a second one killed before it recorded itself
        {"job_id": "5_0", "alloc_tres": gpus, "elapsed_s": 1800, "start": 1000.0},
        {"job_id": "5_0", "alloc_tres": gpus, "elapsed_s": 900, "start": 3000.0},
    ]
    rows[0]["state"], rows[1]["state"] = "REQUEUED", "FAILED"
    assert record.fill_accounting(tmp_path, rows)
    assert not record.fill_accounting(tmp_path, rows)  # once is enough
    assert not record.needs_accounting(tmp_path)
    first, second = record.read_ledger(tmp_path)["attempts"]
    assert first["sacct"]["gpus"] == 2 and second["sacct"]["state"] == "FAILED"
    usage = record.run_usage(tmp_path)
    assert (usage.attempts, usage.accounted, usage.gpu_h, usage.cpu_h) == (2, 2, 1.5, 6.0)
    measured = record.ledger_usage(record.read_ledger(tmp_path), measured_only=True)
    assert measured.attempts == 1 and measured.gpu_h == pytest.approx(2 * 1699.5 / 3600)


def test_an_attempt_counts_to_its_last_checkpoint_and_a_restart_adds_one(tmp_path, monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_START_TIME"):
        monkeypatch.delenv(key, raising=False)
    record.ledger_start(tmp_path, cpus=3)
    (started,) = record.read_ledger(tmp_path)["attempts"]
    record.save_checkpoint({"epoch": 1}, tmp_path / record.CHECKPOINT)
    (seen,) = record.read_ledger(tmp_path)["attempts"]  # killed here, it would count to here
    assert seen["end"] is None and seen["last_seen"] > started["last_seen"] >= seen["start"]
    assert (seen["cpus"], seen["gpus"], seen["job_id"]) == (3, 0, None)
    record.ledger_update(tmp_path, end=True)  # its exit; a restart adds an attempt
    record.ledger_start(tmp_path, cpus=3)
    record.ledger_update(tmp_path, end=True)
    first, second = record.read_ledger(tmp_path)["attempts"]
    assert first["end"] is not None and second["end"] >= second["start"]
    hours = sum(a["end"] - a["start"] for a in (first, second)) / 3600
    usage = record.run_usage(tmp_path)
    assert usage.attempts == 2 and usage.cpu_h == pytest.approx(3 * hours)
    record.ledger_update(tmp_path)  # an ended attempt: this process writes it no more
    assert record.read_ledger(tmp_path)["attempts"] == [first, second]


def test_a_corrupt_ledger_is_named_and_never_fails_the_run(tmp_path, capsys):
    (tmp_path / record.LEDGER).write_text('{"attempts": [')  # torn by hand or a bad disk
    record.ledger_start(tmp_path)
    record.save_checkpoint({"epoch": 1}, tmp_path / record.CHECKPOINT)  # goes on
    err = capsys.readouterr().err
    assert f"not recorded in {record.LEDGER}: {tmp_path / record.LEDGER}: corrupt" in err


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_local_sweeps_spending_in_status_tables_and_dry_run(tmp_path):
    from sce_sweeps.analysis import ablation_table, collect, to_markdown

    sweep_dir = tmp_path / "sweep"
    common = ["-m", *SWEEP, "trainer.epochs=1", "launcher=local", "cluster=local"]
    common += [f"hydra.sweep.dir={sweep_dir}"]
    run_cli(*common)
    usages = [record.run_usage(sweep_dir / n) for n in ("0", "1")]
    attempts = [record.read_ledger(sweep_dir / n)["attempts"] for n in ("0", "1")]
    assert [(len(a), a[0]["gpus"], a[0]["end"] is not None) for a in attempts] == [(1, 0, True)] * 2
    assert all(u.cpu_h > 0 and u.gpu_h == 0 for u in usages)

    out = json.loads(_status(sweep_dir, "--json").stdout)
    assert [j["cpu_h"] for j in out["jobs"]] == [u.cpu_h for u in usages]
    assert out["spent"] == {"gpu_h": 0.0, "cpu_h": sum(u.cpu_h for u in usages)}
    table = _status(sweep_dir).stdout
    assert f"spent: 0.000 GPU-h, {sum(u.cpu_h for u in usages):.3f} CPU-h" in table, table
    assert f"[0.000 GPU-h, {usages[0].cpu_h:.3f} CPU-h]" in table

    ablation = ablation_table(collect([sweep_dir]))
    rows = ablation.rows[ablation.rows["metric"] == ablation.metrics[0]]
    assert list(rows["cpu_h"]) == [u.cpu_h for u in usages]
    markdown = to_markdown(ablation)
    assert "| GPU-h | CPU-h |" in markdown
    assert f"{sum(u.cpu_h for u in usages):.2f} CPU-h" in markdown

    dry = run_in_process(*common, "hydra.launcher.dry_run=true", "hydra.launcher.resume=true")
    mean = sum(u.cpu_h for u in usages) / 2
    assert f"{mean:.3g} CPU-h a run on average over 2 finished runs" in dry.stdout, dry.stdout


def _sacct_cpu_hours(job_ids: list[str], attempts: int) -> tuple[float, list[str]]:
    """CPU TRES x ElapsedRaw over every attempt SLURM recorded of ``job_ids``, read here with
    sacct itself (not through sce_sweeps), once all ``attempts`` have ended; and the records."""
    cmd = ["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,AllocTRES,ElapsedRaw,State"]
    cmd += ["-j", ",".join(job_ids)]

    def ended() -> list[str] | None:  # the launcher sees a result before SLURM sees its job end
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
        states = {line.split("|")[3] for line in out}
        return out if len(out) == attempts and states <= {"COMPLETED", "REQUEUED"} else None

    records = wait_until(ended, 60, f"sacct to record {attempts} ended attempts")
    total = 0.0
    for line in records:
        _, tres, elapsed, _ = line.split("|")
        total += record.parse_tres(tres)["cpu"] * int(elapsed) / 3600
    return total, records


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.timeout(420)
def test_the_ledger_agrees_with_sacct_over_a_sweep_with_a_requeue(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "sce_sweeps", "-m", *SWEEP, "trainer.epochs=5"]
    cmd += ["launcher=slurm", "cluster=local", f"hydra.sweep.dir={sweep_dir}"]
    returncode, err, job_id = requeue_job_0(cmd, sweep_dir)
    assert returncode == 0, err[-3000:]
    jobs = read_json(sweep_dir / "manifest.json")["jobs"]
    assert [j["state"] for j in jobs] == ["completed", "completed"]
    ledgers = [record.read_ledger(sweep_dir / j["run_dir"]) for j in jobs]
    assert [len(ledger["attempts"]) for ledger in ledgers] == [2, 1]  # the requeue: 2 attempts
    first = ledgers[0]["attempts"][0]
    assert (first["job_id"], first["cpus"], first["gpus"]) == (job_id, 1, 0)
    assert first["end"] is not None  # the requeue's SIGTERM ended it cleanly

    ids = [j["job_ids"][-1] for j in jobs]
    sacct_cpu_h, records = _sacct_cpu_hours(ids, attempts=3)  # SLURM too saw three attempts
    measured = sum(record.ledger_usage(ledger, measured_only=True).cpu_h for ledger in ledgers)

    # a read-only sweep dir keeps the attempts' own records (sacct's cannot be written): one
    # archived before any status (the launcher's summary fills in what SLURM has by then)
    for job, ledger in zip(jobs, ledgers):
        attempts = [{k: v for k, v in a.items() if k != "sacct"} for a in ledger["attempts"]]
        record.write_json_atomic({"attempts": attempts}, sweep_dir / job["run_dir"] / record.LEDGER)
    with read_only_mount(sweep_dir, tmp_path / "read_only") as read_only:
        proc = _status(read_only, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["spent"]["cpu_h"] == pytest.approx(measured)
    assert record.needs_accounting(sweep_dir / "0")

    # status fills SLURM's accounting into each attempt: the ledger's sum is SLURM's
    out = json.loads(_status(sweep_dir, "--json").stdout)
    ledger_cpu_h = out["spent"]["cpu_h"]
    print(
        f"\nledger {ledger_cpu_h * 3600:.1f} CPU-s, sacct {sacct_cpu_h * 3600:.1f} CPU-s "
        f"({(ledger_cpu_h - sacct_cpu_h) / sacct_cpu_h:+.2%}); before sacct's fill-in, the "
        f"attempts' own records {measured * 3600:.1f} CPU-s "
        f"({(measured - sacct_cpu_h) / sacct_cpu_h:+.2%})"
    )
    assert ledger_cpu_h == pytest.approx(sacct_cpu_h, rel=0.02), records
    assert 0.5 * sacct_cpu_h < measured < 1.2 * sacct_cpu_h  # short of the exits' seconds
    assert out["spent"]["gpu_h"] == 0.0
    ledgers = [record.read_ledger(sweep_dir / j["run_dir"]) for j in jobs]
    filled = [a["sacct"]["state"] for ledger in ledgers for a in ledger["attempts"]]
    assert filled == ["REQUEUED", "COMPLETED", "COMPLETED"]
    assert [record.ledger_usage(ledger).accounted for ledger in ledgers] == [2, 1]
