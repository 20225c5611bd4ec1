"""Asynchronous vs batch-synchronous Optuna search: the same trials, the same parallelism.

Runs one set of trials with uneven, known durations (trial n sleeps ``durations[n]`` seconds)
twice through the real sweeper (``hydra/sweeper=sce_optuna``) and a real launcher
(hydra-submitit-launcher's ``submitit_local``, or ``submitit_slurm`` on a cluster):

* async: the sweeper as shipped; with parallelism P a new trial starts as soon as any ends;
* batch: the loop of Hydra's Optuna sweeper (hydra-optuna-sweeper): ask P trials, launch them
  as one batch, wait for all of them, tell, repeat. Each batch waits for its slowest trial.

Both use the random sampler with the same seed, so trial n has the same parameters and the
same duration in both runs. Prints the wall time of each search (first trial start to last
trial end, from the study, and of the whole command) and their ratio::

    python benchmarks/optuna_async.py                      # 12 trials, P=3, 1-20 s each
    python benchmarks/optuna_async.py --trials 24 --parallel 4 --launcher slurm

The trials only sleep, so the figures measure scheduling, not training.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the repo's hydra_plugins and sce_sweeps
    sys.path.insert(0, str(ROOT))

APP_FLAG = "--hydra-app"  # this file re-run as the Hydra app of one search


# ------------------------------------------------------------------ the Hydra app


def sleep_task(cfg: Any) -> float:
    """Trial n sleeps durations[n] seconds; the objective is a smooth function of x."""
    import os

    from sce_sweeps.runtime.trial import ENV_TRIAL  # the job's trial number

    time.sleep(float(cfg.durations[int(os.environ[ENV_TRIAL])]))
    return -((float(cfg.x) - 0.3) ** 2)


def batch_optimize(self: Any, study: Any) -> None:
    """The batch-synchronous baseline (hydra-optuna-sweeper's loop), on the same sweeper."""
    from hydra_plugins.sce_sweeps_optuna._impl import counted_trials

    distributions = {k: p.distribution for k, p in self.space.items()}
    self._workers = self.n_jobs  # what the sweeper's own optimize sets: a batch's size
    while True:
        done = len(counted_trials(study.get_trials(deepcopy=False)))
        size = min(self.n_jobs, self.n_trials - done)
        if size <= 0:
            return
        trials = [study.ask(distributions) for _ in range(size)]
        start = time.monotonic()
        returns = self.launcher.launch(
            [self._overrides(t) for t in trials], initial_job_idx=trials[0].number
        )
        for trial, ret in zip(trials, returns):
            self._settle(study, trial, ret.return_value, None, 0.0)
        print(f"batch of {size} took {time.monotonic() - start:.1f} s", flush=True)


def run_app(mode: str) -> None:
    """``python optuna_async.py --hydra-app async|batch -m <overrides>``."""
    import hydra
    from hydra.core.config_store import ConfigStore

    from hydra_plugins.sce_sweeps_optuna._impl import AsyncOptunaSweeper

    if mode == "batch":
        AsyncOptunaSweeper.optimize = batch_optimize  # type: ignore[method-assign]
    ConfigStore.instance().store(
        name="optuna_async_bench",
        node={
            "x": 0.0,
            "durations": [],
            "sweep_name": "optuna_async_bench",
        },
    )
    hydra.main(version_base="1.3", config_path=None, config_name="optuna_async_bench")(sleep_task)()


# ------------------------------------------------------------------ the benchmark


def durations_for(n: int, low: float, high: float, seed: int) -> list[float]:
    """Uneven durations: log-uniform in [low, high], seeded."""
    rng = random.Random(seed)
    return [round(low * (high / low) ** rng.random(), 2) for _ in range(n)]


def search(mode: str, args: argparse.Namespace, durations: list[float], out: Path) -> dict:
    """Run one search in a subprocess; return its wall times."""
    import optuna

    sweep_dir = out / mode
    launcher = (
        ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30"]
        if args.launcher == "local"
        else [
            "hydra/launcher=submitit_slurm",
            f"hydra.launcher.partition={args.partition}",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=30",
        ]
    )
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        APP_FLAG,
        mode,
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/sweeper=sce_optuna",
        "hydra.sweeper.study_name=optuna_async_bench",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.n_jobs={args.parallel}",
        "hydra/sweeper/sampler=random",
        f"hydra.sweeper.sampler.seed={args.seed}",
        "hydra.sweeper.pruner=none",
        "x=interval(0,1)",
        "durations=[" + ",".join(str(d) for d in durations) + "]",
        *launcher,
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    command_s = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{mode} search failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (out / f"{mode}.log").write_text(proc.stdout + proc.stderr)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="optuna_async_bench", storage=storage).trials
    states = {t.state.name for t in trials}
    assert states == {"COMPLETE"} and len(trials) == args.trials, (states, len(trials))
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return {"search_s": (last - first).total_seconds(), "command_s": command_s, "busy_s": busy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=3, help="P, trials at once")
    parser.add_argument("--min-s", type=float, default=1.0, help="shortest trial (s)")
    parser.add_argument("--max-s", type=float, default=20.0, help="longest trial (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launcher", choices=("local", "slurm"), default="local")
    parser.add_argument("--partition", default="debug", help="SLURM partition")
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here")
    args = parser.parse_args(argv)

    durations = durations_for(args.trials, args.min_s, args.max_s, args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="optuna_async_"))
    out.mkdir(parents=True, exist_ok=True)
    total = sum(durations)
    batches = [durations[i : i + args.parallel] for i in range(0, len(durations), args.parallel)]
    print(
        f"{args.trials} trials, P={args.parallel}, launcher {args.launcher}; sleeps "
        f"{min(durations):.1f}-{max(durations):.1f} s, sum {total:.1f} s; ideal: "
        f"async >= {total / args.parallel:.1f} s, batch = {sum(max(b) for b in batches):.1f} s "
        "(plus job start-up)"
    )
    results = {mode: search(mode, args, durations, out) for mode in ("async", "batch")}
    print(f"{'':6} {'search s':>9} {'command s':>10} {'trial spans s':>14}")
    for mode, r in results.items():
        print(f"{mode:6} {r['search_s']:9.1f} {r['command_s']:10.1f} {r['busy_s']:14.1f}")
    ratio = results["batch"]["search_s"] / results["async"]["search_s"]
    print(f"batch / async wall time of the search: {ratio:.2f}x  (sweeps in {out})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == APP_FLAG:
        mode = sys.argv[2]
        del sys.argv[1:3]
        run_app(mode)
    else:
        sys.exit(main())
