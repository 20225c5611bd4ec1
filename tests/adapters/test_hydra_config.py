"""The launchers compose each job once per distinct set of config groups (``SweepComposer``, on
Hydra's internals): every job must still get exactly the config Hydra's own public
``load_sweep_config`` composes, and the switch back to that path must give it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from sce_sweeps.app import CONF_DIR
from sce_sweeps.runtime.adapters.hydra_config import SweepComposer, sweep_composer

# one composer for all of them, in this order: the later ones hit its cache
JOBS = [
    ["loss.coeff=0.1", "seed=1"],
    ["loss.coeff=0.2", "seed=2"],  # same groups as the first: a cache hit
    ["model=resnet18_tiny", "loss.coeff=0.2"],
    ["loss.coeff=0.3", "model=resnet18_tiny"],  # the same groups in another order
    ["experiment=none", "+extra.tag='a b'", "optim.lr=0.5"],
    ["~cluster", "loss={coeff: 0.25, temp: 0.2}"],  # a dict for a group's key is a value
    ["hydra.job.config.override_dirname.exclude_keys=[seed]", "seed=3", "loss.temp=0.05"],
    ["hydra/job_logging=disabled", "++seed=4"],
    ["hydra.job.env_copy=[HOME]", "seed=5"],
    ["loss.coeff=0.1", "seed=1"],  # the first again, after all the others
]


@pytest.fixture(scope="module")
def loader_and_master():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        overrides = ["hydra/launcher=sce_local", "sweep_name=compose", "cluster=local"]
        master = loader.load_configuration("config", overrides, run_mode=RunMode.MULTIRUN)
        assert master.hydra.sweep.dir  # resolved once, as Hydra's sweeper does: now, sce_uid
        yield loader, master


def _same(expected, got) -> None:
    assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected)
    assert OmegaConf.is_struct(got) and not OmegaConf.is_readonly(got.hydra)
    assert OmegaConf.get_type(got.hydra) is OmegaConf.get_type(expected.hydra)
    # the multirun's resolved values (its time stamp, its uid) are the job's too
    assert got.hydra.sweep.dir == expected.hydra.sweep.dir
    task = OmegaConf.masked_copy(got, [k for k in got if k != "hydra"])
    expected_task = OmegaConf.masked_copy(expected, [k for k in expected if k != "hydra"])
    assert OmegaConf.to_container(task, resolve=True) == OmegaConf.to_container(
        expected_task, resolve=True
    )


def test_each_job_gets_hydras_own_composition(loader_and_master):
    loader, master = loader_and_master
    composer = SweepComposer(loader, master)
    for overrides in JOBS:
        _same(loader.load_sweep_config(master, list(overrides)), composer(list(overrides)))
    got = composer(["model=resnet18_tiny", "seed=9"])
    assert got.hydra.runtime.choices.model == "resnet18_tiny"
    assert list(got.hydra.overrides.task) == ["model=resnet18_tiny", "seed=9"]
    assert got.hydra.job.override_dirname == "model=resnet18_tiny,seed=9"
    # the config files were merged once per set of config-group overrides, not once per job
    assert composer.compositions == 5


def test_jobs_do_not_share_state(loader_and_master):
    loader, master = loader_and_master
    composer = SweepComposer(loader, master)
    first = composer(["seed=1"])
    first.loss.coeff = 123.0
    first.hydra.overrides.task.append("x=1")
    second = composer(["seed=2"])
    assert second.loss.coeff != 123.0 and list(second.hydra.overrides.task) == ["seed=2"]


def test_the_switch_goes_back_to_hydras_public_path(loader_and_master, monkeypatch):
    loader, master = loader_and_master
    assert isinstance(sweep_composer(loader, master), SweepComposer)
    monkeypatch.setenv("SCE_SWEEPS_PUBLIC_APIS", "hydra")
    public = sweep_composer(loader, master)
    assert not isinstance(public, SweepComposer)
    for overrides in JOBS[:3]:
        _same(loader.load_sweep_config(master, list(overrides)), public(list(overrides)))


@pytest.mark.parametrize(
    "overrides", [["model=nope"], ["loss.nope=1"], ["seed=[1"], ["seed=1,2"], ["+seed=1"]]
)
def test_bad_overrides_fail_as_in_hydra(loader_and_master, overrides):
    loader, master = loader_and_master
    with pytest.raises(Exception) as hydras:
        loader.load_sweep_config(master, overrides)
    with pytest.raises(type(hydras.value)) as ours:
        SweepComposer(loader, master)(overrides)
    assert str(ours.value) == str(hydras.value)


APP = """
from dataclasses import dataclass
import hydra
from hydra.core.config_store import ConfigStore

