"""A sweep's progress as one line (docs/sweeps.md): redrawn in place on a terminal; in a log, a
new line on a change, else every ``interval_s``."""

from __future__ import annotations

import math
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sce_sweeps.runtime.record import FINAL, FINISHED, RunState, done_share, stall

BAR_WIDTH = 12
INTERVAL_S = 60.0  # seconds between two lines in a log when nothing changes
_LOCK = threading.Lock()


def _seconds(stamp: str | None) -> float | None:
    try:  # a manifest's time stamp (record.now())
        return datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def format_duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def best(jobs: Iterable[Any], mode: str = "max") -> tuple[float, int] | None:
    """(objective, job number) of the completed job with the best objective (``mode``: max/min)."""
    done = [
        (job.objective, job.num)
        for job in jobs
        if job.state == RunState.COMPLETED
        and job.objective is not None
        and math.isfinite(job.objective)
    ]
    sign = -1 if mode == "min" else 1
    return max(done, key=lambda d: (sign * d[0], -d[1])) if done else None


def time_left(
    jobs: list[Any], now: float, fractions: dict[int, float] | None = None
) -> float | None:
    """Seconds until every job is over (None while nothing tells): the median duration of the
    finished jobs, else of the running ones projected from ``fractions`` (job number -> share of
    its epochs done), for each job to run, spread over the jobs running now."""
    fractions = fractions or {}
    ok: list[float] = []
    ended: list[float] = []
    for job in jobs:
        start, end = _seconds(job.submitted_at), _seconds(job.finished_at)
        if start is not None and end is not None and job.state in FINAL:
            ended.append(end - start)
            if job.state in FINISHED:
                ok.append(end - start)
    running = {j.num: _seconds(j.submitted_at) for j in jobs if j.state == RunState.RUNNING}
    projected = {  # a job that has done a share f of its epochs at age a lasts a / f
        num: (now - start) / fractions[num]
        for num, start in running.items()
        if start is not None and fractions.get(num)
    }
    typical = ok or ended or list(projected.values())
    if not typical:
        return None
    duration = statistics.median(typical)
    left = duration * sum(job.state == RunState.PENDING for job in jobs)
    for num, start in running.items():
        if num in projected:
            left += projected[num] * (1 - fractions[num])
        else:
            left += duration if start is None else max(0.0, duration - (now - start))
    return left / max(1, len(running))


def progress_line(
    name: str,
    jobs: list[Any],
    elapsed_s: float | None = None,
    now: float | None = None,
    fractions: dict[int, float] | None = None,
    stalled: dict[int, float] | None = None,
    mode: str = "max",
) -> str:
    """The one-line summary of a sweep's jobs; ``stalled``: job number -> seconds stalled."""
    now = time.time() if now is None else now
    n = Counter(RunState(job.state) for job in jobs)
    total = len(jobs)
    done = sum(n[state] for state in FINAL)
    filled = round(BAR_WIDTH * done / total) if total else 0
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    parts = [f"{n[RunState.COMPLETED]} completed"]
    if n[RunState.PRUNED]:
        parts.append(f"{n[RunState.PRUNED]} pruned")
    parts.append(f"{n[RunState.FAILED]} failed")
    stalled = stalled or {}
    flag = ", ".join(f"job #{num} for {format_duration(s)}" for num, s in sorted(stalled.items()))
    flag = f" ({len(stalled)} stalled: {flag})" if stalled else ""
    line = (
        f"{name} [{bar}] {done}/{total} done ({', '.join(parts)}), "
        f"{n[RunState.RUNNING]} running{flag}, {n[RunState.PENDING]} pending"
    )
    for state in (RunState.NOT_SUBMITTED, RunState.INTERRUPTED):
        if n[state]:
            line += f", {n[state]} {state}"
    top = best(jobs, mode)
    line += f"; best {top[0]:.4g} (job #{top[1]})" if top else "; best -"
    if done < total and stalled:
        line += "; time left: - (stalled)"
    elif done < total:
        left = time_left(jobs, now, fractions)
        line += f"; ~{format_duration(left)} left" if left is not None else "; time left: -"
    if elapsed_s is not None:
        line += f", {format_duration(elapsed_s)} elapsed"
    return line


class ProgressPrinter:
    """Prints a sweep's :func:`progress_line` to ``stream`` (see the module docstring)."""

    def __init__(
        self, stream: IO[str] | None = None, interval_s: float = INTERVAL_S, tty: bool | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last: tuple[Any, ...] | None = None  # the counts last printed
        self._last_at = -math.inf
        self._drawn = False  # a line is on the terminal, without its newline

    def update(
        self,
        name: str,
        jobs: list[Any],
        force: bool = False,
        sweep_dir: Path | None = None,
        stall_after: float | None = None,
        mode: str = "max",
    ) -> None:
        """Show the line if due (always on a terminal); with ``sweep_dir``, the running jobs'
        heartbeats refine the time left and tell which are stalled (limit ``stall_after``)."""
        running = [j for j in jobs if j.state == RunState.RUNNING] if sweep_dir is not None else []
        stalled = {}
        for job in running:
            found = stall(sweep_dir / job.run_dir, stall_after)
            if found:
                stalled[job.num] = found.age_s
        key = (*sorted(Counter(str(job.state) for job in jobs).items()), *sorted(stalled))
        clock = time.monotonic()
        due = force or key != self._last or clock - self._last_at >= self.interval_s
        if not (self.tty or due):
            return
        shares = {job.num: done_share(sweep_dir / job.run_dir) for job in running}
        fractions = {num: share for num, share in shares.items() if share is not None}
        line = progress_line(name, jobs, clock - self.started, None, fractions, stalled, mode)
        if self.tty:
            self.stream.write(f"\r\033[K{line}")
            self._drawn = True
        else:
            self.stream.write(f"sce_sweeps: {line}\n")
        self.stream.flush()
        self._last, self._last_at = key, clock

    def clear(self, end: str = "\r\033[K") -> None:
        """Erase the line from the terminal for another message (``end="\\n"``: leave it)."""
        if self._drawn:
            self.stream.write(end)
            self.stream.flush()
            self._drawn = False

    def finish(self, name: str, jobs: list[Any], **where: Any) -> None:
        """Show the final line and leave it there (``where``: as :meth:`update` takes it)."""
        self.update(name, jobs, force=True, **where)
        self.clear(end="\n")


_printers: dict[str, ProgressPrinter] = {}  # sweep dir -> its line


def show(manifest: Any, final: bool = False) -> None:
    """Show the progress of ``manifest``'s sweep on stderr; ``final`` leaves the line in place."""
    with _LOCK:
        key = str(manifest.sweep_dir)
        printer = _printers[key] = _printers.get(key) or ProgressPrinter()
        (printer.finish if final else printer.update)(
            manifest.sweep_name,
            manifest.jobs,
            sweep_dir=manifest.sweep_dir,
            stall_after=manifest.stall_after,
            mode=manifest.mode,
        )


def clear() -> None:
    """Erase any progress line from the terminal before another message is printed."""
    with _LOCK:
        for printer in _printers.values():
            printer.clear()
