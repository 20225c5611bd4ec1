"""The one atomic write and the one file lock (POSIX ``lockf``: honoured across NFS, Lustre and
GPFS clients, dropped when the holder dies, but shared by a process's threads)."""

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


def try_lock(f: int | IO[Any]) -> bool:
    """Whether the exclusive lock on the open (writable) file ``f`` was free, and now taken."""
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


@contextlib.contextmanager
def locked(path: str | Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the lock on ``path`` for the block, waiting ``timeout`` s at most (None: for ever). The
    threads of this process take turns first: one closing the file would drop their lock."""
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


@contextlib.contextmanager
def atomic_write(path: Path, previous: Path | None = None, sync: bool = True) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``path`` that, synced (unless not ``sync``: a machine crash may
    leave an empty file) and renamed, becomes ``path`` when the block ends, the file it replaces
    moved to ``previous`` if given. Its lock tells :func:`remove_stale_temps` it is in use."""
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


def remove_stale_temps(path: Path) -> None:
    """Remove the temps of ``path`` that killed writers left: unlocked, and of a dead pid (this
    host) or :data:`STALE_TEMP_AGE_S` old (another host)."""
    pattern = re.compile(
        rf"\.{re.escape(path.name)}\.(?P<host>.+)\.(?P<pid>\d+)\.[0-9a-f]{{8}}\.tmp"
    )
    with contextlib.suppress(FileNotFoundError):
        for entry in list(os.scandir(path.parent)):
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                _remove_if_stale(Path(entry.path), match["host"], int(match["pid"]))


def _remove_if_stale(tmp: Path, host: str, pid: int) -> None:
    if host == HOST and alive(pid):
        return  # writing it now (or its pid was taken since: kept until that ends)
    try:
        if host != HOST and time.time() - tmp.stat().st_mtime < STALE_TEMP_AGE_S:
            return  # maybe created a moment ago, not locked yet
        fd = os.open(tmp, os.O_RDWR)  # a write lock needs write access
    except OSError:  # gone meanwhile, or not ours to open
        return
    try:
        try:
            if not try_lock(fd):
                return  # its writer is alive (e.g. on another host, or another pid space)
        except OSError:
            if host != HOST:
                return  # no locks on this filesystem, no pid to ask: cannot tell
        tmp.unlink(missing_ok=True)
    finally:
        os.close(fd)


def write_json_atomic(data: Any, path: str | Path, sync: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` with :func:`atomic_write`."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
    with atomic_write(Path(path), sync=sync) as f:
        f.write(text.encode())


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, a RunFileError when it is corrupt."""
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
