"""Ablation tables: rows = swept values, columns = metrics per dataset; each cell the mean ±
sample std over the row's completed runs, the others counted, never averaged in."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import pandas as pd

from sce_sweeps.analysis.collect import UNFINISHED, AnalysisError, Sweeps
from sce_sweeps.analysis.references import Reference, find_reference
from sce_sweeps.runtime.tables import combo_of, format_value, group_runs, none_if_nan, stats

DEFAULT_METRICS = ("knn_top1", "loss")
# The baselines of a metric, computed by the same code: the same network at random
# initialisation, and raw pixels. Shown by default wherever the runs recorded them.
BASELINE_SUFFIXES = {"_init": "random init", "_pixels": "raw pixels"}
LABELS = {
    "knn_top1": "kNN top-1 (%)",
    "knn_top1_init": "kNN top-1 at init (%)",
    "knn_top1_pixels": "kNN top-1 raw pixels (%)",
    "probe_top1": "linear probe top-1 (%)",
    "probe_top1_init": "linear probe top-1 at init (%)",
    "probe_top1_pixels": "linear probe top-1 raw pixels (%)",
    "linear_top1": "linear top-1 (%)",
    "linear_top1_init": "linear top-1 at init (%)",
    "linear_top5": "linear top-5 (%)",
    "loss": "loss",
    "wall_time_s": "wall time (s)",
}
DECIMALS = {"loss": 3, "wall_time_s": 0, "epochs": 0}
COUNTS = ("n", "failed", "pruned", "unfinished")
SPENT = {"gpu_h": "GPU-h", "cpu_h": "CPU-h"}  # summed over a row's runs, whatever their state


def baselines_of(metric: str, available: list[str]) -> dict[str, str]:
    """The baselines of ``metric`` among ``available``, with their names
    (``knn_top1`` -> ``{"knn_top1_init": "random init", ...}``)."""
    pairs = ((metric + suffix, name) for suffix, name in BASELINE_SUFFIXES.items())
    return {baseline: name for baseline, name in pairs if baseline in available}


def default_metrics(available: list[str]) -> list[str]:
    """kNN top-1 and the loss, each metric with its recorded baselines, led by the linear
    evaluation where the runs have it (``linear_top1``, else ``probe_top1``)."""
    knn = [DEFAULT_METRICS[0], *baselines_of(DEFAULT_METRICS[0], available)]
    for linear in ("probe_top1", "linear_top1"):
        if linear in available:
            knn = [linear, *baselines_of(linear, available), *knn]
    return [*knn, *DEFAULT_METRICS[1:]]


def lower_is_better(metric: str) -> bool:
    """Losses and times are minimised; everything else (accuracies) maximised."""
    return metric.endswith("loss") or metric.endswith("_s")


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


@dataclass
class AblationTable:
    """An ablation table in long form: ``rows`` has one row per (dataset, swept values,
    metric); ``combos`` are the swept values, sorted; the first metric picks the best row."""

    keys: list[str]
    metrics: list[str]
    datasets: list[str]
    combos: list[tuple]
    rows: pd.DataFrame
    references: list[Reference] = field(default_factory=list)
    unreadable_runs: int = 0  # runs with an unreadable file, counted as failed
    unplaced_runs: int = 0  # those of them in no row (their overrides are unreadable)


def ablation_table(
    sweeps: Sweeps,
    metrics: list[str] | None = None,
    references: list[Reference] | None = None,
) -> AblationTable:
    """Aggregate collected runs into an ablation table of ``metrics`` (default:
    :func:`default_metrics`) with ``references``; AnalysisError for a metric no run reports."""
    metrics = list(dict.fromkeys(metrics or default_metrics(sweeps.metrics)))
    for metric in metrics:
        if metric not in sweeps.metrics and metric not in DEFAULT_METRICS:
            found = ", ".join(sweeps.metrics) or "none"
            raise AnalysisError(f"unknown metric {metric!r}; the runs' result.json have: {found}")
    keys, runs = sweeps.swept, sweeps.runs
    datasets = list(dict.fromkeys(runs["dataset"]))
    groups, combos = group_runs(runs, keys, "dataset")
    rows, used = [], {}
    for dataset, combo in product(datasets, combos):
        members = groups.get((dataset, combo))
        if not members:
            continue
        values = dict(zip(keys, combo))
        ref = find_reference(references or [], dataset, values, members)
        used[ref] = None
        status = Counter(m["status"] for m in members)
        counts = {
            "completed": status["completed"],
            "failed": status["failed"],
            "pruned": status["pruned"],
            "unfinished": sum(status[s] for s in UNFINISHED),
        }
        completed = [m for m in members if m["status"] == "completed"]
        # the reference goes beside its own metric, else beside the first one
        ref_metric = ref and (ref.metric if ref.metric in metrics else metrics[0])
        for metric in metrics:
            row = {"dataset": dataset, **values, "metric": metric}
            row |= stats([none_if_nan(m.get(metric)) for m in completed])
            row |= {**counts, **_spent(members), "best": False}
            shown = ref is not None and metric == ref_metric
            row["ref_metric"] = ref.metric if shown else None
            row["ref_value"] = ref.value if shown else math.nan
            row["ref_confirmed"] = ref.confirmed if shown else None
            row["ref_source"] = ref.source if shown else None
            row["diff"] = row["mean"] - ref.value if shown and ref.metric == metric else math.nan
            rows.append(row)
    table = pd.DataFrame(rows)
    for dataset in datasets:  # the best row by the first metric
        mine = table[(table["dataset"] == dataset) & (table["metric"] == metrics[0])]
        means = mine[mine["n"] > 0]["mean"]
        if not means.empty:
            best = means.idxmin() if lower_is_better(metrics[0]) else means.idxmax()
            table.loc[best, "best"] = True
    refs = [ref for ref in used if ref is not None]
    unreadable = (sweeps.unreadable_runs, sweeps.unplaced_runs)
    return AblationTable(keys, metrics, datasets, combos, table, refs, *unreadable)


def _spent(runs: list[dict[str, Any]]) -> dict[str, float]:
    """GPU-hours and CPU-hours the runs spent (failed and requeued attempts included); NaN
    when none has a ledger."""
    out = {}
    for key in SPENT:
        values = [v for r in runs if not math.isnan(v := float(r.get(key, math.nan)))]
        out[key] = sum(values) if values else math.nan
    return out


def to_csv(table: AblationTable) -> str:
    """The long-form table as CSV (full precision)."""
    return table.rows.to_csv(index=False, lineterminator="\n")


# --- Markdown and LaTeX share one grid of cells -------------------------------------------


@dataclass(frozen=True)
class _Style:
    pm: str
    dash: str
    bold: Callable[[str], str]
    escape: Callable[[str], str]
    number: Callable[[str], str]  # a mean ± std or a difference (LaTeX: in math mode)


MARKDOWN = _Style(" ± ", "–", lambda s: f"**{s}**", lambda s: s.replace("|", "\\|"), str)
_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"}
LATEX = _Style(
    r" \pm ",
    "--",
    lambda s: rf"\mathbf{{{s}}}",
    lambda s: "".join(_LATEX_SPECIAL.get(c, c) for c in s).replace("–", "--"),
    lambda s: f"${s}$",
)


def _columns(table: AblationTable, dataset: str) -> list[str]:
    rows = table.rows[table.rows["dataset"] == dataset]
    pruned = ["pruned"] if rows["pruned"].sum() > 0 else []
    refs = ["ref", "diff"] if rows["ref_value"].notna().any() else []
    spent = [k for k in SPENT if k in rows and rows[k].notna().any()]
    return [*table.metrics, "n", "failed", *pruned, "unfinished", *refs, *spent]


def _cell(rows: dict[str, dict[str, Any] | None], col: str, style: _Style) -> str:
    """A cell from a row's rows by metric: mean ± std, a count, the reference or the diff."""
    if col in rows:
        row = rows[col]
        if row is None or row["n"] == 0:
            return style.dash
        decimals = DECIMALS.get(col, 2)
        text = f"{row['mean']:.{decimals}f}"
        if row["n"] > 1:
            text += f"{style.pm}{row['std']:.{decimals}f}"
        return style.number(style.bold(text) if row["best"] else text)
    first = next(iter(rows.values()))
    if first is None:  # no run of this dataset has these values
        return ""
    if col in COUNTS:
        return str(int(first["completed" if col == "n" else col]))
    if col in SPENT:
        return style.dash if math.isnan(first[col]) else f"{first[col]:.2f}"
    ref = next((r for r in rows.values() if isinstance(r["ref_metric"], str)), None)
    if ref is None:
        return style.dash
    if col == "ref":
        return f"{ref['ref_value']:.2f}" + ("" if ref["ref_confirmed"] else "?")
    return style.dash if math.isnan(ref["diff"]) else style.number(f"{ref['diff']:+.2f}")


