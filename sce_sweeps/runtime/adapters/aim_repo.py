"""Aim 3.29's on-disk layout and database internals. The public path reads runs and locks
through Aim's ``Repo`` and ``LockManager`` (slow, locking) and leaves the rest undone.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sce_sweeps.runtime.adapters import private


def run_hashes(repo: Path) -> list[str]:
    """The runs of the repo at ``repo`` (the folder holding ``.aim``), sorted."""
    if private("aim"):
        chunks = repo / ".aim" / "meta" / "chunks"
        return sorted(p.name for p in chunks.iterdir()) if chunks.is_dir() else []
    from aim import Repo

    if not Repo.exists(str(repo)):
        return []
    aim_repo = Repo.from_path(str(repo), read_only=True)
    try:
        return sorted(aim_repo.list_all_runs())
    finally:
        aim_repo.close()


def run_locked(repo: Path, run_hash: str) -> bool:
    """Whether Aim holds a lock on the run (it trains, or was killed while it did)."""
    if private("aim"):
        return (repo / ".aim" / "locks" / f"{run_hash}.softlock").exists()
    from aim.sdk.lock_manager import LockManager

    return LockManager(str(repo / ".aim")).get_run_lock_info(run_hash).locked


def half_made(repo: Path) -> bool:
    """An ``.aim`` that Aim had not finished creating: no ``VERSION`` (its last step), no run."""
    return not (repo / ".aim" / "VERSION").exists() and not run_hashes(repo)


def close_repo(repo: Any) -> None:
    """Close an ``aim.Repo`` with its database connections (else one per merge piles up)."""
    if private("aim"):
        repo.structured_db.session_cls.remove()
        repo.structured_db.engine.dispose()
    repo.close()


def mark_live(repo: Any, run_hash: str) -> None:
    """Clear the end time that a copy of a closed run carried into ``repo``: it still trains."""
    if private("aim"):
        meta = repo.request_tree("meta", run_hash, read_only=False).subtree("meta")
        meta["chunks", run_hash, "end_time"] = None


def run_file_lock(run: Any) -> Any:
    """The file lock of an open ``aim.Run``, which only the thread that took it can release."""
    if not private("aim"):
        return None
    return getattr(getattr(run, "_lock", None), "_sf_lock", None)


def take_exit_hook() -> Callable[[], object] | None:
    """Aim's exit hook, unregistered, to run under a time limit; None on the public path."""
    if not private("aim"):
        return None
    from aim.ext.cleanup import AutoClean

    atexit.unregister(AutoClean.cleanup)
    return AutoClean._cleanup


def index_repo(repo: Path) -> None:
    """Index every run of a repo for Aim's SDK queries, as ``aim up`` does (not while it runs)."""
    from aim import Repo
    from aim.sdk.index_manager import RepoIndexManager

    aim_repo = Repo.from_path(str(repo))
    manager = RepoIndexManager.get_index_manager(aim_repo)
    for run_hash in aim_repo.list_all_runs():
        manager.index(run_hash)
