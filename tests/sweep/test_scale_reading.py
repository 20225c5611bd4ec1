"""The analysis reads a 1,000-run sweep from each run's result.json (see
``benchmarks/sweep_scale.py``): what it reads there must be what the run's config files give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from sce_sweeps.analysis.collect import read_config
from sce_sweeps.app import CONF_DIR
from sce_sweeps.config import run_config
from sce_sweeps.runtime.overrides import flatten


@pytest.fixture(scope="module")
def app_config():
    """The SCE app's config as Hydra saves a run's .hydra/config.yaml, its hydra node, and
    the params the run records in its result.json."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["model=resnet18_tiny"], return_hydra_config=True)
    hydra = OmegaConf.to_yaml({"hydra": cfg.hydra})
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    params = {**flatten(run_config(cfg)), **choices}
    return OmegaConf.to_yaml(cfg), hydra, params


def test_a_run_reads_the_same_from_its_result_json_and_from_its_config_files(
    tmp_path: Path, app_config
):
    config, hydra, params = app_config
    run_dir = tmp_path / "0"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(config)
    (run_dir / ".hydra" / "hydra.yaml").write_text(hydra)
    from_files = read_config(run_dir)
    assert from_files == read_config(run_dir, {"params": json.loads(json.dumps(params))})
    assert from_files["model"] == "resnet18_tiny" and from_files["model.arch"] == "resnet18"
    # interpolations resolved as OmegaConf resolves them (a crop size from the image size)
    assert from_files["aug.crop_size"] == yaml.safe_load(config)["dataset"]["image_size"]


@pytest.mark.e2e
def test_the_scale_benchmark_runs_on_a_sweep_smaller_than_its_save_repeats():
    """``benchmarks/sweep_scale.py`` times 20 manifest saves, each changing one job; a sweep of
    fewer jobs than that is measured too."""
    import subprocess
    import sys

    from tests.support import ROOT

    cmd = [sys.executable, str(ROOT / "benchmarks" / "sweep_scale.py"), "--launchers", "none"]
    cmd += ["--jobs", "10", "--aim-runs", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1].startswith("none | 10 |")
