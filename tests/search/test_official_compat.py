"""sce_optuna as a drop-in for Hydra's own Optuna sweeper (hydra-optuna-sweeper).

Small apps of our own, written after the official plugin's documented examples
(facebookresearch/hydra ``plugins/hydra_optuna_sweeper/example/``: a sphere, two objectives, a
define-by-run space) and its documented config keys, run end to end through Hydra's basic
launcher with only ``hydra/sweeper=optuna`` changed to ``sce_optuna``."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sce_sweeps.runtime.trial import open_storage
from tests.support import ROOT

pytestmark = pytest.mark.e2e  # jobs, servers and writers in processes of their own

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPHERE = """
import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def sphere(cfg) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    sphere()
"""

# Binh and Korn: two objectives to minimise; returns as many values as TWO says.
TWO = """
import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def binh_and_korn(cfg):
    v0 = 4 * cfg.x**2 + 4 * cfg.y**2
    v1 = (cfg.x - 5) ** 2 + (cfg.y - 5) ** 2
    return (v0, v1)[: cfg.get("values", 2)]


if __name__ == "__main__":
    binh_and_korn()
"""

# A define-by-run space: z depends on the sampled x; +w is a key the config lacks.
DEFINE_BY_RUN = """
import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def sphere4(cfg) -> float:
    return cfg.w**2 + cfg.x**2 + cfg.y**2 + cfg.z**2


def configure(cfg, trial) -> None:
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    sphere4()
"""


def make_app(tmp_path: Path, source: str, config: str) -> Path:
    """An app file ``app.py`` beside ``conf/config.yaml``."""
    (tmp_path / "conf").mkdir(parents=True)
    (tmp_path / "conf" / "config.yaml").write_text(textwrap.dedent(config))
    (tmp_path / "app.py").write_text(source)
    return tmp_path


def run_app(app: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python app.py -m ... hydra.sweep.dir=<app>/search``, as a user runs it."""
    cmd = [sys.executable, "app.py", "-m", f"hydra.sweep.dir={app / 'search'}", *overrides]
    return subprocess.run(cmd, cwd=app, capture_output=True, text=True, timeout=240)


