"""A DataLoader whose worker processes outlive the stop signals of a job.

SLURM stops a job (``scontrol requeue``, a node set DOWN, preemption, a time limit) by
signalling EVERY process of the job: SIGTERM, and SIGUSR2 before a time limit. A DataLoader
worker dies of either by default, and the main process then fails with "DataLoader worker
... is killed by signal: Terminated" before it can save its state. The training loop handles
those signals itself (checkpoint at the next step boundary, then stop or requeue), so its
workers must ignore them: they exit with the loader, or with their parent (torch's watchdog),
and SIGKILL still ends them.

The workers are created with the signals blocked, so that none lands before they ignore
them; a signal that reaches the main process meanwhile is only delayed until they exist.
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
from collections.abc import Iterator
from functools import partial
from typing import Any

from torch.utils.data import DataLoader

#: The signals by which SLURM (and submitit) stop or requeue a job.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


@atexit.register  # after multiprocessing's own exit handler, so it runs before it
def _kill_workers_at_exit() -> None:
    """End the daemonic child processes still alive (DataLoader workers) with SIGKILL.

    At exit, multiprocessing ends daemonic children with SIGTERM and waits for them. Our
    workers ignore SIGTERM; the loader stops them itself, but one left behind by a run that
    failed mid-epoch (a damaged image, a NaN loss: its iterator never shut down) would keep
    the process waiting forever."""
    children = [c for c in multiprocessing.active_children() if c.daemon]
    if children:  # torch's SIGCHLD handler would report the killed workers as a failure
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()


def _init_worker(then: Any, worker_id: int) -> None:
    """The workers' ``worker_init_fn``: ignore :data:`STOP_SIGNALS`, then run ``then``."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # also drops one that is pending
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if then is not None:
        then(worker_id)


class StopSafeDataLoader(DataLoader):
    """A :class:`torch.utils.data.DataLoader` whose workers ignore SIGTERM and SIGUSR2 (before
    the caller's ``worker_init_fn``)."""

    def __init__(self, *args: Any, worker_init_fn: Any = None, **kwargs: Any) -> None:
        init = partial(_init_worker, worker_init_fn)  # picklable for spawned workers too
        super().__init__(*args, worker_init_fn=init, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            return super().__iter__()
        # Workers (forked here) inherit the blocked mask; the main thread's pending signal
        # is delivered as soon as it is unblocked again.
        before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
