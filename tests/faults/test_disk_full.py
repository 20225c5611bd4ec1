"""The disk fills up under a training run: the run fails with the disk-full reason and its
process exits, whatever the tracker.

The run dir (and the Aim repos) live on a small tmpfs of the test's own. Once the run has saved
its first checkpoint, the job is paused (SIGSTOP), the filesystem is filled to the last byte
and the job goes on (SIGCONT): its next checkpoint cannot be written.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import start_cli, tiny

pytestmark = pytest.mark.slow

EXIT_WAIT_S = 120  # far above the seconds a failed run needs to exit: only a hang reaches it


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "64m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where it cannot be mounted)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk: Path) -> None:
    """Write zeros into ``disk`` until no byte is left."""
    chunk = b"\0" * 2**16
    with contextlib.suppress(OSError), open(disk / "filler", "wb", buffering=0) as f:
        while True:
            f.write(chunk)
    with contextlib.suppress(OSError), open(disk / "filler2", "wb", buffering=0) as f:
        while True:  # the last partial chunk
            f.write(b"\0" * 512)


@pytest.mark.parametrize("tracker", ["aim", "none"])
def test_disk_full_during_training_fails_the_run_and_the_process_exits(
    tmp_path: Path, tracker: str
) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        run_dir = disk / "run"
        args = [
            *tiny(**{"trainer.epochs": 8, "trainer.checkpoint_every": 1}),
            f"tracker={tracker}",
            f"hydra.run.dir={run_dir}",
        ]
        if tracker == "aim":
            args += [f"tracker.repo={disk / 'aim'}", "tracker.sync_interval_s=0"]
        proc = start_cli(*args)
        try:
            while not (run_dir / "checkpoint.pt").exists():  # the first epoch is saved
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.02)
            proc.send_signal(signal.SIGSTOP)
            _fill(disk)
            proc.send_signal(signal.SIGCONT)
            try:
                out, err = proc.communicate(timeout=EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the job was still alive {EXIT_WAIT_S} s after the disk filled up")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 1, err[-3000:]
        (failed,) = [line for line in err.splitlines() if "sce_sweeps: run failed: " in line]
        assert "no space left on device while writing checkpoint.pt" in failed, err[-3000:]
        assert "Error executing job" not in err, err[-3000:]  # the app did not crash
        warnings = [line for line in (out + err).splitlines() if "][WARNING] - tracking:" in line]
        assert len(warnings) == (tracker == "aim"), warnings  # tracking off: said once
