"""`python -m sce_sweeps --help` speaks for the project; every other command is a subcommand
of `python -m sce_sweeps.cli`, listed there, and answers --help; commands that train nothing do
not load torch."""

import os
import re
import subprocess
import sys

import pytest

from sce_sweeps.cli import COMMANDS
from sce_sweeps.cli import main as cli_main
from tests.support import ROOT, run_in_process

PACKAGE = ROOT / "sce_sweeps"


def python(args, cwd):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def help_text(tmp_path_factory):
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("elsewhere"))
    try:
        proc = run_in_process("--help")
    finally:
        os.chdir(here)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_help_opens_with_the_project_and_its_commands(help_text):
    assert help_text.startswith("sce_sweeps: run, track and tabulate hyperparameter sweeps of SCE")
    assert "powered by Hydra" not in help_text
    for command in ("python -m sce_sweeps -m +sweep=NAME", "launcher=slurm cluster=PROFILE"):
        assert command in help_text
    assert "hydra.launcher.dry_run=true" in help_text and "--config-dir DIR" in help_text
    assert "aim up --repo SWEEP_DIR/aim" in help_text
    sweeps = re.search(r"^sweep: (.+)$", help_text, re.MULTILINE)
    presets = sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml"))
    assert sweeps is not None and sweeps.group(1).split(", ") == presets


def test_every_command_is_a_listed_subcommand_of_the_cli(help_text):
    assert {"status", "resume", "table", "plot", "collect", "linear", "merge"} <= set(COMMANDS)
    for name in COMMANDS:
        assert re.search(rf"python -m sce_sweeps\.cli {name} [A-Z]", help_text), name
    listed = set(re.findall(r"python -m (sce_sweeps\.\w+)", help_text))
    assert listed == {"sce_sweeps.cli"}  # no other module runs as a command
    commands = sorted(
        p.stem for p in PACKAGE.rglob("*.py") if '__name__ == "__main__"' in p.read_text()
    )
    assert commands == ["__main__", "cli"]
    # the scripts in analysis/ are the same commands, run on the installed package
    for script in sorted((ROOT / "analysis").glob("*.py")):
        assert "sys.path" not in script.read_text(), f"{script.name} edits sys.path"


def test_cli_lists_its_commands_and_refuses_unknown_ones(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m sce_sweeps.cli COMMAND")
    assert all(f"  {name} " in out for name in COMMANDS)
    assert cli_main(["statsu"]) == 2
    assert "unknown command 'statsu'" in capsys.readouterr().err


# Runs each command with --help in one interpreter, isolated (-I: no script dir, no cwd, no
# PYTHONPATH on sys.path, so only the installed package); one line per command on stderr.
HELPS = """
import contextlib, io, runpy, sys
for target in sys.argv[1:]:
    script = target.endswith(".py")
    sys.argv = [target, "--help"] if script else ["sce_sweeps.cli", target, "--help"]
    out, code = io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out):
            if script:
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module("sce_sweeps.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code or 0
    prog = target.rsplit("/", 1)[-1] if script else "python -m sce_sweeps.cli " + target
    print("HELP", target, code, out.getvalue().startswith("usage: " + prog), file=sys.stderr)
"""


@pytest.mark.slow
def test_every_command_answers_help(tmp_path):
    scripts = [str(p) for p in sorted((ROOT / "analysis").glob("*.py"))]
    proc = python(["-I", "-c", HELPS, *COMMANDS, *scripts], tmp_path)
    answers = [line.split()[1:] for line in proc.stderr.splitlines() if line.startswith("HELP ")]
    assert answers == [[target, "0", "True"] for target in [*COMMANDS, *scripts]], proc.stderr


LOADED = """
import sys
from sce_sweeps.app import cli
sys.argv = ["sce_sweeps", *sys.argv[1:]]
try:
    cli()
finally:
    heavy = ("torch", "torchvision", "aim", "optuna", "matplotlib")
    print("LOADED:", *sorted(m for m in heavy if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["-m", "+sweep=lambda_ablation", "launcher=slurm", "cluster=example_gpu", "seed=0"]
        + ["hydra.launcher.dry_run=true"],
    ],
    ids=["help", "slurm_dry_run"],
)
@pytest.mark.e2e
def test_commands_that_train_nothing_do_not_load_torch(args, tmp_path):
    proc = python(["-c", LOADED, *args], tmp_path)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stderr.strip().splitlines()[-1]
    assert loaded == "LOADED:", loaded
    assert not any(tmp_path.iterdir())  # nothing written where it ran
