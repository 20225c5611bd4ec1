"""The Aim page of a finished sweep, in a real browser (Playwright driving Debian's chromium):
the metrics explorer shows every run, coloured by the swept value; the screenshot script
saves it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.tracking.helpers import COEFFS, SEEDS

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "aim_screenshot.py"
CHROMIUM = Path("/usr/bin/chromium")


def _script():
    spec = importlib.util.spec_from_file_location("aim_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sweep(tracked_sweep: Path) -> Path:
    """2 values of λ x 2 seeds: 4 runs in 2 groups of 2 (tests/tracking/conftest.py)."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install -y chromium; .ci/run installs it)")
    return tracked_sweep


def test_explorer_shows_the_runs_grouped_by_the_swept_value(sweep: Path) -> None:
    from playwright.sync_api import sync_playwright

    shot = _script()
    with shot.serve(sweep / "aim") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = shot.open_explorer(browser, base, "loss.coeff", (1400, 1000), 120)
            charts = shot.chart_lines(page)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert len(charts) == 2, charts  # kNN top-1 and the train loss
    for lines in charts:
        assert len(lines) == len(COEFFS) * len(SEEDS)  # every run
        assert len(set(lines)) == len(COEFFS)  # one colour per value of λ, shared by its seeds
    assert "knn_top1" in text and "loss" in text


def test_screenshot_script_saves_the_page(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "explorer.png"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(sweep), "--out", str(out), "--size", "1000,700"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
