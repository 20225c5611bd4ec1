"""``python -m sce_sweeps.collect SWEEP_DIR... [options]``: finished or partial sweeps as tidy
CSV files (runs.csv, curves.csv).

The same command as ``python analysis/collect.py`` in a checkout; see
:func:`sce_sweeps.analysis.cli.collect_main`.
"""

from sce_sweeps.analysis.cli import collect_main as main

if __name__ == "__main__":
    raise SystemExit(main())
