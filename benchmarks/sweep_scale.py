"""How the orchestration of a sweep grows with its number of jobs (100, 300, 1,000).

    python benchmarks/sweep_scale.py --jobs 100 300 1000 --launchers local slurm

For each size N it prints one row:

* **launch s**: the wall time of ``python stub_app.py -m ...`` through the project's launcher
  (``hydra/launcher=sce_local`` or ``sce_slurm``, ``hydra/sweeper=sce_grid``: composing and
  validating, the manifest, submitting and watching every job) for N trivial jobs, and of the
  same N jobs submitted with submitit alone (**baseline s**: the executor's and SLURM's own
  cost, for a job that runs a plain function);
* **stock s** (with ``--stock``): the same stub sweep through hydra-submitit-launcher itself
  (``hydra/launcher=submitit_local`` or ``submitit_slurm``, Hydra's basic sweeper), the launcher
  a Hydra user would otherwise take; its local launcher starts every job at once (it has no
  limit), so keep N small there; **vs stock ms**: (launch - stock) / N;
* **per-job ms**: (launch - baseline) / N. On a shared 2-core machine this wall time is
  mostly the jobs' own: each job starts Python, imports Hydra and runs Hydra's ``run_job``
  (about 1 CPU s) where the baseline's job only unpickles a function;
* **CPU s** / **per-job CPU ms**: the CPU time of the launching process itself (the stub app's
  main process, its jobs excluded; for the baseline, this process during the baseline), and
  (launch CPU - baseline CPU) / N: the orchestration cost per job, steady under other load;
* **save ms**: one save of the N-job manifest (``record.Manifest.save``); while jobs start
  and end, the launcher saves it at most once a poll (``hydra.launcher.poll_s``) and at most
  once every 20 saves' time (at most 5% of its time), except right after a SLURM submission;
* **status s** / **table s**: ``sweep_status`` and the ablation table (``table_main``) of the
  N-job sweep, in this process (``status CLI s`` / ``table CLI s``: the commands, start-up
  included), as wall time (CPU time);
* **Aim gather s**: ``python -m sce_sweeps.cli merge`` of M runs (``--aim-runs``, their
  private repos made beforehand), and the cost per run, first and last tenth of the merges.

A trivial job is a stub Hydra app written by this script: it writes ``result.json`` (through
``sce_sweeps.record.write_result``) and one ``metrics.jsonl`` row into its run dir and
returns a float; it is launched through the real launchers. ``--launchers none`` skips the
launches and measures status and table on a sweep dir of N run dirs written directly as a
sweep of the SCE app leaves them (its full config with its interpolations, hydra.yaml,
result.json, metrics.jsonl), with the manifest the launcher would have left; a launched stub
sweep's run dirs hold the stub's much smaller config.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STUB_APP = """
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from sce_sweeps.runtime import record
from sce_sweeps.runtime.overrides import flatten


@hydra.main(version_base="1.3", config_path=None, config_name="stub")
def main(cfg) -> float:
    run_dir = HydraConfig.get().runtime.output_dir
    value = 50.0 + 10 * float(cfg.loss.coeff) + 0.1 * int(cfg.seed)
    (Path(run_dir) / record.METRICS).write_text(
        '{"epoch": 1, "loss": 1.0, "knn_top1": %s}\\n' % value
    )
    record.write_result(
        run_dir,
        {"status": "completed", "knn_top1": value, "loss": 1.0, "epochs": 1, "seed": int(cfg.seed),
         "overrides": list(HydraConfig.get().overrides.task), "wall_time_s": 0.0,
         "params": flatten(OmegaConf.to_container(cfg, resolve=True))},  # as the app records
    )
    return value


def _report_cpu():  # the launching process's own CPU time, its jobs excluded
    import resource
    import sys
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"SCALE_CPU_S={usage.ru_utime + usage.ru_stime}", file=sys.stderr)


