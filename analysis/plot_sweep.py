#!/usr/bin/env python
"""Plots of finished or partial sweeps: `python analysis/plot_sweep.py --help`.

A thin wrapper over :mod:`sce_sweeps.analysis.cli`; see docs/analysis.md.
"""

import sys
from pathlib import Path

try:
    import sce_sweeps  # noqa: F401  (installed, e.g. pip install -e .)
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sce_sweeps.analysis.cli import plot_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(plot_main())
