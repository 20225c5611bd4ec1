"""The Optuna sweeper on a real database server (MariaDB, scripts/optuna_db.sh) instead of the
journal: 8 trials at once with 2 jobs killed and the server stopped and started under them, a
search with pruning killed mid-way and resumed, and processes opening a fresh database at
once. A minimal Hydra app that knows nothing of sce_sweeps is the trial: it opens the trial
reporter, sleeps through its epochs and reports each one."""

from __future__ import annotations

import contextlib
import csv
import functools
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.sce_sweeps_optuna._impl import counted_trials
from sce_sweeps.runtime.trial import HEARTBEAT_ATTR, RETRY_OF_ATTR, open_storage
from tests.support import ROOT, START_TIMEOUT_S, server_script, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.database]

# --- the MariaDB server (scripts/optuna_db.sh) -----------------------------------------------
# Started once per session (a no-op when it answers) and left running. When it cannot start,
# the tests FAIL: never skipped.

DB_SCRIPT = ROOT / "scripts" / "optuna_db.sh"


def _script(*args: str, timeout: float = 120) -> str:
    return server_script(DB_SCRIPT, *args, timeout=timeout)


class OptunaDatabase:
    """The running server: fresh databases on it, and a stop and start of this server alone."""

    def create(self, name: str) -> str:
        """Database ``name`` (``optuna...``), empty; its SQLAlchemy URL."""
        _script("drop", name)
        return _script("url", name)

    def drop(self, name: str) -> None:
        _script("drop", name)

    def stop(self) -> None:
        _script("stop")

    def start(self) -> None:
        _script("start", timeout=START_TIMEOUT_S)


@pytest.fixture(scope="session")
def optuna_db() -> OptunaDatabase:
    """The running Optuna database server (started on demand, left running)."""
    server = OptunaDatabase()
    server.start()
    return server


