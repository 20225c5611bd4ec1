"""SCE's sweeps collected into tidy tables (one row per run, one row per epoch) by the runtime's
table plumbing (:mod:`sce_sweeps.runtime.tables`): ``seed`` is the replicate axis and the
dataset (its group choice, else ``dataset.name``) the column axis, so neither is a swept key."""

from __future__ import annotations

from pathlib import Path

from sce_sweeps.runtime import tables
from sce_sweeps.runtime.tables import UNFINISHED, AnalysisError, Sweeps, read_config

__all__ = ["AXES", "UNFINISHED", "AnalysisError", "Sweeps", "collect", "read_config"]

AXES = tables.Axes(
    column="dataset",
    replicate="seed",
    column_fallback="dataset.name",
    fixed=frozenset({"seed", "dataset", "sweep_name"}),
)


def collect(sweep_dirs: list[Path | str], strict: bool = False) -> Sweeps:
    """SCE sweeps as :func:`sce_sweeps.runtime.tables.collect` reads them."""
    from sce_sweeps.config import register_schema

    register_schema()  # the resolvers of the run configs read for runs without params
    return tables.collect(sweep_dirs, AXES, strict)
