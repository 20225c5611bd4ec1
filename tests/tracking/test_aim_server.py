"""``tracker.repo=aim://host:port``: jobs log straight to a real ``aim server`` (started here on
127.0.0.1 and a free port): 8 concurrent jobs driving the project's tracker, two of them stopped
half way and resumed by another process from their run hash, then one real training run; read back
from the server's repo, every run is there once with its metrics in step order."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, run_cli, tiny, wait_until
from tests.tracking.aim_read import read, series

pytestmark = pytest.mark.slow

JOBS, STEPS, RESUMED = 8, 40, (0, 1)

# The jobs: the project's tracker as make_tracker builds it for tracker.repo=aim://..., one
# forked process per job, all at once. The host imports the modules once and forks the jobs,
# so that each starts logging at once rather than after its own imports.
JOBS_HOST = """
import json, os, sys
from pathlib import Path
from omegaconf import OmegaConf
from sce_sweeps.config import Config
from sce_sweeps.runtime.tracking import RemoteAimTracker, make_tracker

def job(url, k, first, last, run_hash, steps):
    cfg = OmegaConf.structured(Config)
    cfg.tracker.repo, cfg.tracker.system_metrics, cfg.sweep_name = url, False, "server"
    info = {"sweep_name": "server", "job_num": k, "overrides": [f"seed={k}"]}
    tracker = make_tracker(cfg, Path("."), run_hash or None, info)
    assert isinstance(tracker, RemoteAimTracker), tracker
    for step in range(first, last):
        tracker.log({"loss": k * 1000 + step}, step, 1 + step // 10, {"subset": "train"})
    tracker.close("completed" if last == steps else "running")
    return tracker.run_hash

url, steps, spans = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
pids = {}
for k, (first, last, run_hash) in spans.items():
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            run_hash = job(url, int(k), first, last, run_hash, steps)
            print(json.dumps({k: run_hash}), flush=True)
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    pids[pid] = k
failed = [pids[pid] for pid in pids if os.waitpid(pid, 0)[1] != 0]
sys.exit(f"jobs {failed} failed" if failed else 0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def aim_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``aim server`` on 127.0.0.1; yields its URL and its repo's directory."""
    aim = shutil.which("aim", path=str(Path(sys.executable).parent)) or "aim"
    repo = tmp_path / "server"
    repo.mkdir()
    subprocess.run([aim, "init", "--repo", str(repo)], check=True, capture_output=True)
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    cmd = [aim, "server", "--repo", str(repo), "--host", "127.0.0.1", "--port", str(port), "-y"]
    server = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
    try:

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(listening, 90, "the aim server", proc=server, log=tmp_path / "server.log")
        yield f"aim://127.0.0.1:{port}", repo
    finally:
        with_group = [signal.SIGTERM, signal.SIGKILL]  # the server and its uvicorn worker
        for sig in with_group:
            try:
                os.killpg(server.pid, sig)
            except ProcessLookupError:
                break
            try:
                server.wait(timeout=10)
                time.sleep(0.5)
            except subprocess.TimeoutExpired:
                continue
        log.close()


def _jobs(url: str, spans: dict[int, tuple[int, int, str]]) -> dict[int, str]:
    """Run the jobs ``{k: (first step, last step, run hash or "")}`` at once, each in its own
    process; their hashes."""
    proc = subprocess.run(
        [sys.executable, "-c", JOBS_HOST, url, str(STEPS), json.dumps(spans)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    hashes = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            hashes.update({int(k): v for k, v in json.loads(line).items()})
    assert sorted(hashes) == sorted(spans), proc.stdout[-2000:]
    return hashes


def test_eight_jobs_log_to_an_aim_server_and_resume_there(tmp_path):
    run_dir = tmp_path / "run"
    with aim_server(tmp_path) as (url, repo):
        # 8 at once; jobs 0 and 1 stop half way and resume in another process
        half = {k: (0, STEPS // 2 if k in RESUMED else STEPS, "") for k in range(JOBS)}
        hashes = _jobs(url, half)
        rest = {k: (STEPS // 2, STEPS, hashes[k]) for k in RESUMED}
        assert _jobs(url, rest) == {k: hashes[k] for k in RESUMED}  # the same runs
        # a real training run, tracked to the server: no private repo, no merge
        run_cli(*tiny(**{"trainer.epochs": 1, "optim.warmup_epochs": 0}), "tracker=aim",
                f"tracker.repo={url}", "tracker.system_metrics=false",
                f"hydra.run.dir={run_dir}")  # fmt: skip
    assert not (run_dir / "aim").exists()

    runs = {r["hash"]: r for r in read(repo)}
    assert len(runs) == JOBS + 1
    for k, run_hash in hashes.items():
        run = runs.pop(run_hash)
        assert run["params"]["status"] == "completed" and run["params"]["job"]["job_num"] == k
        loss = series(run, "loss", "train")
        assert loss["steps"] == list(range(STEPS))  # in step order, each once
        assert loss["values"] == [k * 1000 + s for s in range(STEPS)]
        assert loss["epochs"] == [1 + s // 10 for s in range(STEPS)]
    (trained,) = runs.values()
    assert trained["params"]["status"] == "completed"
    knn = series(trained, "knn_top1", "eval")
    result = json.loads((run_dir / "result.json").read_text())
    assert knn["values"] == [pytest.approx(result["knn_top1"])] and knn["steps"] == [8]
