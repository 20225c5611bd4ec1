"""Start-up of a job: from launch to the end of the first training step, stage by stage.

Each repeat spawns a real ``python -m sce_sweeps`` job (the embedded default unless overrides
are given) in a fresh process and timestamps its stages from outside the product code: a
small bootstrap wraps the functions that end each stage, runs the app's own command line
(``sce_sweeps.app.cli``), and exits right after the first training step. Stages:

- interpreter: spawn to the first line of Python (interpreter and ``site`` start-up);
- import: ``sce_sweeps.app`` and the training engine it loads for a job (torch, torchvision,
  Hydra, the package);
- compose: Hydra's start-up until the task function runs (plugin discovery, composition,
  validation callback, run dir, logging);
- tracker: the run's tracker (``tracker=aim`` imports Aim and opens the run's repo);
- datasets: the datasets, views and loaders (all the trainer builds before the model);
- model: building the model (``build_model``);
- knn_init: an evaluation before the first step (none since the baselines are evaluated after
  training; kept to compare with earlier versions, which evaluated the random-init kNN here);
- first_step: data loading and the first training step.

Each row is the median over the repeats, with the share of the total. With ``--warm`` a second
column starts the same job as a local sweep's job starts by default: forked from the launcher's
warm-start server (``hydra.launcher.preload`` of ``conf/launcher/local.yaml``; see
``hydra_plugins/sce_sweeps_launchers/warm.py``), already started, through the job's client
(its interpreter is the "interpreter" stage; the preloaded imports are not repeated).
Two more tables put
this in proportion:

- commands that train nothing (``--help``, a dry run of a sweep, the analysis table's
  ``--help``), beside two floors measured in the same way: a bare interpreter, and
  ``import torch, torchvision`` (what every training job must load); a command that trains
  nothing should sit near the first floor, not above the second;
- ``import`` of each heavy dependency in a fresh interpreter: what a job pays for what it
  imports.

Usage::

    python benchmarks/startup.py                       # the embedded default, 3 repeats
    python benchmarks/startup.py --repeats 5 tracker=none model=resnet18_tiny
    python benchmarks/startup.py --skip job            # only the commands and the imports
    python benchmarks/startup.py --warm --skip commands --skip imports   # cold and warm jobs
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("interpreter", "import", "compose", "tracker", "datasets", "model", "knn_init")
STAGES += ("first_step",)

# Runs in the job's process: wraps the stage-ending functions, then the app's command line.
BOOTSTRAP = r"""
import json, os, sys, time
marks = {"interpreter": time.time()}
import sce_sweeps.app as app
from sce_sweeps.runtime import tracking
from sce_sweeps.engine import train
marks["import"] = time.time()

# the first call of the wrapped fn ends stage `starts` when it begins, `stage` when it returns
def done(stage, fn, starts=None):
    def wrapped(*args, **kwargs):
        if starts:
            marks.setdefault(starts, time.time())
        out = fn(*args, **kwargs)
        if stage:
            marks.setdefault(stage, time.time())
        if stage == "first_step":
            with open(os.environ["SCE_STARTUP_MARKS"], "w") as f:
                json.dump(marks, f)
            os._exit(0)
        return out
    return wrapped

app.run = done(None, app.run, starts="compose")
tracking.make_tracker = done("tracker", tracking.make_tracker)
train.build_model = done("model", train.build_model, starts="datasets")
train.evaluate = done("knn_init", train.evaluate)
train.train_step = done("first_step", train.train_step)
sys.argv = ["sce_sweeps", *sys.argv[1:]]
app.cli()
"""

DEPENDENCIES = ("torch", "torchvision", "hydra", "omegaconf", "numpy", "tqdm")
DEPENDENCIES += ("aim", "optuna", "pandas", "matplotlib", "submitit", "sce_sweeps.app")


def warm_server() -> Any:
    """A warm-start server that preloads what the local launcher's preloads for a job."""
    from omegaconf import OmegaConf

    from hydra_plugins.sce_sweeps_launchers import warm

    local = OmegaConf.load(ROOT / "conf" / "launcher" / "local.yaml")
    server = warm.Server([*warm.JOB_MODULES, *local.hydra.launcher.preload])
    if not server.ready():
        raise SystemExit("the warm-start server failed to import its modules")
    return server


