"""Helpers of the analysis tests: run the scripts as files, copy a sweep."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


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
