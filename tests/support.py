"""What the tests share: the repository root, the TINY overrides, a real Hydra compose of the
app's config, ``wait_until``, the real CLI and analysis scripts as processes (end-to-end tests
only), run-file readers and the real one-node SLURM cluster (scripts/slurm_cluster.sh)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# A width-4 ResNet-18 on 512 Fashion-MNIST images: about a second per epoch.
TINY = [
    "model=resnet18_tiny",
    "dataset.train_samples=512",
    "dataset.test_samples=256",
    "dataset.num_workers=0",
    "loss.queue_size=128",
    "trainer.batch_size=64",
    "trainer.epochs=2",
    "trainer.eval_random_init=false",
    "trainer.linear_probe=false",
    "trainer.data_path=cpu",  # DataLoader workers, as dataset.num_workers asks
    "trainer.eval_every=1",
    "trainer.knn_k=20",
    "trainer.num_threads=1",
    "optim.warmup_epochs=1",
]

# A multirun of two one-epoch TINY jobs, one at a time, the second diverging (lr 1e12: NaN loss).
FAILING_POINT = [
    *TINY,
    "tracker=none",
    "trainer.epochs=1",
    "optim.warmup_epochs=0",
    "optim.lr=0.06,1e12",
    "hydra.launcher.poll_s=0.5",
    "hydra.launcher.max_parallel=1",
]


def job_context() -> multiprocessing.context.BaseContext:
    """Processes forked from a fresh server process rather than from this one: a plain fork of
    a test process that has opened an Aim repo inherits RocksDB's state without its background
    threads, and the child's first flush waits for them forever. The server imports what the
    jobs of the tests use once (this takes effect when it first starts)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["aim.sdk.repo", "optuna", "sce_sweeps.runtime.tracking"])
    return ctx


def tiny(**changes: object) -> list[str]:
    """The TINY overrides with some keys changed (``tiny(**{"trainer.epochs": 3})``)."""
    kept = [o for o in TINY if o.split("=")[0] not in changes]
    return kept + [f"{key}={value}" for key, value in changes.items()]


