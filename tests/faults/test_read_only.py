"""A sweep on a read-only filesystem (an archived sweep, a colleague's directory).

Status, tables, plots and a resume that finds nothing to do work; a resume that has jobs to
rerun says in one line that the directory is not writable. The sweeps are real (two tiny
jobs each) and the filesystem is really read-only: a read-only bind mount (``chmod`` means
nothing to root), unmounted at the end.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sce_sweeps.runtime.record import RESULT, Job, Manifest, write_result
from sce_sweeps.runtime.resume import read_only_verdict, resume_command
from sce_sweeps.runtime.status import main as status_main
from tests.support import ROOT, TINY, read_only_mount, run_cli, run_in_process, run_script

pytestmark = pytest.mark.slow

SWEEP = [*[o for o in TINY if not o.startswith("trainer.epochs")], "trainer.epochs=1"]


def _tree(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def read_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder holding ``done/`` (a finished sweep of 2 jobs) and ``half/`` (the same with
    job 1 interrupted: no result.json, its launcher gone), mounted read-only."""
    base = tmp_path_factory.mktemp("read_only")
    source, mount = base / "source", base / "mount"
    run_cli("-m", *SWEEP, "tracker=none", "loss.coeff=0,1", f"hydra.sweep.dir={source / 'done'}")
    run_cli("-m", *SWEEP, "tracker=none", "loss.coeff=0,1", f"hydra.sweep.dir={source / 'half'}")
    (source / "half" / "1" / RESULT).unlink()
    manifest = Manifest.load(source / "half")
    manifest.jobs[1].state, manifest.jobs[1].finished_at = "running", None
    manifest.save()
    with read_only_mount(source, mount):
        yield mount


def _resume(sweep: Path, style: str = "resume") -> subprocess.CompletedProcess:
    """``python -m sce_sweeps.cli resume SWEEP``, or (``style="hydra"``) the sweep's own command
    line with ``hydra.launcher.resume=true``, as a user retypes it."""
    if style == "resume":
        command = [sys.executable, "-m", "sce_sweeps.cli", "resume", str(sweep)]
    else:
        command = resume_command(Manifest.load(sweep), [])
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_status_tables_and_plots_of_a_read_only_sweep(read_only, tmp_path):
    sweep = read_only / "done"
    before = _tree(sweep)
    status = run_in_process(str(sweep), main=status_main)
    assert status.returncode == 0, status.stderr
    assert "2 jobs: 2 completed" in status.stdout
    for script in ("ablation_table", "plot_sweep", "collect"):
        proc = run_script(script, sweep, "--out", tmp_path / script)
        assert proc.returncode == 0, proc.stderr
        assert any((tmp_path / script).iterdir())
    # without --out, the default output dir is inside the sweep: one line says what to do
    proc = run_script("ablation_table", sweep)
    assert proc.returncode == 1
    assert "| loss.coeff" in proc.stdout  # the table is printed all the same
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{sweep / 'analysis'}" in lines[0] and "read-only" in lines[0]
    assert "--out" in lines[0]
    assert _tree(sweep) == before


@pytest.mark.parametrize("style", ["resume", "hydra"])
@pytest.mark.parametrize(
    ("name", "code", "words"),
    [("done", 0, ["nothing to resume", "2 jobs"]), ("half", 2, ["not writable", "1 job to rerun"])],
    ids=["nothing_to_do", "work_to_do"],
)
def test_a_resume_of_a_read_only_sweep_says_in_one_line_what_it_would_do(
    read_only, name, code, words, style
):
    """Nothing to do: exit 0. Jobs to rerun: exit 2, the directory is not writable. The same
    from ``python -m sce_sweeps.cli resume`` and from the sweep's command with
    ``hydra.launcher.resume=true``."""
    sweep = read_only / name
    before = _tree(sweep)
    proc = _resume(sweep, style)
    assert proc.returncode == code, proc.stdout + proc.stderr
    out = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(out) == 1 and "Traceback" not in proc.stderr, out
    assert str(sweep) in out[0] and all(word in out[0] for word in words), out
    assert _tree(sweep) == before


def test_a_read_only_search_with_trials_left_has_work_to_do(tmp_path):
    """An Optuna search whose jobs all finished but that has not reached n_trials (its
    multirun.yaml says) still has work: a read-only resume must not call it done."""
    manifest = Manifest.create(tmp_path, "search", "local")
    for num in range(2):
        manifest.jobs.append(Job(num, [f"loss.coeff=0.{num}"], f"hash{num}", str(num)))
        write_result(tmp_path / str(num), {"status": "completed", "config_hash": f"hash{num}"})
    manifest.save()
    sweeper = {"_target_": "hydra_plugins.sce_sweeps_optuna.sweeper.OptunaSweeper"}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))
    assert read_only_verdict(Manifest.load(tmp_path))[0] == 0
    sweeper["n_trials"] = 5
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))
    code, line = read_only_verdict(Manifest.load(tmp_path))
    assert code == 2 and "not writable" in line and "3 more trials of n_trials=5" in line
