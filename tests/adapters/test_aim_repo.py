"""The tracker reads Aim's on-disk layout directly: on a real repo, it must tell the runs and
their locks as Aim's own ``Repo`` and ``LockManager`` (the public path the switch goes back to)."""

from __future__ import annotations

import pytest

from sce_sweeps.runtime.adapters import aim_repo

pytestmark = pytest.mark.e2e  # Aim makes a repo's database with alembic, in a Python of its own


@pytest.fixture
def repo(tmp_path):
    from aim import Repo, Run

    from sce_sweeps.runtime.tracking import create_repo

    create_repo(tmp_path)
    closed = Run(repo=str(tmp_path), system_tracking_interval=None, capture_terminal_logs=False)
    closed.track(1.0, name="loss", step=0)
    closed.close()
    live = Run(repo=str(tmp_path), system_tracking_interval=None, capture_terminal_logs=False)
    yield tmp_path, closed.hash, live.hash, Repo
    live.close()


def test_the_layout_read_is_what_aim_tells(repo, monkeypatch):
    path, closed, live, Repo = repo
    private = (aim_repo.run_hashes(path), [aim_repo.run_locked(path, h) for h in (closed, live)])
    monkeypatch.setenv("SCE_SWEEPS_PUBLIC_APIS", "aim")
    public = (aim_repo.run_hashes(path), [aim_repo.run_locked(path, h) for h in (closed, live)])
    assert private == public == (sorted([closed, live]), [False, True])
    assert not aim_repo.half_made(path)
    assert aim_repo.run_hashes(path / "nowhere") == []


def test_closing_a_repo_and_marking_a_run_live(repo, monkeypatch):
    path, closed, _, Repo = repo
    opened = Repo.from_path(str(path))
    aim_repo.mark_live(opened, closed)
    aim_repo.close_repo(opened)
    from aim import Run

    assert Run(closed, repo=str(path), read_only=True).end_time is None
    monkeypatch.setenv("SCE_SWEEPS_PUBLIC_APIS", "all")
    assert aim_repo.run_file_lock(object()) is None
    assert aim_repo.take_exit_hook() is None  # left to the interpreter's exit
