"""A sweep's exit status says how its jobs ended (0 all completed or pruned, 1 a job failed or
never ran), after its summary; and every command a sweep prints for the user to paste (status,
resume) runs as printed, whatever the sweep dir's name and the overrides hold."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sce_sweeps.runtime.record import Manifest
from sce_sweeps.runtime.status import exit_code, sweep_status
from tests.support import FAILING_POINT, read_json, run_cli

pytestmark = pytest.mark.slow


def printed_commands(text: str) -> list[str]:
    """The commands between backquotes in the launcher's messages."""
    return re.findall(r"`(python [^`]+)`", text)


def run_printed(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """``command`` as a user pastes it into bash, ``python`` being this interpreter."""
    assert command.startswith("python ")
    line = shlex.quote(sys.executable) + command[len("python") :]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def test_sweep_with_a_failed_job_exits_1_after_its_summary(failing_point_sweep):
    proc = failing_point_sweep.proc
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = proc.stderr.index("2 jobs: 1 completed, 1 failed")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.stderr.index("exit status 1: 1 failed of 2 jobs") > summary
    assert "exit status 1" in last and "sce_sweeps.cli resume" in last  # the last word
    manifest = Manifest.load(failing_point_sweep.run_dir)
    assert exit_code(sweep_status(manifest)) == 1  # the same as status says


def test_printed_commands_run_as_printed_and_a_resume_exits_as_the_sweep(tmp_path):
    """A sweep dir with a space, a quote and brackets; overrides with , [ ] = and '."""
    sweep_dir = tmp_path / "it's my sweep [1]"
    quoted_dir = '"' + str(sweep_dir) + '"'  # Hydra's own quoting of the override's value
    first = run_cli(
        "-m",
        *FAILING_POINT,
        "hydra.launcher.preload=[sce_sweeps.app,kornia.augmentation]",
        f"hydra.sweep.dir={quoted_dir}",
        check=False,
    )
    assert (sweep_dir / "manifest.json").exists()
    commands = printed_commands(first.stderr)
    status = [c for c in commands if "sce_sweeps.cli status" in c]
    assert status, first.stderr[-3000:]
    for command in set(status):
        shown = run_printed(command, tmp_path)  # from another directory
        assert shown.returncode == 1, shown.stderr  # 1: a job failed (2 would be a usage error)
        assert str(sweep_dir) in shown.stdout and "1 completed, 1 failed" in shown.stdout
    assert first.returncode == 1, first.stderr[-3000:]
    resume = [c for c in commands if "sce_sweeps.cli resume" in c]
    assert resume, first.stderr[-3000:]

    # the same command again: refused (the dir holds a sweep), with a resume command to paste
    again = run_cli("-m", *FAILING_POINT, f"hydra.sweep.dir={quoted_dir}", check=False)
    assert again.returncode == 2 and "already holds a sweep" in again.stderr
    resume += printed_commands(again.stderr)

    resume = sorted(set(resume))  # the same command, printed in several messages
    for command in resume:  # each reruns the failed job only, which fails again: exit 1
        resumed = run_printed(command, tmp_path)
        assert resumed.returncode == 1, resumed.stderr[-3000:]
        assert "1 job to run, 1 skipped" in resumed.stderr
        assert "exit status 1: 1 failed of 2 jobs" in resumed.stderr
    jobs = read_json(sweep_dir / "manifest.json")["jobs"]
    assert len(jobs[0]["job_ids"]) == 1 and len(jobs[1]["job_ids"]) == 1 + len(resume)

    # the command line resume prints (cd DIR && python ...): pasted, it runs as well
    resumed = run_printed(command, tmp_path)
    line = resumed.stdout.strip().splitlines()[0].removeprefix("sce_sweeps.cli resume: ")
    assert line.startswith("(cd ") and " && " in line
    cd, _, pasted = line[1:-1].partition(" && ")
    python = shlex.split(pasted)[0]
    assert Path(python).name.startswith("python")
    again = subprocess.run(
        ["bash", "-c", f"{cd} && {pasted}"], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 1 and "1 job to run, 1 skipped" in again.stderr
