"""``python -m sce_sweeps.cli resume <sweep dir> [overrides]``: the sweep's command again, with
``hydra.launcher.resume=true`` (docs/sweeps.md, "Resume")."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from sce_sweeps.runtime.overrides import parse_override, quote
from sce_sweeps.runtime.record import FINISHED, LIVE, MANIFEST, Manifest, RunFileError
from sce_sweeps.runtime.status import jobs_, load_sweep, sweep_status

REPLACED = ("hydra.sweep.dir=", "hydra.launcher.resume=", "hydra.launcher.dry_run=")


def resume_command(manifest: Manifest, extra: list[str]) -> list[str]:
    """The manifest's command, pointed at its sweep dir, with resume on and ``extra`` last
    (replacing the recorded overrides of the same keys)."""
    replaced = {parse_override(o)[0] for o in extra if "=" in o}
    argv = [
        a
        for a in manifest.argv
        if not a.lstrip("+").startswith(REPLACED)
        and not ("=" in a and parse_override(a)[0] in replaced)
    ]
    if not {"-m", "--multirun"} & set(argv):
        argv.insert(0, "-m")
    sweep_dir = str(manifest.sweep_dir.absolute())
    if not re.fullmatch(r"[\w/.:+~@%-]+", sweep_dir):  # special characters for Hydra's parser
        sweep_dir = quote(sweep_dir)
    return [
        sys.executable,
        *manifest.program,
        *argv,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.launcher.resume=true",
        *extra,
    ]


def read_only_verdict(manifest: Manifest) -> tuple[int, str]:
    """For a read-only sweep dir: 0 and "nothing to resume", or 2 and what would need writing."""
    sweep_dir = manifest.sweep_dir
    statuses = sweep_status(manifest)
    todo = [s for s in statuses if s.state not in FINISHED + LIVE]
    try:  # hydra.sweeper.n_trials of a search sweep
        saved = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
        wanted = saved["hydra"]["sweeper"].get("n_trials")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        wanted = None
    more = max(0, wanted - len(statuses)) if isinstance(wanted, int) else 0
    if not todo and not more:
        return 0, (
            f"nothing to resume: the {jobs_(len(statuses))} of {sweep_dir} are completed, "
            f"pruned or still running (the directory is read-only; nothing was written)"
        )
    work = []
    if todo:
        listed = ", ".join(f"#{s.num} {s.state}" for s in todo[:5]) + ", ..." * (len(todo) > 5)
        work.append(f"{jobs_(len(todo))} to rerun ({listed})")
    if more:
        work.append(f"{jobs_(more, 'more trial')} of n_trials={wanted}")
    return 2, (
        f"{sweep_dir} is not writable (read-only file system?): {', '.join(work)}; copy the "
        f"sweep dir somewhere writable and resume the copy"
    )


def say_if_read_only(sweep_dir: str | Path, prog: str) -> int | None:
    """Where ``sweep_dir`` exists and cannot be written: print :func:`read_only_verdict`'s line
    and return its exit status."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir() or os.access(sweep_dir, os.W_OK):
        return None
    try:
        manifest = Manifest.load(sweep_dir)
    except RunFileError:
        manifest = None
    if manifest is None:
        code, line = 2, f"{sweep_dir} is not writable (read-only file system?)"
    else:
        code, line = read_only_verdict(manifest)
    print(f"{prog}: {line}", file=sys.stderr if code else sys.stdout, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Rerun the sweep's command with resume on; return its exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sce_sweeps.cli resume",
        description="Rerun a sweep's failed and unfinished jobs, skipping finished ones.",
    )
    parser.add_argument("sweep_dir", type=Path, help=f"a sweep dir (holding {MANIFEST})")
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. launcher=slurm")
    args = parser.parse_args(argv)
    manifest = load_sweep(args.sweep_dir, "sce_sweeps.cli resume")
    if manifest is None:
        return 2
    code = say_if_read_only(manifest.sweep_dir, "sce_sweeps.cli resume")
    if code is not None:
        return code
    cmd = resume_command(manifest, args.overrides)
    cd = f"cd {shlex.quote(manifest.cwd)}"
    print(f"sce_sweeps.cli resume: ({cd} && {shlex.join(cmd)})", flush=True)
    return subprocess.run(cmd, cwd=manifest.cwd, check=False).returncode