def one_job(overrides: list[str], workdir: Path, python: list[str]) -> dict[str, float]:
    """Seconds spent in each stage of one job started now by ``python`` (an interpreter, or
    the client of a warm-start server)."""
    marks_file = workdir / "marks.json"
    marks_file.unlink(missing_ok=True)
    run_dir = workdir / "run"
    env = {**os.environ, "SCE_STARTUP_MARKS": str(marks_file)}
    argv = [*python, "-c", BOOTSTRAP, f"hydra.run.dir={run_dir}", *overrides]
    start = time.time()
    proc = subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True)
    if not marks_file.is_file():
        raise SystemExit(
            f"the job ended before its first step (exit {proc.returncode}):\n" + proc.stderr[-3000:]
        )
    marks = json.loads(marks_file.read_text())
    times, previous = {}, start
    for stage in STAGES:
        if stage in marks:
            times[stage] = marks[stage] - previous
            previous = marks[stage]
    times["total"] = previous - start
    return times


def import_seconds(module: str, repeats: int) -> float:
    """Median wall time of ``import module`` in a fresh interpreter, start-up excluded."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(runs)


COMMANDS = {
    "floor: python -c pass": ["-c", "pass"],
    "floor: import torch, torchvision": ["-c", "import torch, torchvision"],
    "python -m sce_sweeps --help": ["-m", "sce_sweeps", "--help"],
    "dry run of +sweep=lambda_ablation, launcher=slurm": [
        *("-m", "sce_sweeps", "-m", "+sweep=lambda_ablation", "seed=0"),
        *("launcher=slurm", "cluster=example_gpu", "hydra.launcher.dry_run=true"),
    ],
    "the same, launcher=local (counts this machine's GPUs with torch)": [
        *("-m", "sce_sweeps", "-m", "+sweep=lambda_ablation", "seed=0"),
        "hydra.launcher.dry_run=true",
    ],
    "python analysis/ablation_table.py --help": [
        str(ROOT / "analysis" / "ablation_table.py"),
        "--help",
    ],
}


def command_seconds(args: list[str], cwd: Path) -> float:
    """Wall time of ``python ARGS`` to its exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="jobs to start (default 3)")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=("job", "commands", "imports"),
        help="leave a table out (repeatable)",
    )
    parser.add_argument(
        "--warm", action="store_true", help="also start each job from a warm-start server"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the job")
    args = parser.parse_args(argv)
    n = args.repeats

    with tempfile.TemporaryDirectory(prefix="sce_startup_") as tmp:
        if "job" not in args.skip:
            starts = {"cold": [sys.executable]}
            server = warm_server() if args.warm else None
            if server is not None:
                starts["warm"] = shlex.split(server.python())
            medians = {}
            for start, python in starts.items():
                runs = [one_job(args.overrides, Path(tmp), python) for _ in range(n)]
                # a stage that a run skipped (a baseline read from its cache) took it 0 s
                seen = [k for k in (*STAGES, "total") if any(k in r for r in runs)]
                medians[start] = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in seen}
            if server is not None:
                server.stop()
            given = " ".join(args.overrides) or "none"
            print(f"job start-up to the end of its first step, median of {n} (overrides: {given})")
            print("| stage | " + " | ".join(f"{k} s | share" for k in medians) + " |")
            print("|---|" + "---:|---:|" * len(medians))
            for stage in medians["cold"]:
                cells = [
                    f"{m.get(stage, 0.0):.2f} | {m.get(stage, 0.0) / m['total']:.0%}"
                    for m in medians.values()
                ]
                print(f"| {stage} | " + " | ".join(cells) + " |")
        if "commands" not in args.skip:
            print(f"\ncommands that train nothing, wall time, median of {n}")
            print("| command | s |\n|---|---:|")
            for name, command in COMMANDS.items():
                seconds = statistics.median(command_seconds(command, Path(tmp)) for _ in range(n))
                print(f"| {name} | {seconds:.2f} |")
    if "imports" not in args.skip:
        print(f"\nimport in a fresh interpreter, median of {n}")
        print("| module | s |\n|---|---:|")
        for module in DEPENDENCIES:
            print(f"| {module} | {import_seconds(module, n):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
