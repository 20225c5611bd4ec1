"""``python -m sce_sweeps.plot_sweep SWEEP_DIR... [options]``: plots of finished or partial
sweeps (each metric vs the swept value, learning curves).

The same command as ``python analysis/plot_sweep.py`` in a checkout; see
:func:`sce_sweeps.analysis.cli.plot_main`.
"""

from sce_sweeps.analysis.cli import plot_main as main

if __name__ == "__main__":
    raise SystemExit(main())