def _grid(table: AblationTable, style: _Style) -> tuple[list, list, list]:
    """(column groups [(dataset, columns)], header labels, body rows of cell text)."""
    groups = [(d, _columns(table, d)) for d in table.datasets]
    index = {
        (row["dataset"], combo_of(row, table.keys), row["metric"]): row
        for row in table.rows.to_dict("records")
    }
    header = [style.escape(k) for k in table.keys] or ["runs"]
    header += [
        style.escape(label(c) if c in table.metrics else SPENT.get(c, c))
        for _, cs in groups
        for c in cs
    ]
    body = []
    for combo in table.combos:
        cells = [style.escape(format_value(v)) for v in combo] or ["all"]
        for dataset, cols in groups:
            rows = {m: index.get((dataset, combo, m)) for m in table.metrics}
            cells += [_cell(rows, col, style) for col in cols]
        body.append(cells)
    return groups, header, body


def _notes(table: AblationTable) -> list[str]:
    first = table.metrics[0]
    notes = [
        "Mean ± sample std over seeds; n = completed runs, the only ones averaged. "
        "Failed, pruned and unfinished (running, pending or killed) runs are counted, "
        f"never averaged in. Bold: best {label(first)} per dataset "
        f"({'lowest' if lower_is_better(first) else 'highest'}).",
        f"Datasets: {', '.join(table.datasets)}.",
    ]
    if n := table.unreadable_runs:
        note = (
            f"{n} run{'s' * (n > 1)} with an unreadable file (named in the warnings), "
            "counted as failed, never averaged in"
        )
        if table.unplaced_runs:
            note += f"; {table.unplaced_runs} of them in no row (unreadable overrides)"
        notes.append(note + ".")
    for ref in table.references:
        flag = "confirmed" if ref.confirmed else "UNCONFIRMED (marked ?)"
        notes.append(
            f"ref ({ref.dataset}, {ref.key}={ref.key_value}): {ref.metric} {ref.value:g}, "
            f"{ref.setting}; {ref.source}; {flag}."
        )
    if table.references:
        notes.append("diff = measured − ref, only where both are the same metric.")
    spent = table.rows.drop_duplicates(["dataset", *table.keys])  # one row per group of runs
    if "cpu_h" in spent and spent["cpu_h"].notna().any():
        notes.append(
            f"Spent: {spent['gpu_h'].sum():.2f} GPU-h, {spent['cpu_h'].sum():.2f} CPU-h over all "
            "runs and attempts (GPU-h, CPU-h per row: failed, pruned and requeued included)."
        )
    return notes + _baseline_notes(table)


