"""Pytest fixture for the real one-node SLURM test cluster (scripts/slurm_cluster.sh).

Use from tests/conftest.py with::

    from tests.slurm_fixtures import slurm_cluster  # noqa: F401

and mark the tests that need it with ``@pytest.mark.slurm``. The fixture is session-scoped:
it starts the cluster once (a no-op when ``sinfo`` already shows a usable node) and leaves it
running afterwards, since other test sessions and users share it. If the cluster cannot be
started the requesting tests FAIL (they are never skipped): a broken SLURM path is a bug.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SLURM_SCRIPT = REPO_ROOT / "scripts" / "slurm_cluster.sh"
NODE = "localhost"
PARTITION = "debug"
START_TIMEOUT_S = 600  # covers a first-time apt-get install; a start alone takes seconds


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running cluster."""

    partition: str
    node: str
    cpus: int
    real_memory_mb: int
    script: Path


def _port_open(port: int) -> bool:
    """Cheap liveness probe: sinfo/sacct retry for ~10 s against a dead daemon."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _node_info() -> tuple[str, int, int] | None:
    """(state, cpus, memory MB) of the test node, or None when SLURM does not answer."""
    if shutil.which("sinfo") is None or not _port_open(6817):
        return None
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-n", NODE, "-p", PARTITION, "-o", "%T %c %m"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) < 3:
        return None
    try:
        return fields[0], int(fields[1]), int(fields[2].rstrip("+"))
    except ValueError:
        return None


def _usable(info: tuple[str, int, int] | None) -> bool:
    return info is not None and info[0] in {"idle", "mixed", "allocated", "completing"}


def _accounting_ok() -> bool:
    if not _port_open(6819):
        return False
    out = subprocess.run(
        ["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=20, check=False
    )
    return out.returncode == 0


def ensure_slurm_cluster() -> SlurmCluster:
    """Start the test cluster unless it is already healthy; pytest.fail if it cannot start."""
    info = _node_info()
    if not (_usable(info) and _accounting_ok()):
        if not SLURM_SCRIPT.is_file():
            pytest.fail(f"SLURM test cluster script missing: {SLURM_SCRIPT}", pytrace=False)
        try:
            proc = subprocess.run(
                ["bash", str(SLURM_SCRIPT), "start"],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"`bash {SLURM_SCRIPT} start` timed out after {START_TIMEOUT_S}s:\n{exc}",
                pytrace=False,
            )
        if proc.returncode != 0:
            pytest.fail(
                f"`bash {SLURM_SCRIPT} start` failed (rc={proc.returncode}):\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
                pytrace=False,
            )
        info = _node_info()
        if not _usable(info):
            pytest.fail(f"SLURM node {NODE!r} not usable after start: {info}", pytrace=False)
    assert info is not None
    return SlurmCluster(
        partition=PARTITION, node=NODE, cpus=info[1], real_memory_mb=info[2], script=SLURM_SCRIPT
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running one-node SLURM cluster (started on demand, left running)."""
    return ensure_slurm_cluster()


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker when this module is loaded as a plugin (``-p tests.slurm_fixtures``)."""
    config.addinivalue_line(
        "markers", "slurm: needs the local one-node SLURM cluster (scripts/slurm_cluster.sh)"
    )
