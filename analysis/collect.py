#!/usr/bin/env python
"""Collect sweeps into tidy CSV files: `python analysis/collect.py --help`.

The same command as `python -m sce_sweeps.cli collect`: it runs the installed package
(`make setup` or `pip install -e .`); see docs/analysis.md.
"""

from sce_sweeps.analysis.cli import collect_main

if __name__ == "__main__":
    raise SystemExit(collect_main())
