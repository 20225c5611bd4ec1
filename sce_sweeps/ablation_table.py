"""``python -m sce_sweeps.ablation_table SWEEP_DIR... [options]``: the ablation table of
finished or partial sweeps (Markdown, LaTeX, CSV).

The same command as ``python analysis/ablation_table.py`` in a checkout; see
:func:`sce_sweeps.analysis.cli.table_main`.
"""

from sce_sweeps.analysis.cli import table_main as main

if __name__ == "__main__":
    raise SystemExit(main())