if __name__ == "__main__":
    import atexit
    from hydra.core.config_store import ConfigStore

    atexit.register(_report_cpu)

    ConfigStore.instance().store(
        name="stub", node={"loss": {"coeff": 0.5}, "seed": 0, "sweep_name": "scale"}
    )
    main()
"""


def grid(n: int) -> list[str]:
    """Overrides giving n jobs: coefficients x seeds."""
    seeds = 5 if n % 5 == 0 else 1
    coeffs = n // seeds
    values = ",".join(f"{i / coeffs:.4f}" for i in range(coeffs))
    return [f"loss.coeff={values}", f"seed={','.join(str(s) for s in range(seeds))}"]


def launch(
    app: Path, sweep_dir: Path, n: int, launcher: str, parallel: int, sweeper: str = "sce_grid"
) -> tuple[float, float]:
    """(wall s, CPU s of the launching process) of the stub sweep through the project's
    launcher."""
    cmd = [sys.executable, str(app), "-m", *grid(n), f"hydra.sweep.dir={sweep_dir}"]
    cmd += [f"hydra/launcher=sce_{launcher}", f"hydra/sweeper={sweeper}"]
    cmd += ["hydra.launcher.poll_s=0.2"]
    if launcher == "local":
        cmd += [f"hydra.launcher.max_parallel={parallel}"]
    else:
        cmd += ["hydra.launcher.partition=debug", "hydra.launcher.timeout_min=10",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                f"hydra.launcher.array_parallelism={parallel}"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=app.parent, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the sweep failed:\n{proc.stderr[-3000:]}")
    cpu = [line for line in proc.stderr.splitlines() if line.startswith("SCALE_CPU_S=")]
    return wall, float(cpu[-1].split("=")[1])


def stock(app: Path, sweep_dir: Path, n: int, launcher: str, parallel: int) -> float:
    """Wall s of the stub sweep through hydra-submitit-launcher's own launcher."""
    cmd = [sys.executable, str(app), "-m", *grid(n), f"hydra.sweep.dir={sweep_dir}"]
    cmd += [f"hydra/launcher=submitit_{launcher}", "hydra/sweeper=basic"]
    cmd += ["hydra.launcher.timeout_min=10"]
    if launcher == "slurm":
        cmd += ["hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1"]
        cmd += ["hydra.launcher.mem_gb=1", f"hydra.launcher.array_parallelism={parallel}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=app.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the stock sweep failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def _trivial(x: float) -> float:
    return x


def _cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline(folder: Path, n: int, launcher: str, parallel: int) -> tuple[float, float]:
    """(wall s, CPU s of this process) for submitit alone to run n trivial jobs (the
    executor's and SLURM's cost)."""
    import submitit

    start, cpu = time.perf_counter(), _cpu()
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=10)
        running = []
        for i in range(n):  # at most `parallel` at once, as the local launcher
            while len([j for j in running if not j.done()]) >= parallel:
                time.sleep(0.05)
            running.append(executor.submit(_trivial, float(i)))
        jobs = running
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        executor.update_parameters(slurm_partition="debug", timeout_min=10, cpus_per_task=1,
                                   mem_gb=1, slurm_array_parallelism=parallel)  # fmt: skip
        jobs = executor.map_array(_trivial, [float(i) for i in range(n)])
    for job in jobs:
        job.result()
    return time.perf_counter() - start, _cpu() - cpu


