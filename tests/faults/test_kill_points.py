"""SIGKILL at random points while each kind of run file is written, through the project's own
writers and readers (sce_sweeps.runtime.record, the trainer's metrics, Optuna's journal as the
sweeper opens it, the Aim merge of sce_sweeps.runtime.tracking); see tests/faults/kill.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from sce_sweeps.runtime import record
from sce_sweeps.runtime.trial import open_storage
from tests.faults.kill import kill_loop
from tests.support import ROOT

pytestmark = pytest.mark.slow

_cache: dict[str, object] = {}  # per child process (forked): what a writer keeps open


def _acked(workdir: Path) -> list[int]:
    path = workdir / "ack.txt"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _temp_files(workdir: Path) -> str:
    left = [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]
    return f"{len(left)} temp files left" if left else ""


# --- checkpoint.pt ---------------------------------------------------------------------------


def _checkpoint_resume(workdir: Path) -> int:
    state = record.load_checkpoint(workdir / record.CHECKPOINT)
    if state is None:
        return 0
    assert bool((state["weights"] == state["epoch"]).all()), "a torn checkpoint was loaded"
    return state["epoch"]


def _checkpoint_write(workdir: Path, version: int) -> None:
    state = {"epoch": version, "weights": torch.full((512, 1024), float(version))}  # 2 MB
    record.save_checkpoint(state, workdir / record.CHECKPOINT)


def test_kill_while_checkpoints_are_written(tmp_path):
    row = kill_loop("checkpoint.pt", tmp_path, _checkpoint_resume, _checkpoint_write,
                    notes=_temp_files)  # fmt: skip
    assert (row.lost, row.resumable) == (0, row.tried)


# --- result.json -----------------------------------------------------------------------------


def _result_resume(workdir: Path) -> int:
    result = record.read_result(workdir)
    return 0 if result is None else int(result["epochs"])


def _result_write(workdir: Path, version: int) -> None:
    pad = {f"param_{i}": "x" * 64 for i in range(2000)}  # ~150 kB: a write takes a while
    result = {"status": "completed", "epochs": version, "knn_top1": float(version), **pad}
    record.write_result(workdir, result)


def test_kill_while_results_are_written(tmp_path):
    row = kill_loop("result.json", tmp_path, _result_resume, _result_write, notes=_temp_files)
    assert (row.lost, row.resumable) == (0, row.tried)


# --- metrics.jsonl (appended by the trainer, cut back on resume) -----------------------------


def _metrics_resume(workdir: Path) -> int:
    path = workdir / record.METRICS
    if path.exists() and path.stat().st_size:  # note whether the kill tore the last line
        with path.open("rb") as f:
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
        with (workdir / "torn.txt").open("a") as f:
            f.write(f"{int(torn)}\n")
    rows = record.truncate_metrics(workdir, last_epoch=10**9)
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1)), "a row went missing"
    return len(rows)


def _metrics_write(workdir: Path, version: int) -> None:
    row = {"epoch": version, "loss": 1.0 / version, "pad": "x" * 200_000}
    record.append_metrics(workdir, row)  # as train.end_epoch appends a row


def _metrics_notes(workdir: Path) -> str:
    torn = workdir / "torn.txt"
    return f"{torn.read_text().split().count('1')} torn last lines dropped" if torn.exists() else ""


def test_kill_while_metrics_are_appended(tmp_path):
    # Each resume reads and rewrites the whole file, so its size sets the cost: kill within the
    # first ~20 ms of appends (a few 200 kB rows each) so that it stays tens of MB, not GBs.
    row = kill_loop("metrics.jsonl", tmp_path, _metrics_resume, _metrics_write,
                    delay_s=(0.001, 0.02), notes=_metrics_notes)  # fmt: skip
    assert (row.lost, row.resumable) == (0, row.tried)


# --- manifest.json ---------------------------------------------------------------------------


def _manifest_resume(workdir: Path) -> int:
    manifest = record.Manifest.load(workdir)
    assert manifest is not None and len(manifest.jobs) == 2000
    recorded = {int(j.reason) for j in manifest.jobs if j.reason}
    acked = _acked(workdir)
    missing = [v for v in acked[-2000:] if v not in recorded and v % 2000 not in ()]
    newest = {v % 2000: v for v in acked}  # each job holds the newest version written to it
    missing = [v for v in newest.values() if int(manifest.jobs[v % 2000].reason or 0) < v]
    assert not missing, f"acknowledged states lost: {missing[:5]}"
    _cache["manifest"] = manifest
    return max(recorded, default=0)


def _manifest_write(workdir: Path, version: int) -> None:
    manifest = _cache["manifest"]
    job = manifest.jobs[version % 2000]
    job.state, job.reason = record.RunState.RUNNING.value, str(version)
    manifest.save()


def test_kill_while_the_manifest_is_written(tmp_path):
    manifest = record.Manifest.create(tmp_path, "faults", "slurm")
    manifest.jobs = [record.Job(i, [f"loss.coeff={i}"], "h", str(i)) for i in range(2000)]
    manifest.save()
    row = kill_loop("manifest.json", tmp_path, _manifest_resume, _manifest_write,
                    notes=_temp_files)  # fmt: skip
    assert (row.lost, row.resumable) == (0, row.tried)


# --- the Optuna journal ----------------------------------------------------------------------


def _journal_resume(workdir: Path) -> int:
    storage = open_storage(str(workdir / "journal.log"))  # as the sweeper and jobs open it
    study = optuna.create_study(storage=storage, study_name="faults", load_if_exists=True)
    done = {int(t.value) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    missing = sorted(set(_acked(workdir)) - done)
    assert not missing, f"acknowledged trials lost: {missing[:5]}"
    _cache["study"] = study
    return max(done, default=0)


def _journal_write(workdir: Path, version: int) -> None:
    study = _cache["study"]
    trial = study.ask()
    trial.report(float(version), 0)
    study.tell(trial, float(version))


def _journal_notes(workdir: Path) -> str:
    torn = list(workdir.glob("journal.log.torn-*"))
    return f"{len(torn)} torn tails repaired" if torn else ""


def test_kill_while_the_optuna_journal_is_appended(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    row = kill_loop("Optuna journal", tmp_path, _journal_resume, _journal_write,
                    notes=_journal_notes)  # fmt: skip
    assert (row.lost, row.resumable) == (0, row.tried)


# --- Aim: merging runs into the sweep's repo -------------------------------------------------

MAKE_RUNS = """
import json, sys
from pathlib import Path
from aim import Run
from sce_sweeps.runtime.tracking import create_repo
base, hashes = Path(sys.argv[1]), []
for k in range(4):
    run = Run(repo=str(base / f"run{k}" / "aim"), system_tracking_interval=None,
              capture_terminal_logs=False, log_system_params=False)
    run["job"] = {"num": k}
    for step in range(200):
        run.track(float(k * 1000 + step), name="loss", step=step, context={"subset": "train"})
    hashes.append(run.hash)
    run.close()
