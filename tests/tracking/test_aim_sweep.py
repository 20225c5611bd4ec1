"""A real sweep tracked with Aim: four jobs training at once, every run and step in the sweep's
repo, read back through Aim's SDK and through the ``aim up`` server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import ROOT, read_json, read_metrics, wait_until
from tests.tracking.aim_read import read, series
from tests.tracking.helpers import COEFFS, EPOCHS, SEEDS, STEPS_PER_EPOCH, SWEEP_NAME

pytestmark = pytest.mark.slow

# every run once: the swept values with each seed
RUN_COEFFS = sorted(c for c in COEFFS for _ in SEEDS)


@pytest.fixture
def sweep(tracked_sweep: Path) -> Path:
    return tracked_sweep


def test_concurrent_jobs_lose_no_run_and_no_step(sweep: Path) -> None:
    runs = read(sweep / "aim")  # the default repo of a sweep
    assert len(runs) == len(RUN_COEFFS)
    assert sorted((r["params"]["hparams"]["loss"]["coeff"], r["params"]["hparams"]["seed"])
                  for r in runs) == [(c, s) for c in COEFFS for s in SEEDS]  # fmt: skip
    # the four jobs trained at the same time: all had started before any had finished
    assert max(r["created"] for r in runs) < min(r["ended"] for r in runs)

    total = EPOCHS * STEPS_PER_EPOCH
    for run in runs:
        job = run["params"]["job"]
        run_dir = Path(job["run_dir"])
        assert run["experiment"] == SWEEP_NAME and job["sweep_name"] == SWEEP_NAME
        assert run["params"]["swept"]["loss.coeff"] == run["params"]["hparams"]["loss"]["coeff"]
        assert run["params"]["status"] == "completed"
        assert job["config_hash"] == read_json(run_dir / "result.json")["config_hash"]
        assert job["git_commit"] and "slurm_job_id" in job and job["job_num"] in range(4)

        for name in ("loss", "lr", "momentum", "coeff", "temp", "temp_m", "target_entropy"):
            train = series(run, name, "train")
            assert train["steps"] == list(range(0, total, 10)), name
            assert train["epochs"] == [s // STEPS_PER_EPOCH + 1 for s in train["steps"]]
        assert set(series(run, "coeff", "train")["values"]) == {
            run["params"]["hparams"]["loss"]["coeff"]
        }

        rows = read_metrics(run_dir)
        ends = [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
        for name, key, subset in (
            ("knn_top1", "knn_top1", "eval"),
            ("loss_epoch", "loss", "train"),
        ):
            got = series(run, name, subset)
            assert got["steps"] == ends and got["epochs"] == list(range(1, EPOCHS + 1)), name
            assert got["values"] == pytest.approx([r[key] for r in rows]), name

        assert run["images"] == {"steps": [0], "counts": [16]}  # 8 (weak, strong) pairs
        system = [m for m in run["metrics"] if m["name"].startswith("__system__")]
        assert system, "Aim's system metrics"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _decode_run_stream(data: bytes) -> dict:
    """The body of /api/runs/search/run/: (key, value) pairs, each length-prefixed, of an
    encoded tree that Aim's own decoder turns back into {run hash: {params, props, ...}}."""
    from aim.storage.treeutils import decode_tree

    def pairs():
        i = 0
        while i < len(data):
            parts = []
            for _ in ("key", "value"):
                (n,) = struct.unpack_from("I", data, i)
                parts.append(data[i + 4 : i + 4 + n])
                i += 4 + n
            yield parts[0], parts[1]

    return decode_tree(pairs())


def test_aim_up_serves_the_sweep_over_http(sweep: Path, tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}/api"
    log = (tmp_path / "aim_up.log").open("w")
    server = subprocess.Popen(
        [Path(sys.executable).with_name("aim"), "up", "--repo", sweep / "aim"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # aim up starts uvicorn: stop the whole group
    )
    try:

        def indexed() -> dict:  # the server indexes the repo in the background
            try:
                body = _get(f"{base}/runs/search/run/?report_progress=false&exclude_traces=true")
            except (urllib.error.URLError, ConnectionError):
                return {}
            runs = {h: r for h, r in _decode_run_stream(body).items() if "params" in r}
            return runs if len(runs) >= len(RUN_COEFFS) else {}

        runs = wait_until(
            indexed, 120, "the runs over HTTP", proc=server, log=tmp_path / "aim_up.log", interval=1
        )

        coeffs = sorted(r["params"]["hparams"]["loss"]["coeff"] for r in runs.values())
        assert coeffs == RUN_COEFFS
        assert {r["props"]["experiment"]["name"] for r in runs.values()} == {SWEEP_NAME}
        run_hash = next(iter(runs))
        info = json.loads(_get(f"{base}/runs/{run_hash}/info/"))
        assert info["params"]["swept"]["loss.coeff"] == info["params"]["hparams"]["loss"]["coeff"]
        metrics = {(t["name"], t["context"].get("subset")) for t in info["traces"]["metric"]}
        assert {("knn_top1", "eval"), ("loss", "train"), ("loss_epoch", "train")} <= metrics
        experiments = json.loads(_get(f"{base}/experiments/"))
        assert {e["name"]: e["run_count"] for e in experiments}[SWEEP_NAME] == len(RUN_COEFFS)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
