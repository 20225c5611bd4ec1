#!/usr/bin/env python
"""Plots of finished or partial sweeps: `python analysis/plot_sweep.py --help`.

The same command as `python -m sce_sweeps.cli plot`: it runs the installed package
(`make setup` or `pip install -e .`); see docs/analysis.md.
"""

from sce_sweeps.analysis.cli import plot_main

if __name__ == "__main__":
    raise SystemExit(plot_main())
