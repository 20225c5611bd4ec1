"""``python -m sce_sweeps.cli table|plot|collect`` (the scripts in ``analysis/``): each reads
and checks all of its input and renders all outputs before writing any (atomically), so bad
input prints one line and exits 1 without writing anything."""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from collections.abc import Callable
from pathlib import Path

from sce_sweeps.analysis.collect import AnalysisError, Sweeps, collect
from sce_sweeps.analysis.references import REFERENCE_FILE, load_references
from sce_sweeps.analysis.tables import AblationTable, ablation_table, to_csv, to_latex, to_markdown
from sce_sweeps.runtime.record import atomic_write

Outputs = dict[str, str | bytes]


def write_outputs(out_dir: Path, files: Outputs) -> list[Path]:
    """Write ``files`` (name -> content) into ``out_dir``, each atomically."""
    with contextlib.ExitStack() as staged:  # renamed into place once all are written
        for name, data in files.items():
            f = staged.enter_context(atomic_write(out_dir / name))
            f.write(data.encode() if isinstance(data, str) else data)
    return [out_dir / name for name in files]


def _run(
    argv: list[str] | None,
    description: str,
    build: Callable[[argparse.Namespace], Outputs],
    table_options: bool = True,
) -> int:
    """Parse the command line, build the outputs, write them; 1 with one line on bad input."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "sweep_dirs",
        nargs="+",
        type=Path,
        metavar="SWEEP_DIR",
        help="a sweep dir (run dirs with .hydra/overrides.yaml, optional manifest.json); "
        "several are combined (one column group per dataset)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output dir (default: SWEEP_DIR/analysis; required with several sweep dirs)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole input when a run file is unreadable (default: warn, count "
        "that run as failed and go on with the others)",
    )
    if table_options:
        parser.add_argument(
            "--metric",
            action="append",
            metavar="NAME",
            help="a result.json metric to show; repeat for several; the first picks the best "
            "row (default: knn_top1, its baselines where recorded, and loss)",
        )
        parser.add_argument(
            "--references",
            type=Path,
            default=REFERENCE_FILE,
            metavar="CSV",
            help="reference numbers to show beside the measured ones (default: the package's)",
        )
    args = parser.parse_args(argv)
    out_dir = args.out or args.sweep_dirs[0] / "analysis"
    try:
        if args.out is None and len(args.sweep_dirs) > 1:
            raise AnalysisError("several sweep dirs: say where the combined outputs go with --out")
        paths = write_outputs(out_dir, build(args))
    except AnalysisError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        hint = ""
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            hint = " (read-only file system or no permission): pass --out DIR to write elsewhere"
        print(
            f"{parser.prog}: error: cannot write outputs into {out_dir}{hint}: {e}", file=sys.stderr
        )
        return 1
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _collect(args: argparse.Namespace) -> Sweeps:
    """The sweeps of the command line, with a warning line per unreadable file."""
    sweeps = collect(args.sweep_dirs, strict=args.strict)
    for line in sweeps.unreadable:
        print(f"warning: {line}", file=sys.stderr)
    return sweeps


def _table(args: argparse.Namespace) -> tuple[Sweeps, AblationTable]:
    sweeps = _collect(args)
    return sweeps, ablation_table(sweeps, args.metric, load_references(args.references))


def table_main(argv: list[str] | None = None) -> int:
    """``analysis/ablation_table.py``: ablation.md, ablation.tex, ablation.csv."""

    def build(args: argparse.Namespace) -> Outputs:
        table = _table(args)[1]
        markdown = to_markdown(table)
        print(markdown, end="")
        return {
            "ablation.md": markdown,
            "ablation.tex": to_latex(table),
            "ablation.csv": to_csv(table),
        }

    return _run(
        argv,
        "Ablation table of one or more sweeps: rows = swept values, columns = metrics "
        "(mean ± std over seeds, n, failed and unfinished counts, reference numbers). "
        "Writes ablation.md, ablation.tex (booktabs) and ablation.csv; prints the Markdown.",
        build,
    )


def plot_main(argv: list[str] | None = None) -> int:
    """``analysis/plot_sweep.py``: ablation.{png,svg} and curves.{png,svg}."""

    def build(args: argparse.Namespace) -> Outputs:
        from sce_sweeps.analysis.plots import plot_ablation, plot_curves  # matplotlib: only here

        sweeps, table = _table(args)
        return {**plot_ablation(table), **plot_curves(sweeps, table)}

    return _run(
        argv,
        "Plots of one or more sweeps: each metric vs the swept value with error bars (std "
        "over seeds) and learning curves (kNN top-1 and loss vs epoch) per swept value. "
        "Writes ablation.png/.svg and curves.png/.svg.",
        build,
    )


def collect_main(argv: list[str] | None = None) -> int:
    """``analysis/collect.py``: runs.csv (one row per run) and curves.csv (per epoch)."""

    def build(args: argparse.Namespace) -> Outputs:
        sweeps = _collect(args)
        counts = sweeps.runs["status"].value_counts(sort=False).items()
        runs = ", ".join(f"{n} {status}" for status, n in counts)
        if sweeps.unreadable:
            runs += f" ({sweeps.unreadable_runs} with an unreadable file)"
        print(f"swept keys: {', '.join(sweeps.swept) or 'none'}; runs: {runs}")
        return {
            "runs.csv": sweeps.runs.to_csv(index=False, lineterminator="\n"),
            "curves.csv": sweeps.curves.to_csv(index=False, lineterminator="\n"),
        }

    return _run(
        argv,
        "Collect one or more sweeps into tidy CSV files: runs.csv (one row per run: status, "
        "swept keys, metrics, flattened config) and curves.csv (one row per run and epoch).",
        build,
        table_options=False,
    )
