"""SIGKILL a writer at random points: the loop the fault-injection tests share.

A fault is a pair of functions over a work dir: ``resume(workdir)`` reads back what is on
disk through the project's own readers and returns the last version recorded there (raising
if it cannot), ``write(workdir, version)`` records a new version through the project's own
writers. :func:`kill_loop` forks children one after the other; each resumes, reports the
version it found, then writes version after version, acknowledging each once its write has
returned, until the parent kills it with SIGKILL at a random moment. The next child's resume
is the check of that kill point: it must succeed (resumable) and find at least the last
acknowledged version (nothing recorded before the kill is lost).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import job_context


@dataclasses.dataclass
class Row:
    """One line of the report."""

    fault: str
    tried: int
    lost: int
    resumable: int
    notes: str = ""


TABLE: list[Row] = []


def _child(
    resume: Callable[[Path], int],
    write: Callable[[Path, int], None],
    workdir: Path,
    final: bool,
) -> None:
    try:
        version = resume(workdir)
    except BaseException as e:  # noqa: BLE001 (a failure to resume is what is measured)
        with (workdir / "resume_errors.txt").open("a") as f:
            f.write(f"{type(e).__name__}: {e}\n")
        os._exit(3)
    with (workdir / "found.txt").open("a") as f:
        f.write(f"{version}\n")
    if final:
        os._exit(0)
    fd = os.open(workdir / "ack.txt", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    while True:
        version += 1
        write(workdir, version)
        os.write(fd, f"{version}\n".encode())


def _lines(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def kill_loop(
    fault: str,
    workdir: Path,
    resume: Callable[[Path], int],
    write: Callable[[Path, int], None],
    points: int = 20,
    delay_s: tuple[float, float] = (0.02, 0.3),
    seed: int = 0,
    notes: Callable[[Path], str] | None = None,
    resume_timeout_s: float = 120.0,
) -> Row:
    """Kill a writer at ``points`` random moments of its writes, resume after each; record a
    row of the report and return it."""
    start = time.monotonic()
    rng = random.Random(seed)
    ctx = job_context()
    lost = resumable = 0
    for i in range(points + 1):
        acked = (_lines(workdir / "ack.txt") or [0])[-1]
        found_before = len(_lines(workdir / "found.txt"))
        child = ctx.Process(target=_child, args=(resume, write, workdir, i == points), daemon=True)
        child.start()
        deadline = time.monotonic() + resume_timeout_s
        while len(_lines(workdir / "found.txt")) == found_before and child.is_alive():
            if time.monotonic() > deadline:
                os.kill(child.pid, signal.SIGKILL)
            time.sleep(0.005)
        found = _lines(workdir / "found.txt")
        if len(found) > found_before:
            if i > 0:  # the check of kill point i - 1
                resumable += 1
                lost += found[-1] < acked
        elif i > 0:
            lost += 1  # cannot tell: count it lost
        if i == points:
            child.join(timeout=30)
            break
        time.sleep(rng.uniform(*delay_s))  # the kill point, somewhere in the writes
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
        child.join()
    row = Row(fault, points, lost, resumable, notes(workdir) if notes else "")
    row.notes = f"{time.monotonic() - start:.0f} s; {row.notes}".rstrip("; ")
    TABLE.append(row)
    errors = workdir / "resume_errors.txt"
    if errors.exists():
        row.notes += f" resume errors: {errors.read_text().splitlines()[:2]}"
    print(f"{fault}: {points} kill points, {lost} lost, {resumable} resumable; {row.notes}")
    return row
