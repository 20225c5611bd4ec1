"""``python -m sce_sweeps.resume <sweep dir> [overrides]``: finish an interrupted or partly failed
sweep.

It reruns the command line recorded in the sweep's manifest, from the directory it ran in, with
``hydra.sweep.dir=<sweep dir> hydra.launcher.resume=true`` (and any extra overrides, e.g.
``hydra.launcher.dry_run=true`` to see what would rerun, or ``launcher=slurm`` to finish on
SLURM a sweep started locally). The launcher then skips the runs that finished with the same
config hash, and the ones still queued or running, and reruns the failed and unfinished ones;
an unfinished run continues from its checkpoint.

A sweep dir that cannot be written (a read-only filesystem: an archived sweep, a colleague's
directory) is not handed to Hydra, which writes into it first: a resume that would rerun
nothing says so and exits 0, one that has jobs to rerun says in one line that the directory
is not writable and exits 2.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from sce_sweeps.runfiles import FINISHED, LIVE, MANIFEST, Manifest, RunFileError, parse_override

REPLACED = ("hydra.sweep.dir=", "hydra.launcher.resume=", "hydra.launcher.dry_run=")


def _override_value(value: str) -> str:
    """``value`` quoted for Hydra's override parser when it holds special characters."""
    if re.fullmatch(r"[\w/.:+~@%-]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(manifest: Manifest, extra: list[str]) -> list[str]:
    """The manifest's command, pointed at its sweep dir, with resume on and ``extra`` last
    (an extra override replaces the recorded one of the same key)."""
    replaced = {parse_override(o)[0] for o in extra if "=" in o}
    argv = [
        a
        for a in manifest.argv
        if not a.lstrip("+").startswith(REPLACED)
        and not ("=" in a and parse_override(a)[0] in replaced)
    ]
    if not {"-m", "--multirun"} & set(argv):
        argv.insert(0, "-m")
    sweep_dir = _override_value(str(manifest.sweep_dir.absolute()))
    return [
        sys.executable,
        *manifest.program,
        *argv,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.launcher.resume=true",
        *extra,
    ]


def _trials_wanted(sweep_dir: Path) -> int | None:
    """``hydra.sweeper.n_trials`` of the sweep's ``multirun.yaml`` (a search sweep), or None."""
    try:
        saved = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
        wanted = saved["hydra"]["sweeper"].get("n_trials")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    return wanted if isinstance(wanted, int) else None


def read_only_verdict(manifest: Manifest) -> tuple[int, str]:
    """For a sweep dir that cannot be written: exit status 0 and a line saying there is
    nothing to resume, or 2 and a line saying which jobs would need it writable."""
    from sce_sweeps.sweep.status import jobs_, sweep_status

    sweep_dir = manifest.sweep_dir
    statuses = sweep_status(manifest)
    todo = [s for s in statuses if s.state not in FINISHED + LIVE]
    wanted = _trials_wanted(sweep_dir)
    more = max(0, wanted - len(statuses)) if wanted is not None else 0
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
        work.append(f"{more} more trial{'s' * (more > 1)} of n_trials={wanted}")
    return 2, (
        f"{sweep_dir} is not writable (read-only file system?): {', '.join(work)}; copy the "
        f"sweep dir somewhere writable and resume the copy"
    )


def say_if_read_only(sweep_dir: str | Path, prog: str) -> int | None:
    """Where ``sweep_dir`` exists and cannot be written: print one line saying what a resume
    would do (:func:`read_only_verdict`) and return its exit status. None otherwise."""
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
        prog="python -m sce_sweeps.resume",
        description="Rerun a sweep's failed and unfinished jobs, skipping finished ones.",
    )
    parser.add_argument("sweep_dir", type=Path, help=f"a sweep dir (holding {MANIFEST})")
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. launcher=slurm")
    args = parser.parse_args(argv)
    try:
        manifest = Manifest.load(args.sweep_dir)
    except RunFileError as e:
        print(f"sce_sweeps.resume: {e}", file=sys.stderr)
        return 2
    if manifest is None:
        print(f"sce_sweeps.resume: no {MANIFEST} in {args.sweep_dir}", file=sys.stderr)
        return 2
    code = say_if_read_only(manifest.sweep_dir, "sce_sweeps.resume")
    if code is not None:
        return code
    cmd = resume_command(manifest, args.overrides)
    print(f"sce_sweeps.resume: (cd {shlex.quote(manifest.cwd)} && {shlex.join(cmd)})", flush=True)
    return subprocess.run(cmd, cwd=manifest.cwd, check=False).returncode
