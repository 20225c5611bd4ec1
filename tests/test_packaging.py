"""The package as users install it: ``pip wheel .`` ships the configs, the installed wheel
composes and dry-runs a sweep from any directory, a user's own ``--config-dir`` adds cluster
profiles and sweep presets, and the editable install (``make setup``) uses the checkout's conf/.

The fresh venvs see this venv's site-packages through a path file, for the dependencies (torch
is 5 GB): a path listed there is put on ``sys.path`` without processing its own ``.pth`` files,
so the editable install of this checkout stays out of them.
"""

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow

MY_CLUSTER = """\
# @package hydra.launcher
partition: my_partition
account: my_account
gpus_per_node: 1
cpus_per_task: 4
mem_gb: 32
timeout_min: 60
"""
MY_SWEEP = """\
# @package _global_
sweep_name: my_sweep
hydra:
  sweeper:
    params:
      loss.temp: 0.1,0.2
"""


WHERE = """
import json, sys
from pathlib import Path
import hydra_plugins.sce_sweeps_launchers as launchers, sce_sweeps.app as app
print(json.dumps({"conf": app.CONF_DIR, "package": str(Path(app.__file__).parent),
                  "launchers": launchers.__file__, "path": sys.path}))
"""


def run(args, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw
    )


def pip(*args):
    proc = run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def fresh_venv(root: Path) -> Path:
    """A venv without pip that sees this venv's site-packages for the dependencies."""
    run([sys.executable, "-m", "venv", "--without-pip", root], ROOT, check=True)
    python = root / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], ROOT)
    Path(purelib.stdout.strip(), "dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n"
    )
    return python


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    pip("wheel", ROOT, "--no-deps", "--no-build-isolation", "--wheel-dir", out)
    (built,) = out.glob("sce_sweeps-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The python of a fresh venv holding the wheel."""
    python = fresh_venv(tmp_path_factory.mktemp("venv"))
    pip("--python", python, "install", "--no-deps", "--no-index", wheel)
    return python


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def test_wheel_ships_every_config_and_data_file(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    prefix = "sce_sweeps/conf/"
    shipped = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
    assert shipped == {p.relative_to(ROOT / "conf").as_posix() for p in ROOT.glob("conf/**/*.yaml")}
    assert "sce_sweeps/analysis/reference_results.csv" in names
    assert "hydra_plugins/sce_sweeps_launchers/launchers.py" in names
    assert not [n for n in names if n.split("/")[0] in ("conf", "tests", "analysis", "sweeps")]


def test_installed_wheel_dry_runs_a_sweep_from_any_directory(installed, elsewhere):
    where = run([installed, "-c", WHERE], elsewhere)
    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    venv = str(installed.parent.parent)
    assert found["conf"] == f"{found['package']}/conf" and found["package"].startswith(venv)
    assert found["launchers"].startswith(venv)
    assert str(ROOT) not in found["path"]  # nothing from the checkout

    sweep = ["-m", "+sweep=lambda_ablation", "launcher=slurm", "cluster=example_gpu", "seed=0"]
    proc = run([installed, "-m", "sce_sweeps", *sweep, "hydra.launcher.dry_run=true"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "DRY RUN: 9 jobs of sweep lambda_ablation would be submitted to SLURM" in out
    assert "partition=gpu account=my_lab" in out and out.count("loss.coeff=") == 9
    assert not any(elsewhere.iterdir())  # a dry run writes nothing

    # the repository's analysis scripts run on the installed package
    script = run([installed, ROOT / "analysis" / "ablation_table.py", "--help"], elsewhere)
    assert script.returncode == 0 and script.stdout.startswith("usage:"), script.stderr


def test_user_config_dir_adds_cluster_profiles_and_sweep_presets(installed, tmp_path, elsewhere):
    mine = tmp_path / "my_conf"
    (mine / "cluster").mkdir(parents=True)
    (mine / "sweep").mkdir()
    (mine / "cluster" / "my_cluster.yaml").write_text(MY_CLUSTER)
    (mine / "sweep" / "my_sweep.yaml").write_text(MY_SWEEP)
    app = [installed, "-m", "sce_sweeps", "--config-dir", mine]

    groups = run([*app, "--help"], elsewhere)
    assert "cluster: example_gpu, local, my_cluster" in groups.stdout, groups.stderr
    assert "my_sweep" in groups.stdout and "lambda_ablation" in groups.stdout

    sweep = ["-m", "+sweep=my_sweep", "launcher=slurm", "cluster=my_cluster"]
    proc = run([*app, *sweep, "hydra.launcher.dry_run=true"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert "DRY RUN: 2 jobs of sweep my_sweep" in proc.stdout
    assert "partition=my_partition account=my_account" in proc.stdout
    assert "4 CPUs per task, 32 GB" in proc.stdout and proc.stdout.count("loss.temp=") == 2


def test_editable_install_uses_the_checkouts_conf(tmp_path, elsewhere):
    python = fresh_venv(tmp_path / "venv")
    pip("--python", python, "install", "--no-deps", "--no-build-isolation", "--editable", ROOT)
    proc = run([python, "-c", "import sce_sweeps.app as a; print(a.CONF_DIR)"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(ROOT / "conf")
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], ROOT)
    assert not Path(purelib.stdout.strip(), "sce_sweeps").exists()  # no copy of conf/ to go stale