def _app_config_files() -> tuple[dict, str, dict]:
    """The SCE app's default config (unresolved, as Hydra saves a run's
    ``.hydra/config.yaml``), its ``.hydra/hydra.yaml`` text and the params its result.json
    records (resolved, flat, with the group choices): what real run dirs hold."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from sce_sweeps.app import CONF_DIR
    from sce_sweeps.config import run_config
    from sce_sweeps.runtime.overrides import flatten

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    hydra = OmegaConf.to_yaml({"hydra": cfg.hydra})
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    container = OmegaConf.to_container(cfg, enum_to_str=True)
    return container, hydra, {**flatten(run_config(cfg)), **choices}


def fake_sweep(sweep_dir: Path, n: int) -> None:
    """N run dirs as a sweep of the SCE app leaves them (its full config, with its
    interpolations, and hydra.yaml), and the manifest the launcher would have left, written
    directly."""
    import yaml

    from sce_sweeps.runtime import record

    config, hydra_yaml, params = _app_config_files()
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    overrides = [[f"loss.coeff={i // 5 / (n // 5):.4f}", f"seed={i % 5}"] for i in range(n)]
    manifest = record.Manifest.create(sweep_dir, "scale", "local")
    for num, over in enumerate(overrides):
        run_dir = sweep_dir / str(num)
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(over))
        config["loss"]["coeff"], config["seed"] = float(over[0].split("=")[1]), num % 5
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.dump(config, Dumper=dumper))
        (run_dir / ".hydra" / "hydra.yaml").write_text(hydra_yaml)
        value = 50.0 + num * 0.01
        (run_dir / record.METRICS).write_text(json.dumps({"epoch": 1, "knn_top1": value}) + "\n")
        record.write_result(run_dir, {"status": "completed", "knn_top1": value, "loss": 1.0,
                                        "epochs": 1, "seed": num % 5, "overrides": over,
                                        "config_hash": "h", "params": {**params,
                                        "loss.coeff": config["loss"]["coeff"],
                                        "seed": num % 5}})  # fmt: skip
        job = record.Job(num, over, "h", str(num), state="completed", job_ids=[str(num)])
        manifest.jobs.append(job)
    manifest.save()


def manifest_save(sweep_dir: Path, n: int, repeat: int = 20) -> float:
    """Milliseconds for one save of the n-job manifest; the launcher saves it at most once a
    poll (``hydra.launcher.poll_s``), whatever the number of jobs that started or ended."""
    from sce_sweeps.runtime import record

    manifest = record.Manifest.load(sweep_dir)
    assert manifest is not None and len(manifest.jobs) == n
    start = time.perf_counter()
    for i in range(repeat):
        manifest.jobs[i % n].reason = "x"
        manifest.save()
    return (time.perf_counter() - start) / repeat * 1000


def status_time(sweep_dir: Path) -> tuple[float, float]:
    """(wall s, CPU s) of ``sweep_status`` of the sweep, in this process."""
    from sce_sweeps.runtime import record
    from sce_sweeps.runtime.status import sweep_status

    start, cpu = time.perf_counter(), _cpu()
    statuses = sweep_status(record.Manifest.load(sweep_dir))
    elapsed = time.perf_counter() - start, _cpu() - cpu
    states = {s.state.value for s in statuses}
    assert states == {"completed"}, states
    return elapsed


def table_time(sweep_dir: Path) -> tuple[float, float]:
    """(wall s, CPU s) of the ablation table of the sweep, in this process."""
    from sce_sweeps.analysis.cli import table_main

    out = Path(tempfile.mkdtemp())
    start, cpu = time.perf_counter(), _cpu()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = table_main([str(sweep_dir), "--out", str(out)])
    elapsed = time.perf_counter() - start, _cpu() - cpu
    shutil.rmtree(out, ignore_errors=True)
    assert code == 0, code
    return elapsed


def cli_time(*args: str) -> tuple[float, float]:
    """(wall s, CPU s) of ``python -m ARGS``, start-up included."""
    import resource

    def children() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    start, cpu = time.perf_counter(), children()
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start, children() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"python -m {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


MAKE_RUNS = """
import sys
from pathlib import Path
from aim import Run
base, first, last = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for k in range(first, last):
    run = Run(repo=str(base / str(k) / "aim"), system_tracking_interval=None,
              capture_terminal_logs=False, log_system_params=False)
    run["job"] = {"num": k}
    for step in range(100):
        run.track(float(step), name="loss", step=step, context={"subset": "train"})
    run.close()
