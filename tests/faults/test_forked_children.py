"""The fault suite forks its writers from the test process and SIGKILLs them. A forked child
shares the parent's multiprocessing locks, and tqdm's write lock is one: a child killed inside
a progress bar's lock would leave it held, and the test process's next progress bar (any
in-process training run) would wait for it for good."""

import multiprocessing
import os
import signal

import pytest
from tqdm import tqdm


def _die_holding_the_progress_lock() -> None:
    tqdm.get_lock().acquire()
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.e2e
def test_a_child_killed_inside_a_progress_bar_leaves_the_parents_lock_free():
    lock = tqdm.get_lock()  # made before the fork, as after any in-process training run
    child = multiprocessing.get_context("fork").Process(target=_die_holding_the_progress_lock)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    acquired = [part.acquire(timeout=5) for part in lock.locks]
    for part, held in zip(lock.locks, acquired):
        if held:
            part.release()
    assert all(acquired), "a killed child left the progress bars' lock held"
