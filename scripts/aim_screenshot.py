"""Screenshot Aim's metrics explorer on a sweep, grouped by the swept parameter.

    python scripts/aim_screenshot.py SWEEP_DIR [--param loss.coeff] [--out PNG]

Serves ``SWEEP_DIR/aim`` with ``aim up`` on a free port of 127.0.0.1, waits until the server
has indexed every run, opens the metrics explorer (kNN top-1 and the train loss, one colour per
value of ``--param``) with Playwright in Debian's headless chromium (``apt-get install -y
chromium``; ``--chromium`` for another one), waits until the charts are drawn and saves the
PNG. The sweep behind docs/img/aim_metrics_explorer.png (docs/tracking.md):

    python -m sce_sweeps -m model=resnet18_tiny dataset.train_samples=2560 \\
        dataset.test_samples=1000 dataset.num_workers=0 loss.queue_size=512 \\
        trainer.batch_size=64 trainer.epochs=10 trainer.knn_k=20 trainer.num_threads=1 \\
        optim.warmup_epochs=1 loss.coeff=0,0.5,1 sweep_name=lambda_demo \\
        hydra.sweep.dir=/tmp/aim_demo_sweep hydra.launcher.max_parallel=3
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# The stroke colour of each line of each chart of the explorer (Aim draws them as path.Line).
LINES_JS = """() => Array.from(document.querySelectorAll('svg'))
    .map(svg => Array.from(svg.querySelectorAll('path.Line'))
        .map(p => p.getAttribute('stroke') || getComputedStyle(p).stroke))
    .filter(lines => lines.length > 0)"""


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


def _indexed_runs(base: str) -> int:
    """Runs the server can query (it indexes the repo in the background)."""
    try:
        with urllib.request.urlopen(f"{base}/api/experiments/", timeout=10) as response:
            return sum(e["run_count"] for e in json.loads(response.read()))
    except (OSError, ValueError, KeyError):
        return 0


@contextlib.contextmanager
def serve(repo: Path, wait_s: float = 120.0) -> Iterator[str]:
    """``aim up`` on ``repo`` on a free port of 127.0.0.1, once it serves every run of the
    repo; yields its base URL and stops it (the whole process group) on exit."""
    runs = len(list((repo / ".aim" / "meta" / "chunks").iterdir()))
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).with_name("aim"), "up", "--repo", repo]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # aim up starts uvicorn: stop the whole group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while _indexed_runs(base) < runs:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aim up did not serve the {runs} runs of {repo}")
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def open_explorer(browser: Any, base: str, param: str, size: tuple[int, int], wait_s: float):
    """A Playwright page on the metrics explorer, once both charts have their lines."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(base)
    page.evaluate("localStorage.setItem('communityPopupSeen', 'true')")  # no pop-up
    page.goto(explorer_url(base, param))
    page.wait_for_function(f"({LINES_JS})().length >= 2", timeout=wait_s * 1000)
    page.wait_for_timeout(2000)  # the last transitions
    return page


def chart_lines(page: Any) -> list[list[str]]:
    """The stroke colour of every line, chart by chart."""
    return page.evaluate(LINES_JS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--param", default="loss.coeff", help="config key to colour by")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/aim_metrics_explorer.png")
    parser.add_argument("--size", default="1600,1100", help="page width,height in pixels")
    parser.add_argument("--wait-s", type=float, default=120.0, help="longest wait for aim up")
    parser.add_argument("--chromium", default=CHROMIUM, help="the browser Playwright drives")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    size = tuple(int(v) for v in args.size.split(","))
    with serve(args.sweep_dir / "aim", args.wait_s) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = open_explorer(browser, base, args.param, size, args.wait_s)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out)
        browser.close()
    print(f"{args.out} ({args.sweep_dir / 'aim'})")


if __name__ == "__main__":
    main()
