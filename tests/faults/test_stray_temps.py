"""Temp files of atomic writes (result.json, manifest.json, checkpoint.pt) never pile up.

A writer writes a temp file beside the file, then renames it over the file. Here a real
writer process stops exactly between the two: SIGKILLed there (its temp is left behind; the
next write, or the run's resume, removes it and the data are intact), or held there alive
(its temp is never removed under it, and its rename still lands). Files that are not temps of
these writers are never touched.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sce_sweeps.runtime import record
from tests.support import ROOT

pytestmark = pytest.mark.e2e  # jobs, servers and writers in processes of their own

KINDS = ("result.json", "manifest.json", "checkpoint.pt")


def write(kind: str, workdir: Path, version: int) -> None:
    """Record ``version`` in the file ``kind`` of ``workdir`` through the project's writer."""
    if kind == "result.json":
        record.write_result(workdir, {"status": "completed", "epochs": version})
    elif kind == "manifest.json":
        manifest = record.Manifest.create(workdir, "stray", "local")
        manifest.resumes = version
        manifest.save()
    else:
        record.save_checkpoint({"epoch": version}, workdir / record.CHECKPOINT)


def read(kind: str, workdir: Path) -> int:
    """The version the file ``kind`` of ``workdir`` holds, through the project's reader."""
    if kind == "result.json":
        return record.read_result(workdir)["epochs"]
    if kind == "manifest.json":
        return record.Manifest.load(workdir).resumes
    return record.load_checkpoint(workdir / record.CHECKPOINT)["epoch"]


# Writes version 1, then version 2 stopping in os.replace(temp, file): SIGKILLed there
# ("kill"), or alive there until a line comes on stdin ("hold").
WRITER = """
import os, signal, sys
from pathlib import Path
from tests.faults.test_stray_temps import write

kind, workdir, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
write(kind, workdir, 1)
replace = os.replace

def stopping_replace(src, dst):
    if Path(dst).name == kind:  # the temp, written and synced, renamed over the file
        print(Path(src).name, flush=True)
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.readline()
    replace(src, dst)

os.replace = stopping_replace
write(kind, workdir, 2)
"""


def _writer(kind: str, workdir: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), kind, str(workdir), mode],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _temps(workdir: Path, kind: str) -> list[str]:
    return sorted(p.name for p in workdir.glob(f".{kind}.*"))


def _killed_mid_write(kind: str, workdir: Path) -> str:
    """Run a writer SIGKILLed between its temp's write and rename; the temp it left."""
    proc = _writer(kind, workdir, "kill")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -9, err
    temp = out.strip()
    assert _temps(workdir, kind) == [temp]  # the kill point: temp written, not renamed
    return temp


@pytest.mark.parametrize("kind", KINDS)
def test_next_write_removes_the_temp_of_a_writer_killed_mid_write(tmp_path, kind):
    _killed_mid_write(kind, tmp_path)
    assert read(kind, tmp_path) == 1  # nothing recorded before the kill is lost
    write(kind, tmp_path, 3)
    assert _temps(tmp_path, kind) == []
    assert read(kind, tmp_path) == 3


def test_resume_removes_the_temp_of_a_checkpoint_write_killed_mid_write(tmp_path, capsys):
    _killed_mid_write("checkpoint.pt", tmp_path)
    assert read("checkpoint.pt", tmp_path) == 1  # the previous checkpoint, kept
    assert "resuming from the previous checkpoint" in capsys.readouterr().err
    assert _temps(tmp_path, "checkpoint.pt") == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_temp_of_a_live_writer_is_never_removed(tmp_path, kind):
    proc = _writer(kind, tmp_path, "hold")
    try:
        temp = proc.stdout.readline().strip()
        assert temp, proc.stderr.read()
        write(kind, tmp_path, 3)  # another writer of the same file, meanwhile
        if kind == "checkpoint.pt":
            record.load_checkpoint(tmp_path / record.CHECKPOINT)  # and a resume
        assert (tmp_path / temp).exists()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.communicate()
    assert read(kind, tmp_path) == 2  # the held writer renamed last
    assert _temps(tmp_path, kind) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_stale_temps_of_the_file_are_removed(tmp_path):
    """Temps are ``.<file>.<host>.<pid>.<8 hex>.tmp``. One of this host whose writer is dead is
    stale; one of another host (no pid to ask) once it is unlocked and a minute old."""
    host, dead = socket.gethostname(), _dead_pid()
    stale = [f".result.json.{host}.{dead}.0123abcd.tmp", ".result.json.node-7.a.b.42.89abcdef.tmp"]
    kept = [
        ".result.json.other-node.43.00000000.tmp",  # another host's, a second old
        ".result.json.other-node.44.11111111.tmp",  # another host's, old, locked by its writer
        f".result.json.{host}.{os.getpid()}.22222222.tmp",  # a live writer's of this host
        f".manifest.json.{host}.{dead}.0123abcd.tmp",  # another file's
        f".result.json.{host}.{dead}.0123abcd.tmp.keep",  # not named as a temp
        f".result.json.{host}.{dead}.xyz.tmp",
        ".result.json.tmp",
        "result.json.bak",
    ]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    old = time.time() - 3600
    for name in (stale[1], kept[1]):
        os.utime(tmp_path / name, (old, old))
    with open(tmp_path / kept[1], "r+") as held:
        locker = subprocess.Popen(  # holds the lock as a writer on another host would
            [sys.executable, "-c", "import fcntl, time; fcntl.lockf(0, fcntl.LOCK_EX); "
             "print('locked', flush=True); time.sleep(300)"],
            stdin=held, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
    try:
        assert locker.stdout.readline().strip() == "locked"
        with pytest.raises(BlockingIOError), open(tmp_path / kept[1], "r+") as f:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        record.write_result(tmp_path, {"status": "completed", "epochs": 1})
        left = sorted(p.name for p in tmp_path.iterdir())
    finally:
        locker.kill()
        locker.wait()
    assert left == sorted([*kept, "result.json"])