def _baseline_notes(table: AblationTable) -> list[str]:
    """What the baseline columns are, and a warning when no row beats them: a sweep too short
    to learn anything must not pass for a result."""
    notes = []
    for metric in table.metrics:
        baselines = baselines_of(metric, table.metrics)
        if not baselines:
            continue
        names = " and ".join(baselines.values())
        notes.append(
            f"Baselines of {label(metric)}, by the same code: {names} "
            "(the network before training; the images themselves as features)."
        )
        for dataset in table.datasets:
            mine = table.rows[(table.rows["dataset"] == dataset) & (table.rows["n"] > 0)]
            best = mine[mine["metric"] == metric]["mean"].max()
            for baseline, name in baselines.items():
                floor = mine[mine["metric"] == baseline]["mean"].max()
                if math.isfinite(best) and math.isfinite(floor) and best <= floor:
                    notes.append(
                        f"WARNING ({dataset}): no row beats the {name} "
                        f"baseline of {label(metric)} ({floor:.2f} >= best {best:.2f}): these "
                        "runs are too short or too small to rank the swept values."
                    )
    return notes


def to_markdown(table: AblationTable) -> str:
    """The table as GitHub Markdown, with its notes below it."""
    groups, header, body = _grid(table, MARKDOWN)
    nkeys = max(len(table.keys), 1)
    if len(groups) > 1:  # prefix the dataset to its columns
        owners = [dataset for dataset, cols in groups for _ in cols]
        header = header[:nkeys] + [f"{d}: {h}" for d, h in zip(owners, header[nkeys:])]
    widths = [max(3, *(len(r[i]) for r in [header, *body])) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i < nkeys else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * w if i < nkeys else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    lines = [line(header), line(rule), *map(line, body)]
    return "\n".join(lines) + "\n\n" + "\n".join(_notes(table)) + "\n"


def to_latex(table: AblationTable) -> str:
    """The table as a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), notes as
    comments above it."""
    groups, header, body = _grid(table, LATEX)
    nkeys = max(len(table.keys), 1)
    spec = "l" * nkeys + "".join("r" * len(cols) for _, cols in groups)
    lines = [f"% {note}" for note in _notes(table)]
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if len(groups) > 1:
        spans, rules, start = [""] * nkeys, [], nkeys + 1
        for dataset, cols in groups:
            spans.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{LATEX.escape(dataset)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(cols) - 1}}}")
            start += len(cols)
        lines += [" & ".join(spans) + r" \\", " ".join(rules)]
    header = ["$n$" if h == "n" else h for h in header]
    lines += [" & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