@pytest.fixture
def optuna_db_url(optuna_db: OptunaDatabase, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database of this test's own (its name, then a random suffix), dropped after."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name)[:30]
    name = f"optuna_{stem}_{uuid.uuid4().hex[:8]}"
    yield optuna_db.create(name)
    optuna_db.start()  # a test that stopped the server leaves it running again
    optuna_db.drop(name)


# --- the trial: a minimal Hydra app ------------------------------------------------------------

# Each epoch sleeps epoch_s and reports (x - 0.3)^2 + number + 1/epoch: a later trial is worse
# than the earlier ones at every epoch, so the median pruner prunes it once two have completed.
APP = """
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from sce_sweeps.runtime.trial import TrialReporter


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    reporter = TrialReporter.open(run_dir)
    (run_dir / "pid").write_text(str(os.getpid()))
    status, value = "completed", float("nan")
    for epoch in range(1, cfg.epochs + 1):
        time.sleep(cfg.epoch_s)
        value = (float(cfg.x) - 0.3) ** 2 + reporter.number + 1.0 / epoch
        (run_dir / "epoch").write_text(str(epoch))
        if reporter.on_epoch_end(epoch, {"objective": value}, last=epoch == cfg.epochs):
            status = reporter.stop_status
            break
    reporter.finish(status, {"objective": value})
    return value


if __name__ == "__main__":
    main()
"""


def sweeper_cmd(tmp_path: Path, url: str, n_trials: int, n_jobs: int, *extra: str) -> list[str]:
    (tmp_path / "app.py").write_text(APP)
    return [
        sys.executable, "app.py", "-m",
        "hydra/sweeper=sce_optuna", "hydra/launcher=sce_local",
        f"hydra.launcher.max_parallel={n_jobs}", "hydra.launcher.poll_s=0.2",
        "+x=interval(0,1)",
        f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.n_jobs={n_jobs}",
        "hydra.sweeper.seed=0", f"hydra.sweeper.storage='{url}'", "hydra.sweeper.study_name=db",
        "hydra.sweeper.heartbeat_interval=0.5",
        f"hydra.sweep.dir={tmp_path / 'search'}",
        *extra,
    ]  # fmt: skip


@functools.cache
def _storage(url: str) -> optuna.storages.BaseStorage:
    return open_storage(url)


def load_trials(url: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name="db", storage=_storage(url)).get_trials()


def _start(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group: the sweeper and its local jobs
    )


def _trials(url: str) -> dict[int, FrozenTrial]:
    """The study's trials by number; none before the sweeper created the study."""
    try:
        return {t.number: t for t in load_trials(url)}
    except KeyError:
        return {}


def _training(url: str, numbers: set[int]) -> bool:
    """Whether every trial in ``numbers`` is RUNNING with a heartbeat (its job is training)."""
    trials = _trials(url)
    return all(
        n in trials
        and trials[n].state == TrialState.RUNNING
        and HEARTBEAT_ATTR in trials[n].system_attrs
        for n in numbers
    )


def test_eight_trials_two_killed_and_a_server_restart(tmp_path, optuna_db_url, optuna_db):
    """8 trials at once on the database URL; the server stopped, and 2 of the jobs SIGKILLed
    while it is down; it is started again once the sweeper, told of a death, waits for it.
    The jobs and the sweeper ride the outage out (their calls to the storage are repeated),
    the killed trials are FAIL and retried with the same parameters, every trial is
    accounted for and every epoch reported."""
    url, epochs = optuna_db_url, 8
    cmd = sweeper_cmd(
        tmp_path, url, 8, 8, f"+epochs={epochs}", "+epoch_s=1.0", "hydra.sweeper.pruner=none"
    )
    log = tmp_path / "sweeper.log"
    proc = _start(cmd, tmp_path, log)
    sweep_dir = tmp_path / "search"
    killed = {1, 5}
    survivors = set(range(8)) - killed
    retried = ("set_trial_system_attr", "set_trial_intermediate_value")  # a beat, a report

    def outage_felt() -> bool:
        """The sweeper (told of a death) and each survivor (a beat, a report) failed to reach
        the server and try again."""
        if "failed (OperationalError" not in log.read_text():
            return False
        logs = [(sweep_dir / str(n) / "app.log").read_text() for n in survivors]
        return all(f"storage: {call} failed" in text for text in logs for call in retried)

    try:
        wait_until(lambda: _training(url, set(range(8))), 120, "8 trials to train", proc, log)
        stopping = time.time()  # a beat that fails is beaten after this
        optuna_db.stop()
        for number in killed:
            os.kill(int((sweep_dir / str(number) / "pid").read_text()), signal.SIGKILL)
        wait_until(outage_felt, 120, "the sweeper and the jobs to wait for the server", proc, log)
        optuna_db.start()
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its jobs, if it failed
        proc.wait()

    trials = load_trials(url)
    counted = counted_trials(trials)
    assert len(trials) == 10 and len(counted) == 8
    assert all(t.state == TrialState.COMPLETE for t in counted), [t.state for t in trials]
    retries = {t.user_attrs[RETRY_OF_ATTR]: t for t in trials if RETRY_OF_ATTR in t.user_attrs}
    assert set(retries) == killed and {t.number for t in retries.values()} == {8, 9}
    for number in killed:
        assert trials[number].state == TrialState.FAIL
        assert retries[number].params == trials[number].params
    for trial in counted:
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        assert trial.value == trial.intermediate_values[epochs]
    # the jobs that ran through the outage: their heartbeats and epoch-end reports were
    # repeated until the server answered again (a beat of the outage is in the study, and
    # every epoch)
    for number in survivors:
        assert trials[number].system_attrs[HEARTBEAT_ATTR] > stopping
    # the sweep dir's summary, read back from the database
    with (sweep_dir / "trials.csv").open() as f:
        table = sorted(row["state"] for row in csv.DictReader(f))
    assert table == ["completed"] * 8 + ["failed"] * 2


def test_search_with_pruning_killed_and_resumed(tmp_path, optuna_db_url):
    """The sweeper and its jobs SIGKILLed mid-search (pruning on); rerunning the command
    resumes it from the database: the killed jobs' trials are FAIL and retried, the finished
    ones are left as they are, the later trials are pruned, n_trials count."""
    url, n_trials = optuna_db_url, 6
    cmd = sweeper_cmd(
        tmp_path, url, n_trials, 2, "+epochs=4", "+epoch_s=1.5",
        "hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_kwargs.n_startup_trials=2",
        "+hydra.sweeper.pruner_kwargs.n_warmup_steps=0", "hydra.sweeper.stale_after=3",
    )  # fmt: skip
    proc = _start(cmd, tmp_path, tmp_path / "first.log")

    def mid_search() -> bool:
        trials = _trials(url).values()
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        done = [t for t in trials if t.state.is_finished()]
        return len(done) >= 2 and bool(running) and _training(url, running)

    try:
        wait_until(mid_search, 120, "the search to be half done", proc, tmp_path / "first.log")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the jobs die with it
        proc.wait()
    before = {t.number: t for t in load_trials(url)}
    finished_before = {n: t for n, t in before.items() if t.state.is_finished()}
    left_running = {n for n, t in before.items() if t.state == TrialState.RUNNING}
    assert left_running and len(finished_before) >= 2

    rerun = subprocess.run(
        [*cmd, "hydra.launcher.resume=true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = load_trials(url)
    counted = counted_trials(trials)
    assert len(counted) == n_trials
    states = [t.state for t in counted]
    assert set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    for trial in counted:
        epochs = sorted(trial.intermediate_values)
        assert epochs == list(range(1, len(epochs) + 1))
        assert len(epochs) == 4 if trial.state == TrialState.COMPLETE else len(epochs) < 4
    for number, trial in finished_before.items():  # never rerun
        assert trials[number].state == trial.state
        assert trials[number].datetime_complete == trial.datetime_complete
    retries = {t.user_attrs[RETRY_OF_ATTR]: t for t in trials if RETRY_OF_ATTR in t.user_attrs}
    assert set(retries) == left_running
    for number in left_running:
        assert trials[number].state == TrialState.FAIL
        assert "no heartbeat" in trials[number].user_attrs["reason"]
        assert retries[number].params == trials[number].params
    launched = len(list((tmp_path / "search" / ".submitit").glob("*/*_submitted.pkl")))
    assert launched == len(trials)  # one job per trial: none launched twice


def _open(url: str, barrier: Any) -> None:
    barrier.wait()
    try:
        open_storage(url)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def test_processes_opening_a_fresh_database_at_once(optuna_db_url):
    """Several processes open a database without Optuna's tables at once (sweepers on several
    machines, a job and a status reader): each finds the tables made, by it or another."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    procs = [ctx.Process(target=_open, args=(optuna_db_url, barrier)) for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * 8
    storage = open_storage(optuna_db_url)
    assert storage.get_all_studies() == []
