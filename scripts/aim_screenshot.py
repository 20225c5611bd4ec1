"""Screenshot Aim's metrics explorer on a sweep, grouped by the swept parameter.

    python scripts/aim_screenshot.py SWEEP_DIR [--param loss.coeff] [--out PNG]

Serves ``SWEEP_DIR/aim`` with ``aim up`` on a free port of 127.0.0.1, waits until the server
has indexed every run, opens the metrics explorer (kNN top-1 and the train loss, one colour per
value of ``--param``) in Debian's headless chromium (``apt-get install -y chromium``), waits
until the charts are drawn and saves the PNG. Chromium is driven over its DevTools protocol
(``websockets``, a dependency of Aim) so that the page can be told the "join the community"
pop-up was seen and be captured once drawn. The sweep behind docs/img/aim_metrics_explorer.png
(docs/tracking.md):

    python -m sce_sweeps -m model=resnet18_tiny dataset.train_samples=2560 \\
        dataset.test_samples=1000 dataset.num_workers=0 loss.queue_size=512 \\
        trainer.batch_size=64 trainer.epochs=10 trainer.knn_k=20 trainer.num_threads=1 \\
        optim.warmup_epochs=1 loss.coeff=0,0.5,1 sweep_name=lambda_demo \\
        hydra.sweep.dir=/tmp/aim_demo_sweep hydra.launcher.max_parallel=3
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
]


def aim64(state: dict) -> str:
    """The UI's URL encoding of its state (aim_ui utils/encoder: ``aim64encode``)."""
    uri = urllib.parse.quote(json.dumps(state, separators=(",", ":")), safe="~!@#$&*()=:/,;?+'")
    b64 = base64.b64encode(uri.encode()).decode()
    return "O-" + b64.replace("=", "").replace("+", "-").replace("/", "_")


def explorer_url(base: str, param: str) -> str:
    """Metrics explorer: kNN top-1 (eval) and train loss, a chart per metric, colour by
    ``run.hparams.<param>``."""
    query = (
        '(metric.name == "knn_top1" and metric.context.subset == "eval") or '
        '(metric.name == "loss" and metric.context.subset == "train")'
    )
    select = {"options": [], "query": "", "advancedMode": True, "advancedQuery": query}
    grouping = {
        "color": [f"run.params.hparams.{param}"],
        "stroke": [],
        "chart": ["name"],
        "reverseMode": {"color": False, "stroke": False, "chart": False},
        "isApplied": {"color": True, "stroke": True, "chart": True},
        "persistence": {"color": False, "stroke": False},
        "seed": {"color": 10, "stroke": 10},
        "paletteIndex": 0,
    }
    return f"{base}/metrics?select={aim64(select)}&grouping={aim64(grouping)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_runs(api: str) -> int:
    """Runs the server can query (it indexes the repo in the background)."""
    return sum(e["run_count"] for e in get_json(f"{api}/experiments/"))


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.5)


class Page:
    """A tab of a headless chromium, over the DevTools protocol (a websocket connection)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._id = 0

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:  # skip the events in between
            reply = json.loads(self._ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(url, lambda: self.evaluate("document.readyState") == "complete", 60)


def lines_drawn(page: Page, charts: int) -> bool:
    """Every chart of the panel has its lines (SVG paths with a stroke)."""
    count = page.evaluate(
        "Array.from(document.querySelectorAll('svg')).filter("
        "svg => svg.querySelectorAll('path.Line').length > 0).length"
    )
    return (count or 0) >= charts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--param", default="loss.coeff", help="config key to colour by")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/aim_metrics_explorer.png")
    parser.add_argument("--size", default="1600,1100", help="page width,height in pixels")
    parser.add_argument("--wait-s", type=float, default=120.0, help="longest wait for aim up")
    args = parser.parse_args()
    from websockets.sync.client import connect

    repo = args.sweep_dir / "aim"
    runs = len(list((repo / ".aim" / "meta" / "chunks").iterdir()))
    chromium = shutil.which("chromium") or sys.exit("no chromium: apt-get install -y chromium")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    aim = Path(sys.executable).with_name("aim")
    server = subprocess.Popen(
        [aim, "up", "--repo", repo, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            f"aim up to serve the {runs} runs",
            lambda: count_runs(f"{base}/api") >= runs,
            args.wait_s,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        width, height = (int(v) for v in args.size.split(","))
        debug_port = free_port()
        with tempfile.TemporaryDirectory() as profile:
            browser = subprocess.Popen(
                [
                    chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={width},{height}",
                    f"--remote-debugging-port={debug_port}",
                    "about:blank",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                wait_for(
                    "chromium",
                    lambda: bool(get_json(f"http://127.0.0.1:{debug_port}/json/list")),
                    60,
                )
                targets = get_json(f"http://127.0.0.1:{debug_port}/json/list")
                tab = next(t for t in targets if t["type"] == "page")
                with connect(tab["webSocketDebuggerUrl"], max_size=None) as ws:
                    page = Page(ws)
                    page.call(
                        "Emulation.setDeviceMetricsOverride",
                        width=width,
                        height=height,
                        deviceScaleFactor=1,
                        mobile=False,
                    )
                    page.goto(base)
                    page.evaluate("localStorage.setItem('communityPopupSeen', 'true')")
                    page.goto(explorer_url(base, args.param))
                    wait_for("the charts", lambda: lines_drawn(page, charts=2), args.wait_s)
                    time.sleep(2)  # the last transitions
                    shot = page.call("Page.captureScreenshot", format="png")
                args.out.write_bytes(base64.b64decode(shot["data"]))
            finally:
                os.killpg(browser.pid, signal.SIGTERM)
                browser.wait(timeout=30)
        print(f"{args.out} ({runs} runs of {repo})")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
