"""An evaluation metric against minutes of training, beside its baselines: how far a schedule
is from beating random initialisation and raw pixels.

    python scripts/learning_curve.py SWEEP_OR_RUN_DIR [...] [--metric M] [--out PNG]

Reads the runs with ``sce_sweeps.analysis.collect`` (``metrics.jsonl``: ``elapsed_s`` and the
metric per evaluated epoch; ``result.json``: its baselines ``<metric>_init`` and
``<metric>_pixels``), draws one line per run from its random-init value at minute 0 (minutes
of training on the x axis, as measured, so they depend on the machine and its load; or
epochs, with ``--x epoch``) with the baselines as dashed lines, saves the PNG and prints the
numbers as a Markdown table. The metric defaults to the linear probe's ``probe_top1`` where
the runs have it, else ``knn_top1``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

from sce_sweeps.analysis.collect import collect
from sce_sweeps.analysis.tables import BASELINE_SUFFIXES, label
from sce_sweeps.runtime.tables import format_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--metric", help="default: probe_top1 where recorded, else knn_top1")
    parser.add_argument("--x", choices=("minutes", "epoch"), default="minutes", help="x axis")
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"))
    args = parser.parse_args()
    sweeps = collect(args.sweep_dirs)
    runs = sweeps.runs[sweeps.runs["status"] == "completed"]
    metric = args.metric or ("probe_top1" if "probe_top1" in sweeps.curves else "knn_top1")
    curves = sweeps.curves.dropna(subset=[metric])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    rows = [f"| run | swept | seed | epoch | minutes | {label(metric)} |"]
    rows.append("|---|---|---|--:|--:|--:|")
    for i, run in enumerate(runs.to_dict("records")):
        points = curves[curves["run_id"] == run["run_id"]].sort_values("epoch")
        swept = ", ".join(f"{k}={format_value(run[k])}" for k in sweeps.swept) or "-"
        minutes = points["elapsed_s"] / 60
        start = [run[f"{metric}_init"]] if f"{metric}_init" in run else []  # at minute 0
        ax.plot(
            [0.0] * len(start) + list(minutes if args.x == "minutes" else points["epoch"]),
            start + list(points[metric]),
            marker="o",
            color=f"C{i}",
            label=f"{swept}, seed {run['seed']}",
        )
        for point, m in zip(points.to_dict("records"), minutes):
            rows.append(
                f"| {run['run']} | {swept} | {run['seed']} | {point['epoch']} | {m:.1f} "
                f"| {point[metric]:.2f} |"
            )
    for j, (suffix, name) in enumerate(BASELINE_SUFFIXES.items()):
        key = metric + suffix
        if key in runs and runs[key].notna().any():
            value = runs[key].mean()
            ax.axhline(value, color="0.4", linestyle="--" if j == 0 else ":", label=name)
            rows.append(f"| {name} | | | | | {value:.2f} |")
    ax.set_xlabel(
        "minutes of training (wall clock, as measured)" if args.x == "minutes" else "epoch"
    )
    ax.set_ylabel(label(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, metadata={"Software": None})
    print("\n".join(rows))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
