"""Plots of a sweep: metric vs swept value with error bars, and per-value learning curves;
drawn without pyplot and saved without dates or random ids, so reruns are byte-identical."""

from __future__ import annotations

import io
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sce_sweeps.analysis.collect import Sweeps
from sce_sweeps.analysis.tables import AblationTable, baselines_of, label
from sce_sweeps.runtime.tables import combo_of, format_value, group_runs, sort_key

CURVE_METRICS = ("knn_top1", "loss")
RC = {"svg.hashsalt": "sce_sweeps", "svg.fonttype": "path", "font.size": 9}
METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}
DPI = 120


def render(fig: Figure, stem: str) -> dict[str, bytes]:
    """``{stem}.png`` and ``{stem}.svg`` as bytes, free of dates and random ids."""
    out = {}
    with matplotlib.rc_context(RC):
        for fmt, metadata in METADATA.items():
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
            out[f"{stem}.{fmt}"] = buf.getvalue()
    return out


def _combo_label(combo: tuple) -> str:
    return ", ".join(format_value(v) for v in combo) or "all runs"


def _x_axis(ax: Axes, key: str | None, values: list[Any]) -> dict[Any, float]:
    """Swept values to x positions: numbers (log over > 2 decades), else categories."""
    ax.set_xlabel(key or "")
    if (
        key
        and values
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        if min(values) > 0 and max(values) / min(values) > 100:
            ax.set_xscale("log")
        return {v: float(v) for v in values}
    ordered = sorted(values, key=sort_key)
    names = [format_value(v) for v in ordered] if key else ["all runs"]
    ax.set_xticks(range(len(ordered)), names)
    return {v: float(i) for i, v in enumerate(ordered)}


def _x(row: dict[str, Any], keys: list[str]) -> Any:
    return combo_of(row, keys)[0] if keys else None


def _plot_baselines(ax: Axes, table: AblationTable, metric: str, position: dict) -> None:
    """The baselines of ``metric`` (random init, raw pixels) as dashed grey lines."""
    for j, (baseline, name) in enumerate(baselines_of(metric, table.metrics).items()):
        rows = table.rows[(table.rows["metric"] == baseline) & (table.rows["n"] > 0)]
        points = sorted((position[_x(r, table.keys)], r["mean"]) for r in rows.to_dict("records"))
        if points:
            ax.plot(
                *zip(*points),
                linestyle="--" if j == 0 else ":",
                color="0.45",
                label=name,
            )


def plot_ablation(table: AblationTable) -> dict[str, bytes]:
    """Each metric vs the first swept key (mean ± std), a line per dataset and other swept
    values; references as crosses, baselines as dashed lines in their metric's panel."""
    baselines = {b for m in table.metrics for b in baselines_of(m, table.metrics)}
    metrics = [m for m in table.metrics if m not in baselines]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
        x_key = table.keys[0] if table.keys else None
        xs = list(dict.fromkeys(c[0] if c else None for c in table.combos))
        for ax, metric in zip(axes, metrics):
            position = _x_axis(ax, x_key, xs)
            _plot_baselines(ax, table, metric, position)
            series: dict[tuple, list[dict[str, Any]]] = {}
            for row in table.rows[table.rows["metric"] == metric].to_dict("records"):
                series.setdefault((row["dataset"], combo_of(row, table.keys)[1:]), []).append(row)
            for i, ((dataset, rest), points) in enumerate(series.items()):
                done = [p for p in points if p["n"] > 0]
                if not done:  # all failed or unfinished: the table counts them
                    continue
                parts = [dataset] if len(table.datasets) > 1 else []
                if rest:
                    parts.append(_combo_label(rest))
                ax.errorbar(
                    [position[_x(p, table.keys)] for p in done],
                    [p["mean"] for p in done],
                    yerr=[0.0 if p["n"] < 2 else p["std"] for p in done],
                    marker="o",
                    capsize=3,
                    color=f"C{i}",
                    label=", ".join(parts) or None,
                )
                refs = [p for p in points if p["ref_metric"] == metric]
                if refs:
                    ax.scatter(
                        [position[_x(p, table.keys)] for p in refs],
                        [p["ref_value"] for p in refs],
                        marker="x",
                        color=f"C{i}",
                        label=f"reference ({refs[0]['ref_metric']})",
                    )
            ax.set_ylabel(label(metric))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(title=", ".join(table.keys[1:]) or None, fontsize=7)
        fig.suptitle(f"SCE ablation: mean ± std over seeds ({', '.join(table.datasets)})")
        return render(fig, "ablation")


def plot_curves(sweeps: Sweeps, table: AblationTable) -> dict[str, bytes]:
    """kNN top-1 and loss vs epoch, one line per swept value (mean over the completed seeds,
    band = ± std), one row of panels per dataset."""
    metrics = [m for m in CURVE_METRICS if m in sweeps.curves.columns] or ["loss"]
    completed = sweeps.runs[sweeps.runs["status"] == "completed"]
    groups = group_runs(completed, table.keys, "dataset")[0]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(4.2 * len(metrics), 3.2 * len(table.datasets)), layout="constrained")
        axes = fig.subplots(len(table.datasets), len(metrics), squeeze=False)
        for row_axes, dataset in zip(axes, table.datasets):
            for ax, metric in zip(row_axes, metrics):
                runs = {combo: groups.get((dataset, combo), []) for combo in table.combos}
                _curve_panel(ax, sweeps, runs, metric)
                ax.set_title(dataset, fontsize=9)
        if axes[0][0].lines:
            axes[0][0].legend(title=", ".join(table.keys) or None, fontsize=7)
        fig.suptitle("Learning curves: mean over seeds (band: ± std)")
        return render(fig, "curves")


def _curve_panel(ax: Axes, sweeps: Sweeps, runs: dict[tuple, list[dict]], metric: str) -> None:
    """``metric`` vs epoch, one line per swept value: the mean over its runs, band ± std."""
    curves, cmap = sweeps.curves, matplotlib.colormaps["viridis"]
    for i, (combo, members) in enumerate(runs.items()):
        part = curves[curves["run_id"].isin([run["run_id"] for run in members])]
        part = part.dropna(subset=[metric])
        if part.empty:
            continue
        curve = part.groupby("epoch")[metric].agg(["mean", "std"]).sort_index()
        color = cmap(0.9 * i / max(len(runs) - 1, 1))
        ax.plot(curve.index, curve["mean"], marker=".", color=color, label=_combo_label(combo))
        band = curve.dropna()
        if not band.empty:
            low, high = band["mean"] - band["std"], band["mean"] + band["std"]
            ax.fill_between(band.index, low, high, color=color, alpha=0.2, linewidth=0)
    if not ax.lines:
        ax.text(0.5, 0.5, "no completed runs", ha="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label(metric))
    ax.grid(alpha=0.3)