cs = ConfigStore.instance()
cs.store(name="config", node={"defaults": ["_self_", {"db": "mysql"}], "x": 1, "tag": "t"})
cs.store(group="db", name="mysql", node={"driver": "mysql", "port": 3306})
cs.store(group="db", name="sqlite", node={"driver": "sqlite", "port": 0})


@hydra.main(version_base="1.3", config_path=None, config_name="config")
def main(cfg) -> float:
    return float(cfg.x)


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_a_launched_sweep_writes_what_hydras_basic_launcher_writes(tmp_path: Path):
    """The same grid through Hydra's basic sweeper and launcher, and through ``sce_grid`` and
    ``sce_local``: every job's config, overrides and Hydra node are the same."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    grid = ["x=1,2", "db=mysql,sqlite", "+extra=3", "hydra.job.chdir=false"]
    ours = ["hydra/launcher=sce_local", "hydra/sweeper=sce_grid", "hydra.launcher.poll_s=0.1"]
    for name, extra in [("basic", []), ("sce", ours)]:
        cmd = [sys.executable, str(app), "-m", *grid, f"hydra.sweep.dir={tmp_path / name}"]
        subprocess.run([*cmd, *extra], cwd=tmp_path, check=True, capture_output=True)
    for num in range(4):
        dirs = basic, sce = [tmp_path / name / str(num) / ".hydra" for name in ("basic", "sce")]
        for name in ("config.yaml", "overrides.yaml"):
            assert (sce / name).read_text() == (basic / name).read_text()
        expected, got = (yaml.safe_load((d / "hydra.yaml").read_text())["hydra"] for d in dirs)
        for node in (expected, got):  # what differs by design: the launcher, the sweeper, the dir
            del node["launcher"], node["sweeper"], node["sweep"], node["runtime"]["output_dir"]
            node["overrides"]["hydra"] = [x for x in node["overrides"]["hydra"] if "sweep" not in x]
            for group in ("hydra/launcher", "hydra/sweeper"):
                node["runtime"]["choices"].pop(group)
        assert got["job"]["num"] == num and got["job"]["id"] != expected["job"]["id"]
        got["job"]["id"] = expected["job"]["id"]
        got["overrides"]["hydra"] = [x for x in got["overrides"]["hydra"] if "launcher" not in x]
        assert got == expected


@pytest.mark.parametrize("public", [False, True])
def test_a_failed_jobs_error_is_the_exception_the_public_return_value_raises(public, monkeypatch):
    from hydra.core.utils import JobReturn, JobStatus

    from sce_sweeps.runtime.adapters.hydra_config import job_error

    if public:
        monkeypatch.setenv("SCE_SWEEPS_PUBLIC_APIS", "hydra")
    failed, error = JobReturn(status=JobStatus.FAILED), ValueError("bad value")
    failed.return_value = error
    with pytest.raises(ValueError) as raised:
        failed.return_value  # noqa: B018 (the public path)
    assert job_error(failed) is raised.value is error
    done = JobReturn(status=JobStatus.COMPLETED)
    done.return_value = 0.5
    assert job_error(done) is None
