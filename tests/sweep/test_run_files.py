"""The run and sweep files (sce_sweeps.runtime.record) under faults: unreadable checkpoints, a full
disk, run dirs that would escape the sweep dir, two launches or resumes of one sweep dir at
once, torn Optuna journals."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from sce_sweeps.runtime.record import (
    CHECKPOINT,
    PREVIOUS_CHECKPOINT,
    CheckpointError,
    DiskFullError,
    Manifest,
    SweepDirBusyError,
    claim_sweep_dir,
    load_checkpoint,
    read_json,
    release_sweep_dir,
    save_checkpoint,
)
from sce_sweeps.runtime.search import open_storage
from sce_sweeps.runtime.status import main as status_main
from tests.support import ROOT, TINY, run_cli, run_in_process, wait_until

ONE_EPOCH = [*TINY, "tracker=none", "trainer.epochs=1", "optim.warmup_epochs=0"]


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# --- checkpoints --------------------------------------------------------------------------------


def test_previous_checkpoint_is_kept_and_used_when_the_newest_is_unreadable(tmp_path, capsys):
    path = tmp_path / CHECKPOINT
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"epoch": 2, "w": torch.ones(3)}, path)
    assert load_checkpoint(path)["epoch"] == 2
    assert torch.load(tmp_path / PREVIOUS_CHECKPOINT, weights_only=False)["epoch"] == 1
    _truncate(path)  # a crash mid-write on a filesystem without atomic rename
    assert load_checkpoint(path)["epoch"] == 1
    err = capsys.readouterr().err
    assert "checkpoint.pt is unreadable" in err and "resuming from the previous checkpoint" in err
    _truncate(tmp_path / PREVIOUS_CHECKPOINT)
    with pytest.raises(CheckpointError, match="cannot resume from .*checkpoint.prev.pt is unread"):
        load_checkpoint(path)
    assert load_checkpoint(tmp_path / "elsewhere" / CHECKPOINT) is None
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 kB tmpfs (a real full disk); needs root, as CI runs."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_while_checkpointing_says_so_and_keeps_the_old_one(tiny_disk):
    path = tiny_disk / CHECKPOINT
    save_checkpoint({"epoch": 1, "w": torch.zeros(16_000)}, path)  # 64 kB: fits
    with pytest.raises(DiskFullError) as caught:
        save_checkpoint({"epoch": 2, "w": torch.zeros(1_000_000)}, path)  # 4 MB: does not
    message = str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert message.startswith("no space left on device while writing checkpoint.pt (needs 4 MB")
    assert "inline_container" not in message
    assert load_checkpoint(path)["epoch"] == 1  # nothing lost
    assert [p.name for p in tiny_disk.iterdir()] == [CHECKPOINT]  # no temporary file left


def test_disk_full_reported_by_the_os_is_named_too(tmp_path, monkeypatch):
    save = torch.save

    def full(obj, f, *args, **kwargs):  # the file on disk fails, measuring in memory works
        if not isinstance(f, io.BytesIO):
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match="no space left on device while writing checkpoint"):
        save_checkpoint({"epoch": 1}, tmp_path / CHECKPOINT)


# --- claiming a sweep dir -----------------------------------------------------------------------


@pytest.mark.e2e
def test_a_sweep_dir_is_claimed_by_one_process_at_a_time(tmp_path):
    claim_sweep_dir(tmp_path)
    claim_sweep_dir(tmp_path)  # the same process again: fine
    code = f"from sce_sweeps.runtime.record import claim_sweep_dir as c; c({str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "SweepDirBusyError" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr  # names who holds it
    release_sweep_dir(tmp_path)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0  # released: free
    holder = subprocess.Popen([sys.executable, "-c", f"{code}; import time; time.sleep(60)"])
    try:  # a holder that dies, however it dies, frees it

        def held() -> bool:
            try:
                claim_sweep_dir(tmp_path)
                release_sweep_dir(tmp_path)
            except SweepDirBusyError:
                return True
            return False

        wait_until(held, 30, "the holder to claim it", interval=0.05)
    finally:
        holder.kill()
        holder.wait()
    claim_sweep_dir(tmp_path)
    release_sweep_dir(tmp_path)


# --- run dirs confined to the sweep dir, checked before anything launches ------------------------


@pytest.mark.parametrize(
    ("subdir", "message"),
    [
        ("../../elsewhere", "is outside the sweep dir"),
        ("same", "is job #0's too"),
        ("''", "the run dir is the sweep dir"),
    ],
)
def test_run_dirs_stay_inside_the_sweep_dir_and_apart(tmp_path, subdir, message):
    sweep_dir = tmp_path / "a" / "b" / "sweep"
    proc = run_in_process(
        "-m", *ONE_EPOCH, "loss.coeff=0,1", f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweep.subdir={subdir}",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any(message in line for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nothing was launched" in lines[-1]
    assert not (sweep_dir / "manifest.json").exists()
    assert not (tmp_path / "a" / "elsewhere").exists()


# --- torn Optuna journal ------------------------------------------------------------------------


def _journal_with_trials(path: Path) -> optuna.Study:
    study = optuna.create_study(storage=open_storage(str(path)), study_name="s")
    for value in (1.0, 2.0):
        trial = study.ask()
        study.tell(trial, value)
    return study


def test_torn_journal_tail_is_cut_off_keeping_a_copy(tmp_path, capsys):
    journal = tmp_path / "optuna.journal"
    _journal_with_trials(journal)
    whole = journal.read_bytes()
    torn = whole + b'{"op_code":4,"worker_id":"x","study_id":0,"dat'  # killed mid-append
    journal.write_bytes(torn)
    storage = open_storage(str(journal))
    assert "cut off a torn last line" in capsys.readouterr().err
    assert journal.read_bytes() == whole
    copies = list(tmp_path.glob("optuna.journal.torn-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == torn
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.ask(), 3.0)  # appends after the repair are readable
    reread = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    assert [t.value for t in reread.trials] == [1.0, 2.0, 3.0]
    assert len(list(tmp_path.glob("optuna.journal.torn-*"))) == 1  # whole: left alone


def test_corrupt_journal_is_refused_with_one_line_and_left_as_it_is(tmp_path):
    journal = tmp_path / "optuna.journal"
    _journal_with_trials(journal)
    lines = journal.read_bytes().splitlines(keepends=True)
    broken = b"".join([lines[0], b"{not json\n", *lines[1:]])
    journal.write_bytes(broken)
    proc = run_in_process(
        "-m", "+sweep=optuna_search", *ONE_EPOCH, f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.study_name=s",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sce_sweeps:")]
    assert len(errors) == 1 and str(journal) in errors[0] and "Traceback" not in proc.stderr
    assert journal.read_bytes() == broken


# --- checkpoints in a sweep: a resume that cannot resume one run fails that run alone -------------


@pytest.mark.slow
def test_resume_uses_the_previous_checkpoint_and_an_unresumable_run_fails_alone(tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_cli(
        "-m", *TINY, "tracker=none", "trainer.checkpoint_every=1", "loss.coeff=0,1",
        f"hydra.sweep.dir={sweep_dir}", "hydra.launcher.poll_s=0.3",
    )  # fmt: skip
    for num in (0, 1):
        (sweep_dir / str(num) / "result.json").unlink()  # as if killed before the end
        assert torch.load(sweep_dir / str(num) / PREVIOUS_CHECKPOINT, weights_only=False)["epoch"]
    _truncate(sweep_dir / "0" / CHECKPOINT)  # the newest is torn: the previous one is used
    _truncate(sweep_dir / "1" / CHECKPOINT)  # both torn: this run cannot resume
    _truncate(sweep_dir / "1" / PREVIOUS_CHECKPOINT)
    proc = subprocess.run(
        [sys.executable, "-m", "sce_sweeps.cli", "resume", str(sweep_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]  # 1: a job failed
    assert "Traceback" not in proc.stderr
    first = read_json(sweep_dir / "0" / "result.json")
    assert first["status"] == "completed" and first["epochs"] == 2
    log = Path(Manifest.load(sweep_dir).jobs[0].log).read_text()
    assert "resuming from the previous checkpoint" in log
    second = read_json(sweep_dir / "1" / "result.json")
    assert second["status"] == "failed"
    assert second["reason"].startswith("CheckpointError: cannot resume from")
    status = run_in_process(str(sweep_dir), "--json", main=status_main)
    assert [j["state"] for j in json.loads(status.stdout)["jobs"]] == ["completed", "failed"]


# --- two launches, or two resumes, of one sweep dir at once -------------------------------------


def _popen(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _both(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        out.append((proc.returncode, err))
    return out


@pytest.mark.slow
def test_concurrent_launches_and_resumes_of_one_sweep_dir_one_wins(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "sce_sweeps", "-m", *ONE_EPOCH, "loss.coeff=0.5", f"hydra.sweep.dir={sweep_dir}"]
    results = _both([_popen(*args), _popen(*args)])
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    refusals = [line for line in refused.splitlines() if line.startswith("sce_sweeps:")]
    assert len(refusals) == 1 and "Traceback" not in refused
    assert "in use by another launch" in refusals[0] or "already holds a sweep" in refusals[0]
    manifest = Manifest.load(sweep_dir)
    assert len(manifest.jobs) == 1 and len(manifest.jobs[0].job_ids) == 1

    (sweep_dir / "0" / "result.json").unlink()  # interrupted: a resume reruns it
    resume = ["-m", "sce_sweeps.cli", "resume", str(sweep_dir)]
    results = _both([_popen(*resume), _popen(*resume)])
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "in use by another launch or resume" in refused and "Traceback" not in refused
    manifest = Manifest.load(sweep_dir)
    assert len(manifest.jobs[0].job_ids) == 2 and manifest.resumes == 1  # rerun once
    assert read_json(sweep_dir / "0" / "result.json")["status"] == "completed"


# --- SLURM that is not there, or refuses the request ---------------------------------------------


def _slurm_sweep(sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sce_sweeps", "-m", *ONE_EPOCH, "loss.coeff=0,1"]
    cmd += ["launcher=slurm", "cluster=local", "hydra.launcher.poll_s=0.5"]
    return subprocess.run(
        [*cmd, f"hydra.sweep.dir={sweep_dir}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("sce_sweeps:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _not_submitted(sweep_dir: Path) -> list[tuple[str, str]]:
    status = run_in_process(str(sweep_dir), "--json", main=status_main)
    assert status.returncode == 1
    jobs = json.loads(status.stdout)["jobs"]
    manifest = Manifest.load(sweep_dir)
    assert [j.state for j in manifest.jobs] == ["not submitted"] * 2
    assert all(not j.job_ids for j in manifest.jobs)
    return [(j["state"], j["reason"]) for j in jobs]


def test_slurm_commands_missing_one_line_exit_2_not_submitted(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # a PATH with the usual tools but no SLURM commands
    bin_dir.mkdir()
    for tool in ("git", "nvidia-smi"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    slurm = ["launcher=slurm", "cluster=local", "hydra.launcher.poll_s=0.5"]
    sweep = [*ONE_EPOCH, "loss.coeff=0,1", *slurm, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = run_in_process("-m", *sweep)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert "SLURM's commands are not installed" in line and "sce_sweeps.cli resume" in line
    states = _not_submitted(tmp_path / "sweep")
    assert {s for s, _ in states} == {"not submitted"}
    assert all("not installed" in reason for _, reason in states)


@pytest.mark.slow
@pytest.mark.slurm
def test_request_sbatch_refuses_is_one_line_and_resume_submits_once_fixed(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    too_many = slurm_cluster.cpus * 8
    proc = _slurm_sweep(sweep_dir, f"hydra.launcher.cpus_per_task={too_many}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert "sbatch: error: Batch job submission failed:" in line  # SLURM's own reason
    states = _not_submitted(sweep_dir)
    assert all(s == "not submitted" and "sbatch: error" in r for s, r in states)

    fixed = "hydra.launcher.cpus_per_task=1"
    resume = subprocess.run(
        [sys.executable, "-m", "sce_sweeps.cli", "resume", str(sweep_dir), fixed],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "2 jobs to run, 0 skipped" in resume.stderr and "submitted 2 SLURM jobs" in resume.stderr
    jobs = Manifest.load(sweep_dir).jobs
    assert [j.state for j in jobs] == ["completed"] * 2 and all(len(j.job_ids) == 1 for j in jobs)


# --- which job of the sweep a launched job is ---------------------------------------------------


def test_jobs_are_matched_by_number_overrides_or_config_hash(tmp_path):
    from sce_sweeps.runtime.plan import _known_job
    from sce_sweeps.runtime.record import Job

    manifest = Manifest.create(tmp_path, "s", "local")
    for num, seed in enumerate((0, 1, 2)):
        manifest.jobs.append(Job(num, [f"seed={seed}"], f"h{seed}", str(num)))
    assert _known_job(manifest, 1, ["seed=1"], "h1").num == 1  # the same command again
    assert _known_job(manifest, 0, ["seed=2"], "h2").num == 2  # a grid in another order
    assert _known_job(manifest, 1, ["seed=1"], "changed").num == 1  # then refused: changed
    assert _known_job(manifest, 1, ["seed=5"], "h5") is None  # an extended grid: a new job
    # a new Optuna trial with the parameters of trial 2 (its overrides name its own number)
    assert _known_job(manifest, 7, ["seed=2", "++hydra.job.env_set.T='7'"], "h2") is None
    assert _known_job(None, 0, ["seed=0"], "h0") is None


def test_run_state_prints_formats_and_serialises_as_its_value():
    from sce_sweeps.runtime.record import RunState

    state = RunState.NOT_SUBMITTED
    assert state == "not submitted" and RunState("not submitted") is state
    assert str(state) == f"{state}" == "not submitted"
    assert f"{state:>15}|{RunState.FAILED:.4}" == "  not submitted|fail"
    assert json.dumps({"status": RunState.PRUNED}) == '{"status": "pruned"}'
    assert ", ".join([RunState.COMPLETED, RunState.RUNNING]) == "completed, running"


def test_package_uses_no_python_3_11_only_features():
    """pyproject says requires-python >= 3.10: no StrEnum, tomllib, typing.Self, exception
    groups or except* in the package or its Hydra plugins."""
    import ast

    root = ROOT
    banned_names = {"StrEnum", "Self", "ExceptionGroup", "BaseExceptionGroup", "tomllib"}
    found = []
    for path in sorted([*root.glob("sce_sweeps/**/*.py"), *root.glob("hydra_plugins/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, getattr(ast, "TryStar", ())):  # except* (3.11+)
                names = ["except*"]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(a.name for a in node.names)]
            elif isinstance(node, ast.Name):
                names = [node.id]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            found += [
                f"{path.relative_to(root)}:{node.lineno} {n}"
                for n in names
                if n in banned_names or n == "except*"
            ]
    assert not found, found


# --- heartbeat.json: a run's last step and its time ---------------------------------------------


def test_heartbeat_is_rewritten_every_few_seconds_and_tells_a_stall(tmp_path, monkeypatch):
    from sce_sweeps.runtime import record
    from sce_sweeps.runtime.record import heartbeat

    clock = [1000.0]
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: clock[0])
    record.beat(tmp_path, 0)
    first = record.read_heartbeat(tmp_path)
    assert first["step"] == 0 and first["pid"] == os.getpid() and first["longest_gap_s"] == 0
    clock[0] += 0.5
    record.beat(tmp_path, 1)  # within BEAT_EVERY_S: not rewritten
    assert record.read_heartbeat(tmp_path)["step"] == 0
    clock[0] += 90.0  # a 90 s evaluation between two steps
    record.beat(tmp_path, 2)
    beat = record.read_heartbeat(tmp_path)
    assert beat["step"] == 2 and beat["longest_gap_s"] == 90.0
    at = beat["time"]
    assert record.stall_limit(beat) == 5 * 90.0  # derived: 5x the longest gap
    assert record.stall_limit({"longest_gap_s": 1.0}) == record.STALL_FLOOR_S
    assert record.stall(tmp_path, at=at + 400) is None
    found = record.stall(tmp_path, at=at + 460)
    assert found is not None and round(found.age_s) == 460 and found.step == 2
    assert str(found).startswith("stalled: no progress for 460.0 s (limit 450 s), last step 2")
    assert record.stall(tmp_path, stall_after=10, at=at + 11) is not None
    record.clear_heartbeat(tmp_path)  # a new attempt is watched from its own first beat
    assert record.stall(tmp_path, stall_after=10, at=at + 11) is None
    (tmp_path / record.HEARTBEAT).write_text("{")  # torn by hand: no heartbeat, no error
    assert record.read_heartbeat(tmp_path) is None
