"""Analysis of finished or partial sweeps: collect runs, ablation tables, plots (the commands
``table``, ``plot`` and ``collect`` of ``python -m sce_sweeps.cli``: :mod:`.cli`)."""

from sce_sweeps.analysis.collect import AnalysisError, Sweeps, collect
from sce_sweeps.analysis.references import Reference, load_references
from sce_sweeps.analysis.tables import AblationTable, ablation_table, to_csv, to_latex, to_markdown

__all__ = [
    "AblationTable",
    "AnalysisError",
    "Reference",
    "Sweeps",
    "ablation_table",
    "collect",
    "load_references",
    "to_csv",
    "to_latex",
    "to_markdown",
]
