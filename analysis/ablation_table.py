#!/usr/bin/env python
"""Ablation table of finished or partial sweeps: `python analysis/ablation_table.py --help`.

The same command as `python -m sce_sweeps.cli table`: it runs the installed package
(`make setup` or `pip install -e .`); see docs/analysis.md.
"""

from sce_sweeps.analysis.cli import table_main

if __name__ == "__main__":
    raise SystemExit(table_main())
