"""kNN top-1 against minutes of training, beside the baselines: how far a schedule is from
beating random initialisation and raw pixels.

    python scripts/learning_curve.py SWEEP_DIR [SWEEP_DIR...] [--out PNG]

Reads the runs with ``sce_sweeps.analysis.collect`` (``metrics.jsonl``: ``elapsed_s`` and
``knn_top1`` per evaluated epoch; ``result.json``: ``knn_top1_init``, ``knn_top1_pixels``),
draws one line per run from its random-init kNN at minute 0 (minutes of training on the x
axis, as measured, so they depend on the machine and its load) with the baselines as dashed
lines, saves the PNG and prints the numbers as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sce_sweeps.analysis.collect import collect  # noqa: E402
from sce_sweeps.analysis.tables import format_value  # noqa: E402

BASELINES = {"knn_top1_init": "random init", "knn_top1_pixels": "raw pixels"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("learning_curve.png"))
    args = parser.parse_args()
    sweeps = collect(args.sweep_dirs)
    runs = sweeps.runs[sweeps.runs["status"] == "completed"]
    curves = sweeps.curves.dropna(subset=["knn_top1"])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    rows = ["| run | swept | seed | epoch | minutes | kNN top-1 (%) |", "|---|---|---|--:|--:|--:|"]
    for i, run in enumerate(runs.to_dict("records")):
        points = curves[curves["run_id"] == run["run_id"]].sort_values("epoch")
        swept = ", ".join(f"{k}={format_value(run[k])}" for k in sweeps.swept) or "-"
        minutes = points["elapsed_s"] / 60
        start = [run["knn_top1_init"]] if "knn_top1_init" in run else []  # at minute 0
        ax.plot(
            [0.0] * len(start) + list(minutes),
            start + list(points["knn_top1"]),
            marker="o",
            color=f"C{i}",
            label=f"{swept}, seed {run['seed']}",
        )
        for point, m in zip(points.to_dict("records"), minutes):
            rows.append(
                f"| {run['run']} | {swept} | {run['seed']} | {point['epoch']} | {m:.1f} "
                f"| {point['knn_top1']:.2f} |"
            )
    for j, (key, name) in enumerate(BASELINES.items()):
        if key in runs and runs[key].notna().any():
            value = runs[key].mean()
            ax.axhline(value, color="0.4", linestyle="--" if j == 0 else ":", label=name)
            rows.append(f"| {name} | | | | | {value:.2f} |")
    ax.set_xlabel("minutes of training (wall clock, as measured)")
    ax.set_ylabel("kNN top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120, metadata={"Software": None})
    print("\n".join(rows))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
