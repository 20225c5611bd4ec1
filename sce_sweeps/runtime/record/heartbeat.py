"""``heartbeat.json``: a run's last step and its time, telling a stalled job from a slow one."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sce_sweeps.runtime.record.files import HOST, RunFileError, read_json, write_json_atomic
from sce_sweeps.runtime.record.layout import HEARTBEAT, now

STALLED = "stalled"  # how the reason of a job ended for lack of progress begins
BEAT_EVERY_S = 2.0  # a run rewrites its heartbeat at most this often
STALL_FLOOR_S = 300.0  # the default stall limit is never below this
STALL_GAPS = 5.0  # ... nor below this many times the longest interval between two beats
_beats: dict[str, dict[str, float]] = {}  # run dir -> this process's beat bookkeeping


def beat(run_dir: str | Path, step: int, total: int | None = None) -> None:
    """Record, at most every :data:`BEAT_EVERY_S` seconds, that the run is at ``step`` (of
    ``total``), with the time, the process and the longest interval between two calls so far."""
    key, clock = str(run_dir), time.monotonic()
    book = _beats.setdefault(key, {"called": clock, "written": -math.inf, "longest": 0.0})
    book["longest"] = max(book["longest"], clock - book["called"])
    book["called"] = clock
    if clock - book["written"] < BEAT_EVERY_S:
        return
    book["written"] = clock
    data = {"step": step, "time": time.time(), "at": now(), "pid": os.getpid(), "host": HOST}
    data["longest_gap_s"] = round(book["longest"], 3)
    if total:
        data["total"] = total
    # no fsync: an unreadable heartbeat counts as none; one that cannot be written (a full
    # disk) never fails the run: its next checkpoint says what is wrong
    with contextlib.suppress(OSError):
        write_json_atomic(data, Path(run_dir) / HEARTBEAT, sync=False)


def clear_heartbeat(run_dir: str | Path) -> None:
    """Remove the heartbeat of an earlier attempt: a run is watched from its own first beat."""
    _beats.pop(str(run_dir), None)
    with contextlib.suppress(OSError):
        (Path(run_dir) / HEARTBEAT).unlink()


def read_heartbeat(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's last heartbeat; None when it has none (or an unreadable one)."""
    try:
        data = read_json(Path(run_dir) / HEARTBEAT)
    except RunFileError:
        return None
    return data if data and isinstance(data.get("time"), (int, float)) else None


def done_share(run_dir: str | Path) -> float | None:
    """The share of its steps the run had done at its last heartbeat, if it told its total."""
    heartbeat = read_heartbeat(run_dir)
    if not heartbeat or not heartbeat.get("total"):
        return None
    return min(1.0, (int(heartbeat["step"]) + 1) / int(heartbeat["total"]))


def stall_limit(heartbeat: dict[str, Any], stall_after: float | None = None) -> float:
    """Seconds without a beat after which a run is stalled: ``stall_after`` if given, else
    :data:`STALL_GAPS` times its longest interval between beats, at least :data:`STALL_FLOOR_S`."""
    if stall_after is not None:
        return float(stall_after)
    return max(STALL_FLOOR_S, STALL_GAPS * float(heartbeat.get("longest_gap_s") or 0.0))


@dataclass
class Stall:
    """A running job whose heartbeat is older than its limit."""

    age_s: float  # since its last beat
    limit_s: float
    step: int | None  # its last step
    pid: int | None
    host: str | None

    def __str__(self) -> str:
        return (
            f"{STALLED}: no progress for {self.age_s:.1f} s (limit {self.limit_s:g} s), "
            f"last step {self.step}"
        )


def stall(
    run_dir: str | Path, stall_after: float | None = None, at: float | None = None
) -> Stall | None:
    """The stall of the run in ``run_dir`` as of ``at`` (default now); None if it never beat."""
    heartbeat = read_heartbeat(run_dir)
    if heartbeat is None:
        return None
    age = (time.time() if at is None else at) - float(heartbeat["time"])
    limit = stall_limit(heartbeat, stall_after)
    if age <= limit:
        return None
    return Stall(age, limit, heartbeat.get("step"), heartbeat.get("pid"), heartbeat.get("host"))