"""


def aim_gather(work: Path, runs: int) -> tuple[float, float, float]:
    """(total s, s per run over the first tenth, over the last tenth) of merging ``runs``
    private repos into one shared repo, one merge after the other, as jobs ending would."""
    sweep = work / "aim_sweep"
    sweep.mkdir()
    subprocess.run([sys.executable, "-c", MAKE_RUNS, str(sweep), "0", str(runs)], check=True)
    from sce_sweeps.runtime.tracking import MERGE_TIMEOUT_S, merge_run, only_run

    times = []
    for k in range(runs):
        run_repo = sweep / str(k) / "aim"
        start = time.perf_counter()
        merge_run(run_repo, only_run(run_repo), sweep / "aim", MERGE_TIMEOUT_S)
        times.append(time.perf_counter() - start)
    tenth = max(1, runs // 10)
    return sum(times), sum(times[:tenth]) / tenth, sum(times[-tenth:]) / tenth


def _cell(value: object) -> str:
    if isinstance(value, tuple):  # (wall, CPU)
        return f"{value[0]:.2f} ({value[1]:.2f})"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--launchers", nargs="+", default=["local", "slurm"],
                        choices=["local", "slurm", "none"])  # fmt: skip
    parser.add_argument("--parallel", type=int, default=8, help="jobs at once")
    parser.add_argument("--aim-runs", type=int, default=100, help="0: skip the Aim gather")
    parser.add_argument("--sweeper", default="sce_grid",
                        help="hydra/sweeper of the launches (basic: Hydra's, which composes "
                        "each job once more to check it)")  # fmt: skip
    parser.add_argument(
        "--stock", action="store_true", help="also launch through hydra-submitit-launcher's"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep_scale_"))
    app = work / "stub_app.py"
    app.write_text(STUB_APP)
    print(f"# {os.cpu_count()} CPUs; trivial jobs = a stub Hydra app writing result.json; "
          f"{args.parallel} at once; work dir {work}")  # fmt: skip
    head = ("launcher", "jobs", "launch s", "baseline s", "per-job ms", "CPU s", "baseline CPU s",
            "per-job CPU ms", "save ms", "status s", "table s", "status CLI s",
            "table CLI s", "stock s", "vs stock ms")  # fmt: skip
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    try:
        for launcher in args.launchers:
            for n in args.jobs:
                sweep_dir = work / f"{launcher}_{n}"
                plain = float("nan")  # the stock launcher's wall s, when measured
                if launcher == "none":
                    fake_sweep(sweep_dir, n)
                    wall = base = cpu = base_cpu = float("nan")
                else:
                    wall, cpu = launch(app, sweep_dir, n, launcher, args.parallel, args.sweeper)
                    base, base_cpu = baseline(work / f"base_{launcher}_{n}", n, launcher,
                                              args.parallel)  # fmt: skip
                    if args.stock:
                        plain = stock(app, work / f"stock_{launcher}_{n}", n, launcher,
                                      args.parallel)  # fmt: skip
                saves = manifest_save(sweep_dir, n)
                status, table = status_time(sweep_dir), table_time(sweep_dir)
                status_cli = cli_time("sce_sweeps.cli", "status", str(sweep_dir), "--json")
                table_cli = cli_time("sce_sweeps.cli", "table", str(sweep_dir), "--out",
                                     str(work / "tables"))  # fmt: skip
                per_job, per_job_cpu = (wall - base) / n * 1000, (cpu - base_cpu) / n * 1000
                row = (launcher, n, wall, base, per_job, cpu, base_cpu, per_job_cpu, saves, status,
                       table, status_cli, table_cli, plain, (wall - plain) / n * 1000)  # fmt: skip
                print(" | ".join(_cell(v) for v in row), flush=True)
        if args.aim_runs:
            total, first, last = aim_gather(work, args.aim_runs)
            print(f"\nAim gather of {args.aim_runs} runs (100 steps each): {total:.1f} s, "
                  f"{first * 1000:.0f} ms/run over the first tenth, {last * 1000:.0f} ms/run "
                  f"over the last tenth; 1,000 runs ~ {last * 1000:.0f} s at the last "
                  f"tenth's rate")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
