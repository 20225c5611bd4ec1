"""``python -m sce_sweeps.cli COMMAND [args]``: every command of sce_sweeps but the runs and
sweeps themselves (``python -m sce_sweeps [-m +sweep=NAME] [overrides]``). Each command takes
``--help``; none loads more than it needs (``status --help`` loads no torch)."""

from __future__ import annotations

import importlib
import sys

PROG = "python -m sce_sweeps.cli"

# name -> (module:function taking argv, what it does)
COMMANDS = {
    "status": (
        "sce_sweeps.runtime.status:main",
        "each job of a sweep: done, running, pending, failed, interrupted, pruned",
    ),
    "resume": ("sce_sweeps.runtime.resume:main", "rerun a sweep's failed and unfinished jobs"),
    "trials": ("sce_sweeps.runtime.search:main", "the trials of an Optuna search"),
    "table": ("sce_sweeps.analysis.cli:table_main", "the ablation table (.md, .tex, .csv)"),
    "plot": ("sce_sweeps.analysis.cli:plot_main", "plots: metric vs swept value, curves"),
    "collect": ("sce_sweeps.analysis.cli:collect_main", "runs.csv and curves.csv"),
    "linear": ("sce_sweeps.engine.linear:main", "linear evaluation of one finished run"),
    "merge": ("sce_sweeps.runtime.tracking:main", "gather run dirs' Aim runs into the sweep's"),
}


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
        if argv:  # argparse's default prog, for the commands that take it
            sys.argv[0] = f"{PROG} {argv[0]}"
    if not argv or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        if argv and not asked:
            print(f"{PROG}: unknown command {argv[0]!r}", file=sys.stderr)
        out = sys.stdout if asked else sys.stderr
        print(f"usage: {PROG} COMMAND [args]  (COMMAND --help for its own)\n\ncommands:", file=out)
        for name, (_, what) in COMMANDS.items():
            print(f"  {name:<8} {what}", file=out)
        return 0 if asked else 2
    module, _, function = COMMANDS[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module), function)(argv[1:]) or 0


if __name__ == "__main__":
    raise SystemExit(main())
