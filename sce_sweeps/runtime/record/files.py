"""The one atomic write and the one file lock, and JSON files written with them.

A file is written to a temp file beside it, synced, then renamed over the old one, so a reader
sees the old file or the new one, never half of one. A writer killed before the rename leaves
its temp behind; the next writer of that file (and a run's resume, for checkpoints) removes it
(:func:`remove_stale_temps`).

Locks are POSIX record locks (``fcntl.lockf``): NFS honours them across its clients (v3
through lockd, v4 natively), as do Lustre and GPFS mounted with locking on, and the kernel or
lock server drops them when their holder dies. They do not exclude the threads of one process,
and closing any descriptor of a locked file releases the process's lock on it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from sce_sweeps.runtime.procs import alive

HOST = socket.gethostname()
STALE_TEMP_AGE_S = 60.0  # an unlocked temp of another host's writer is stale once this old


_thread_locks: dict[str, threading.Lock] = {}  # lock file -> this process's turn at it


class RunFileError(Exception):
    """A run or sweep file that exists but cannot be used; the message names it."""


# --- the lock ----------------------------------------------------------------------------------


def try_lock(f: int | IO[Any]) -> bool:
    """Take the exclusive lock on the open (writable) file ``f`` unless another process holds
    it; return whether it was taken."""
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


@contextlib.contextmanager
def locked(path: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created if missing) for the block, waiting for it
    at most ``timeout`` seconds (None: as long as it takes). The threads of this process take
    turns first: they share its record lock, which any of them closing the file would drop.

    Raises:
        TimeoutError: the lock was not free within ``timeout`` seconds.
    """
    deadline = time.monotonic() + (timeout if timeout is not None else math.inf)
    turn = _thread_locks.setdefault(os.path.realpath(path), threading.Lock())
    if not turn.acquire(timeout=-1 if timeout is None else timeout):
        raise TimeoutError(f"{path} stayed locked for {timeout:.0f} s")
    try:
        with open(path, "a") as f:
            if timeout is None:
                fcntl.lockf(f, fcntl.LOCK_EX)
            while timeout is not None and not try_lock(f):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} stayed locked for {timeout:.0f} s")
                time.sleep(0.05 + 0.1 * random.random())
            try:
                yield
            finally:
                fcntl.lockf(f, fcntl.LOCK_UN)
    finally:
        turn.release()


# --- the atomic write --------------------------------------------------------------------------


def _temp_name(path: Path) -> re.Pattern[str]:
    """How a writer of ``path`` names its temp: ``.<name>.<host>.<pid>.<8 hex digits>.tmp``."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}\.tmp")


@contextlib.contextmanager
def atomic_write(path: Path, previous: Path | None = None, sync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` when the block ends: a temp file beside it,
    then synced (unless ``sync`` is False: a reader still never sees half a file, but a machine
    crash may leave an empty one) and renamed over it (after moving the file it replaces to
    ``previous``, if given). The temp is removed if the block raises; its writer holds its
    lock until the rename, which tells :func:`remove_stale_temps` that it is being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            with contextlib.suppress(OSError):  # a filesystem without locks: the pid tells
                try_lock(f)
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
            if previous is not None and path.exists():
                os.replace(path, previous)
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files that writers of ``path`` killed before their rename left beside it;
    return them. A temp is stale when no process holds its lock and, for one of this host, its
    writer's pid is dead, or, for another host's, it is :data:`STALE_TEMP_AGE_S` old. A live
    writer's temp and files not named as :func:`atomic_write` names temps are never touched."""
    pattern, prefix, removed = _temp_name(path), f".{path.name}.", []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = entry.name.startswith(prefix) and pattern.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            tmp = Path(entry.path)
            if _remove_if_stale(tmp, match["host"], int(match["pid"])):
                removed.append(tmp)
    return removed


def _remove_if_stale(tmp: Path, host: str, pid: int) -> bool:
    if host == HOST and alive(pid):
        return False  # writing it now (or its pid was taken since: kept until that ends)
    try:
        if host != HOST and time.time() - tmp.stat().st_mtime < STALE_TEMP_AGE_S:
            return False  # maybe created a moment ago, not locked yet
        fd = os.open(tmp, os.O_RDWR)  # a write lock needs write access
    except OSError:  # gone meanwhile, or not ours to open
        return False
    try:
        try:
            if not try_lock(fd):
                return False  # its writer is alive (e.g. on another host, or another pid space)
        except OSError:
            if host != HOST:
                return False  # no locks on this filesystem, no pid to ask: cannot tell
        tmp.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


# --- JSON --------------------------------------------------------------------------------------


def write_json_atomic(data: Any, path: str | Path, sync: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` so that a crash leaves the old file or the new one
    (``sync=False``: or, after a machine crash, maybe an empty one; see :func:`atomic_write`)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_write(Path(path), sync=sync) as f:
        f.write(text.encode())


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when there is no such file.

    Raises:
        RunFileError: the file exists but is not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RunFileError(f"{path}: corrupt {path.name} ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: corrupt {path.name} (not a JSON object)")
    return data
