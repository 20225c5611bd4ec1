"""``python -m sce_sweeps.resume <sweep dir> [overrides]``: finish an interrupted or partly failed
sweep.

It reruns the command line recorded in the sweep's manifest, from the directory it ran in, with
``hydra.sweep.dir=<sweep dir> hydra.launcher.resume=true`` (and any extra overrides, e.g.
``hydra.launcher.dry_run=true`` to see what would rerun, or ``launcher=slurm`` to finish on
SLURM a sweep started locally). The launcher then skips the runs that finished with the same
config hash, and the ones still queued or running, and reruns the failed and unfinished ones;
an unfinished run continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

from sce_sweeps.runfiles import MANIFEST, Manifest, RunFileError, parse_override

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
    cmd = resume_command(manifest, args.overrides)
    print(f"sce_sweeps.resume: (cd {shlex.quote(manifest.cwd)} && {shlex.join(cmd)})", flush=True)
    return subprocess.run(cmd, cwd=manifest.cwd, check=False).returncode