def compose(*overrides: str, hydra: bool = False, validate: bool = False) -> DictConfig:
    """The app's config composed by Hydra (``conf/config.yaml`` and ``overrides``), with the
    ``hydra`` node when ``hydra`` is true, checked by the app's ``validate`` when asked."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from sce_sweeps import config
    from sce_sweeps.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)
    if validate:
        config.validate(cfg)
    return cfg


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 120,
    what: str = "the condition",
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    interval: float = 0.2,
) -> T:
    """Poll ``predicate`` until it returns something true, and return that; fail the test when
    ``timeout`` seconds pass first, or when ``proc`` (the process that should make it true)
    ends before (with the tail of ``log`` or of its piped output)."""
    deadline = time.monotonic() + timeout

    def tail() -> str:
        if log is not None and Path(log).exists():
            return Path(log).read_text(errors="replace")[-3000:]
        if proc is not None and proc.poll() is not None and proc.stdout is not None:
            out, err = proc.communicate()
            return f"{(out or '')[-2000:]}\n{(err or '')[-3000:]}"
        return ""

    while not (value := predicate()):
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"exit {proc.returncode} before {what}\n{tail()}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail()}", pytrace=False)
        time.sleep(interval)
    return value


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}


def run_cli(
    *args: str, timeout: float = 300, check: bool = True, **popen: object
) -> subprocess.CompletedProcess:
    """``python -m sce_sweeps *args`` from the repository root (end-to-end tests)."""
    proc = subprocess.run(
        [sys.executable, "-m", "sce_sweeps", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        **popen,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def run_in_process(
    *args: str, main: Callable[[list[str]], object] | None = None
) -> subprocess.CompletedProcess:
    """``python -m sce_sweeps *args`` run in this process (Hydra's main, as the CLI calls it),
    or ``main(list(args))`` of another command: its exit status and what it printed, as
    ``run_cli`` returns them."""
    from hydra.core.global_hydra import GlobalHydra

    from sce_sweeps.app import cli

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["sce_sweeps", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args)) if main is not None else cli()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) or e.code is None else 1
        if isinstance(e.code, str):
            err.write(e.code + "\n")
    except Exception:  # what the interpreter prints before it exits with 1
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(args, code or 0, out.getvalue(), err.getvalue())


def start_cli(*args: str) -> subprocess.Popen:
    """``python -m sce_sweeps *args``, started and not waited for; its output piped, as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "sce_sweeps", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    """``python analysis/<name>.py *args`` from the repository root, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(ROOT / "analysis" / f"{name}.py"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_sweep(src: Path, dst: Path) -> Path:
    """A copy of a sweep without its checkpoints and earlier analysis outputs."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoint.pt", "analysis"))
    return dst


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@contextlib.contextmanager
def read_only_mount(source: Path, mount: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only at ``mount`` (``chmod`` means nothing to root) for the
    block, then unmounted; the test is skipped where mounting is not allowed."""
    mount.mkdir(parents=True, exist_ok=True)
    bind = subprocess.run(["mount", "--bind", str(source), str(mount)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bind.stderr.decode().strip()}")
    try:
        remount = ["mount", "-o", "remount,ro,bind", str(mount)]
        subprocess.run(remount, check=True, capture_output=True)
        with pytest.raises(OSError) as err:  # really read-only, for root too
            (mount / "probe").write_text("x")
        assert err.value.errno == errno.EROFS
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def checkpoint_epoch(run_dir: Path) -> int:
    """The epoch of the run dir's checkpoint; 0 while it has none (or one half written)."""
    import torch

    try:
        state = torch.load(Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)
        return state["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def requeue_job_0(cmd: list[str], sweep_dir: Path) -> tuple[int, str, str]:
    """Run the SLURM sweep ``cmd`` into ``sweep_dir``, ``scontrol requeue`` its job #0 once it
    has checkpointed epoch 1, and wait for the sweep: its exit status, stderr and that job id."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready = lambda: checkpoint_epoch(sweep_dir / "0") >= 1  # noqa: E731
        wait_until(ready, 240, "job #0's checkpoint of epoch 1", proc=proc, interval=0.1)
        job_id = read_json(sweep_dir / "manifest.json")["jobs"][0]["job_ids"][-1]
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.decode(), job_id


# --- runs of the CLI made once per session, only read by the tests -------------------------------


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """A finished run or sweep of the CLI on the TINY overrides: its dir and its process."""

    run_dir: Path
    proc: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """``python -m sce_sweeps *TINY tracker=none``, straight through, with its output piped
    (the reference of the resume tests)."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    return TinyRun(run_dir, run_cli(*TINY, "tracker=none", f"hydra.run.dir={run_dir}"))


@pytest.fixture(scope="session")
def failing_point_sweep(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """A local multirun of FAILING_POINT: its sweep dir and its process (output piped; exit
    status 1, for the failed job)."""
    sweep_dir = tmp_path_factory.mktemp("failing_point") / "sweep"
    proc = run_cli("-m", *FAILING_POINT, f"hydra.sweep.dir={sweep_dir}", check=False)
    return TinyRun(sweep_dir, proc)


# --- the real one-node SLURM cluster -------------------------------------------------------------
# Started once per session (a no-op when ``sinfo`` shows a usable node) and left running, since
# other sessions share it. When it cannot start, the tests that need it FAIL: never skipped.

SLURM_SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
NODE, PARTITION = "localhost", "debug"
START_TIMEOUT_S = 600  # covers a first-time apt-get install; a start alone takes seconds


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running cluster."""

    partition: str
    node: str
    cpus: int
    real_memory_mb: int
    script: Path


def _port_open(port: int) -> bool:
    """Cheap liveness probe: sinfo/sacct retry for ~10 s against a dead daemon."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _node_info() -> tuple[str, int, int] | None:
    """(state, cpus, memory MB) of the test node, or None when SLURM does not answer."""
    if shutil.which("sinfo") is None or not _port_open(6817):
        return None
    cmd = ["sinfo", "-h", "-N", "-n", NODE, "-p", PARTITION, "-o", "%T %c %m"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
        state, cpus, mem = out.stdout.split()[:3]
        return (state, int(cpus), int(mem.rstrip("+"))) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None


def _usable(info: tuple[str, int, int] | None) -> bool:
    return info is not None and info[0] in {"idle", "mixed", "allocated", "completing"}


def _accounting_ok() -> bool:
    if not _port_open(6819):
        return False
    out = subprocess.run(
        ["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=20, check=False
    )
    return out.returncode == 0


def server_script(script: Path, *args: str, timeout: float = 120) -> str:
    """``bash SCRIPT ARGS``, the script of a server the tests use: its stdout, or pytest.fail
    with its output."""
    line = f"bash {script} {' '.join(args)}"
    try:
        proc = subprocess.run(
            ["bash", str(script), *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{line}` timed out:\n{exc}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"`{line}` failed (rc={proc.returncode}):\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout.strip()


def ensure_slurm_cluster() -> SlurmCluster:
    """Start the test cluster unless it is already healthy; pytest.fail if it cannot start."""
    info = _node_info()
    if not (_usable(info) and _accounting_ok()):
        server_script(SLURM_SCRIPT, "start", timeout=START_TIMEOUT_S)
        info = _node_info()
        if not _usable(info):
            pytest.fail(f"SLURM node {NODE!r} not usable after start: {info}", pytrace=False)
    assert info is not None
    return SlurmCluster(PARTITION, NODE, info[1], info[2], SLURM_SCRIPT)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running one-node SLURM cluster (started on demand, left running)."""
    return ensure_slurm_cluster()