def searched(tmp_path: Path, source: str, config: str, *overrides: str) -> Path:
    """The app, after a search that ended with exit code 0."""
    app = make_app(tmp_path, source, config)
    proc = run_app(app, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return app


def load(app: Path, name: str) -> optuna.Study:
    storage = open_storage(str(app / "search" / "optuna.journal"), repair=False)
    return optuna.load_study(study_name=name, storage=storage)


def results(app: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(app / "search" / "optimization_results.yaml"))


MINIMAL = "defaults:\n  - override hydra/sweeper: sce_optuna\nx: 1\ny: 1\n"

# The official example's config, with only the sweeper's name changed.
SPHERE_CONFIG = """\
defaults:
  - override hydra/sweeper: sce_optuna
  - override hydra/sweeper/sampler: tpe

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: minimize
    study_name: sphere
    storage: null
    n_trials: 6
    n_jobs: 1
    max_failure_rate: 0.0
    params:
      x: range(-5.5, 5.5, step=0.5)
      y: choice(-5 ,0 ,5)

x: 1
y: 1
z: 1

error: false
"""


def test_sphere_example_runs_with_the_official_config(tmp_path):
    app = searched(tmp_path, SPHERE, SPHERE_CONFIG)
    study = load(app, "sphere")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    # range(-5.5, 5.5, step=0.5): the stop is included, as the official sweeper samples it
    assert trials[0].distributions["x"] == optuna.distributions.FloatDistribution(
        -5.5, 5.5, step=0.5
    )
    for t in trials:
        assert t.value == pytest.approx(t.params["x"] ** 2 + t.params["y"] ** 2)
    best = min(trials, key=lambda t: t.value)
    found = results(app)
    assert found["name"] == "optuna"
    assert found["best_params"] == best.params
    assert found["best_value"] == pytest.approx(best.value)
    # sampler.seed=123 seeds the sampler: the same command draws the same trials again
    again = searched(tmp_path / "again", SPHERE, SPHERE_CONFIG)
    assert [t.params for t in load(again, "sphere").trials] == [t.params for t in trials]


def test_a_failed_trial_ends_the_search_by_default(tmp_path):
    """max_failure_rate: 0.0 (the official default) stops at the first failed trial, exit != 0."""
    config = SPHERE_CONFIG.replace("    max_failure_rate: 0.0\n", "")
    app = make_app(tmp_path, SPHERE, config)
    proc = run_app(app, "error=true")
    assert proc.returncode != 0
    assert "cfg.error is True" in proc.stderr
    assert [t.state for t in load(app, "sphere").trials] == [TrialState.FAIL]


def test_max_failure_rate_one_goes_on(tmp_path):
    go_on = ["error=true", "hydra.sweeper.max_failure_rate=1.0"]
    app = searched(tmp_path, SPHERE, SPHERE_CONFIG, *go_on)
    trials = load(app, "sphere").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 6  # a task error is not retried
    assert "cfg.error is True" in trials[0].user_attrs["reason"]
    assert results(app)["states"] == {"FAIL": 6}


def test_direction_defaults_to_minimize(tmp_path):
    app = searched(tmp_path, SPHERE, MINIMAL, "x=choice(1,2)", "y=0", "hydra/sweeper/sampler=grid")
    assert sorted(t.value for t in load(app, "search").trials) == [1.0, 4.0]
    assert load(app, "search").direction == optuna.study.StudyDirection.MINIMIZE
    assert results(app)["best_value"] == 1.0


MULTI_CONFIG = """\
defaults:
  - override hydra/sweeper: sce_optuna
  - override hydra/sweeper/sampler: nsgaii

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: [minimize, minimize]
    study_name: multi-objective
    storage: null
    n_trials: 5
    n_jobs: 1
    params:
      x: range(0, 5, step=0.5)
      y: range(0, 3, step=0.5)

x: 1
y: 1
"""


def test_two_objectives_run_with_a_direction_list_alone(tmp_path):
    app = searched(tmp_path, TWO, MULTI_CONFIG)
    study = load(app, "multi-objective")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    for t in study.trials:
        x, y = t.params["x"], t.params["y"]
        assert t.values == pytest.approx([4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2])
    found = results(app)
    assert found["name"] == "optuna" and "best_value" not in found
    front = [{"params": t.params, "values": t.values} for t in study.best_trials]
    assert sorted(found["solutions"], key=str) == sorted(front, key=str)


def test_a_wrong_number_of_values_is_a_clear_error(tmp_path):
    app = make_app(tmp_path, TWO, MULTI_CONFIG)
    proc = run_app(app, "+values=1")
    assert proc.returncode != 0
    assert "Expect 2, but actually 1" in proc.stderr
    (trial,) = load(app, "multi-objective").trials
    assert trial.state == TrialState.FAIL and "Expect 2" in trial.user_attrs["reason"]


DEFINE_BY_RUN_CONFIG = """\
defaults:
  - override hydra/sweeper: sce_optuna

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: minimize
    study_name: custom-search-space
    storage: null
    n_trials: 4
    n_jobs: 1
    params:
      x: range(-5.5, 5.5, 0.5)
      y: choice(-5, 0, 5)
    custom_search_space: app.configure

x: 1
y: 1
z: 100
max_z_difference_from_x: 0.5
"""


def test_define_by_run_space(tmp_path):
    app = searched(tmp_path, DEFINE_BY_RUN, DEFINE_BY_RUN_CONFIG)
    trials = load(app, "custom-search-space").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t in trials:
        p = t.params
        assert abs(p["z"] - p["x"]) <= 0.5 and 0.0 <= p["+w"] <= 1.0
        assert t.value == pytest.approx(p["+w"] ** 2 + p["x"] ** 2 + p["y"] ** 2 + p["z"] ** 2)
    assert set(results(app)["best_params"]) == {"x", "y", "z", "+w"}


GRID_CONFIG = """\
defaults:
  - override hydra/sweeper: sce_optuna
  - override hydra/sweeper/sampler: grid

hydra:
  sweeper:
    direction: minimize
    study_name: sphere
    storage: null
    n_trials: 20
    n_jobs: 1
    params:
      x: choice(-1, 1)
      y: range(-1.0, 1.0, step=1)
      z: choice("foo", "bar")

x: 1
y: 1
z: foo
"""


def test_grid_search_runs_to_exhaustion(tmp_path):
    app = searched(tmp_path, SPHERE, GRID_CONFIG)
    trials = load(app, "sphere").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    # the official grid of range(-1.0, 1.0, step=1) is -1.0, 0.0 (its stop left out)
    points = {(t.params["x"], t.params["y"], t.params["z"]) for t in trials}
    assert points == {(x, y, z) for x in (-1, 1) for y in (-1.0, 0.0) for z in ("foo", "bar")}
    assert results(app)["best_value"] == 1.0


@pytest.mark.parametrize(
    "sampler",
    [
        ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=7"],
        ["hydra/sweeper/sampler=qmc", "hydra.sweeper.sampler.seed=7"],
        ["hydra/sweeper/sampler=cmaes", "hydra.sweeper.sampler.seed=7"],
        ["hydra.sweeper.sampler._target_=optuna.samplers.TPESampler"],
        ["hydra.sweeper.sampler=random", "hydra.sweeper.seed=7"],  # sce_optuna's earlier form
    ],
    ids=["random", "qmc", "cmaes", "target", "name"],
)
def test_sampler_group_and_target_forms(tmp_path, sampler):
    overrides = ["x=interval(-1,1)", "y=0", "hydra.sweeper.n_trials=3", *sampler]
    app = searched(tmp_path, SPHERE, MINIMAL, *overrides)
    assert [t.state for t in load(app, "search").trials] == [TrialState.COMPLETE] * 3


def test_motpe_is_refused_as_officially(tmp_path):
    app = make_app(tmp_path, SPHERE, MINIMAL)
    proc = run_app(app, "x=interval(-1,1)", "y=0", "hydra/sweeper/sampler=motpe")
    assert proc.returncode != 0 and "hydra/sweeper/sampler=tpe" in proc.stderr


def test_an_empty_space_repeats_the_config_n_trials_times(tmp_path):
    app = searched(tmp_path, SPHERE, MINIMAL, "x=2", "hydra.sweeper.n_trials=3")
    trials = load(app, "search").trials
    assert [t.value for t in trials] == [5.0] * 3
    assert all(t.params == {} and t.user_attrs["x"] == "2" for t in trials)  # as officially


def _doc_overrides() -> list[str]:
    """Every ``hydra.sweeper...=`` and ``hydra/sweeper/...=`` override docs/search.md shows."""
    text = (ROOT / "docs" / "search.md").read_text()
    found = re.findall(r"['`\s](\+*hydra[./]sweeper[\w./]*=[^\s`'|]+)", text)
    return sorted(set(found))


def test_every_sweeper_override_in_the_docs_composes():
    from hydra import compose, initialize_config_dir

    from sce_sweeps.app import CONF_DIR  # registers the app's schema

    overrides = _doc_overrides()
    assert "hydra.sweeper.sampler.n_startup_trials=5" in overrides
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        for line in overrides:
            cfg = compose(
                "config",
                overrides=["+sweep=optuna_search", line],
                return_hydra_config=True,
            )
            assert cfg.hydra.sweeper is not None, line
