"""Analysis of finished or partial sweeps: collect runs, ablation tables, plots (the commands
``table``, ``plot`` and ``collect`` of ``python -m sce_sweeps.cli``: :mod:`.cli`)."""

# ruff: noqa: F401  (the package's API, re-exported)
from sce_sweeps.analysis.collect import AnalysisError, Sweeps, collect
from sce_sweeps.analysis.references import Reference, load_references
from sce_sweeps.analysis.tables import AblationTable, ablation_table, to_csv, to_latex, to_markdown