create_repo(base / "shared")  # the sweep's repo exists before its first merge, as in a sweep
print(json.dumps(hashes))
"""


def _aim_resume(workdir: Path) -> int:
    from aim import Repo

    from sce_sweeps.runtime.adapters.aim_repo import index_repo
    from sce_sweeps.runtime.record import locked
    from sce_sweeps.runtime.tracking import LOCK_FILE

    hashes = json.loads((workdir / "hashes.json").read_text())
    acked = _acked(workdir)
    shared = workdir / "shared"
    if acked:
        with locked(shared / LOCK_FILE, 60):  # as a merge would hold it
            index_repo(shared)  # as `aim up` does: the SDK's queries see the merged runs
            repo = Repo(str(shared))
            for k in sorted({v % 4 for v in acked}):
                run = repo.get_run(hashes[k])
                assert run is not None, f"merged run {k} is missing"
                (metric,) = run.metrics()
                steps, (values, *_) = metric.data.items_list()
                assert list(steps) == list(range(200)), f"run {k}: steps {steps[:5]}..."
                assert values[-1] == k * 1000 + 199
            repo.close()
    return acked[-1] if acked else 0


def _aim_write(workdir: Path, version: int) -> None:
    from sce_sweeps.runtime.tracking import merge_run

    hashes = json.loads((workdir / "hashes.json").read_text())
    k = version % 4
    merge_run(workdir / f"run{k}" / "aim", hashes[k], workdir / "shared", timeout=60)


def test_kill_while_aim_runs_are_merged(tmp_path):
    made = subprocess.run([sys.executable, "-c", MAKE_RUNS, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=300)  # fmt: skip
    (tmp_path / "hashes.json").write_text(made.stdout.strip().splitlines()[-1])
    import aim.sdk.repo  # noqa: F401  (imported once here, not in each forked writer)

    import sce_sweeps.runtime.tracking  # noqa: F401

    row = kill_loop("Aim merge", tmp_path, _aim_resume, _aim_write, delay_s=(0.05, 1.0),
                    notes=lambda d: f"{len(_acked(d))} merges acknowledged")  # fmt: skip
    assert (row.lost, row.resumable) == (0, row.tried)
    assert len(_acked(tmp_path)) >= row.tried // 2, row.notes  # kills landed among merges
