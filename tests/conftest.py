"""Fixtures shared across the test tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest

from tests.support import failing_point_sweep, slurm_cluster, tiny_run  # noqa: F401 (fixtures)


def _private_progress_lock() -> None:
    """A child forked from the test process gets a progress-bar lock of its own: tqdm's is a
    multiprocessing lock shared with the parent, and the fault suite SIGKILLs forked children,
    one of which could die holding it (tests/faults/test_forked_children.py)."""
    if "tqdm" in sys.modules:
        sys.modules["tqdm"].tqdm.set_lock(threading.RLock())


os.register_at_fork(after_in_child=_private_progress_lock)

# The fast set (``make test-fast``): every test not marked slow, slurm or e2e. It runs in this
# process, with a tight time limit; starting a process (a subprocess, a fork, DataLoader workers)
# fails it: such a test belongs to the end-to-end set.
SPAWNING_MARKS = ("slow", "slurm", "e2e")
FAST_TIMEOUT_S = 60
# the session fixtures that run the CLI: only end-to-end tests read them
PROCESS_FIXTURES = {
    "tiny_run",
    "failing_point_sweep",
    "tiny_sweep",
    "partial_sweep",
    "cifar_sweep",
    "tracked_sweep",
    "slurm_cluster",
}


def _fast(item: pytest.Item) -> bool:
    return not any(item.get_closest_marker(mark) for mark in SPAWNING_MARKS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _fast(item) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TIMEOUT_S))


def _refuse(what: str) -> AssertionError:
    return AssertionError(
        f"a fast test starts no interpreter ({what}): make it in-process, or mark it e2e"
    )


class _NoInterpreter(subprocess.Popen):
    """subprocess.Popen that refuses to start Python (other programs, git or squeue, may run)."""

    def __init__(self, args, *rest, **kwargs) -> None:  # noqa: ANN001 (Popen's signature)
        argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        prog = os.fsdecode(argv[0]).split()[0] if argv else ""
        if prog == sys.executable or re.fullmatch(r"python[\d.]*", os.path.basename(prog)):
            raise _refuse(" ".join(map(os.fsdecode, argv))[:200])
        super().__init__(args, *rest, **kwargs)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """In the fast set, fail a test that starts Python, from its fixtures (whatever their scope)
    or its body: a subprocess, a fork (multiprocessing, DataLoader workers)."""
    if not _fast(item):
        return (yield)

    def no_fork(*args: object, **kwargs: object) -> None:
        raise _refuse("os.fork")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", _NoInterpreter)
        for name in ("fork", "forkpty"):
            patch.setattr(os, name, no_fork)
        return (yield)


@pytest.fixture(autouse=True)
def _no_cli_output_in_fast_tests(request: pytest.FixtureRequest) -> None:
    """A session fixture that ran the CLI, made by an earlier end-to-end test, is theirs too."""
    if _fast(request.node):
        assert not PROCESS_FIXTURES & set(request.fixturenames), "a fast test reads a CLI's output"
