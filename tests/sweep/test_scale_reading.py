"""The analysis reads a 1,000-run sweep without parsing each run's files whole (see
``benchmarks/sweep_scale.py``): what it reads must be what a whole parse gives."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from sce_sweeps.analysis.collect import (
    _ConfigReader,
    _group_choices,
    _resolve_key_refs,
    _resolved_config,
    read_config,
)
from sce_sweeps.app import CONF_DIR
from sce_sweeps.runtime.overrides import flatten


@pytest.fixture(scope="module")
def app_config():
    """The SCE app's config as Hydra saves a run's .hydra/config.yaml, and its hydra node."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["model=resnet18_tiny"], return_hydra_config=True)
    hydra = OmegaConf.to_yaml({"hydra": cfg.hydra})
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg), hydra


def _variants(config: dict, count: int, seed: int = 0):
    """Configs as the runs of a sweep differ: swept values and seeds, and now and then a
    list, a long string, a new or a missing key, a value turned into a block."""
    rng = random.Random(seed)
    leaves = [k for k, v in flatten(config).items() if not isinstance(v, list | dict)]
    values = [0, 1, 0.125, -3e-05, True, None, "", "a b", "x: y", "'q'", "${loss.coeff}", "???"]
    for _ in range(count):
        variant = yaml.safe_load(yaml.safe_dump(config))
        for key in rng.sample(leaves, rng.choice([1, 2, 3])):
            *parents, last = key.split(".")
            node = variant
            for p in parents:
                node = node[p]
            node[last] = rng.choice(
                [*values, rng.random(), "long " * rng.randint(10, 30), [1, 2], {"a": 1}, {}]
            )
        if rng.random() < 0.1:
            variant[f"extra{rng.randint(0, 3)}"] = rng.randint(0, 9)
        if rng.random() < 0.1:
            variant.pop(rng.choice(list(variant)))
        yield variant


def _dump(config: dict) -> str:
    return OmegaConf.to_yaml(config)  # the layout Hydra saves .hydra/config.yaml in


LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def test_config_files_read_line_by_line_are_parsed_right(tmp_path: Path, app_config):
    config, _ = app_config
    reader, path = _ConfigReader(), tmp_path / "config.yaml"
    for text in [_dump(config)] + [_dump(v) for v in _variants(config, 80)]:
        path.write_text(text)
        assert reader.read(path) == yaml.load(text, Loader=LOADER)  # noqa: S506


def test_a_grids_config_files_are_read_from_the_first(tmp_path: Path, app_config):
    config, _ = app_config
    reader, path = _ConfigReader(), tmp_path / "config.yaml"
    for num in range(40):
        variant = yaml.safe_load(yaml.safe_dump(config))
        variant["loss"]["coeff"], variant["seed"] = num / 40, num % 5
        variant["optim"]["lr"] = [0.5, 1e-3, 2][num % 3]
        text = _dump(variant)
        path.write_text(text)
        last = reader.lines
        assert reader.read(path) == yaml.load(text, Loader=LOADER)  # noqa: S506
        assert (reader.lines is last) == (num > 0)  # parsed whole: the first file only


def test_odd_layouts_are_parsed_whole(tmp_path: Path):
    reader, path = _ConfigReader(), tmp_path / "config.yaml"
    texts = [
        "a: 1\nb:\n  c: 2\n",
        "a: 1\nb:\n  c: 3\n",  # one value changed: read from the previous file
        "a: 1\nb: |\n  c: 3\n",  # a block scalar
        "a: 1\nb:\n- c: 3\n",  # a list of mappings
        "a: 1\nb:\n- c: 4\n",
        "a: 2 # note\nb:\n- c: 4\n",
        "'a': 2\nb:\n- c: 4\n",
        "a: &x 2\nb:\n- c: *x\n",
        "a: 3\nb:\n  c: 3\n",
        "a: 3\nc:\n  b: 3\n",  # the same lines, other keys
        "a: 3\n  b: 3\n",  # invalid
    ]
    for text in texts:
        path.write_text(text)
        try:
            expected = yaml.safe_load(text)
        except yaml.YAMLError:
            with pytest.raises(Exception, match="unreadable YAML"):
                reader.read(path)
            continue
        assert reader.read(path) == expected


def test_references_resolve_as_omegaconf_resolves_them(app_config):
    config, _ = app_config
    configs = [
        config,
        {"a": 1, "b": "${a}", "c": "${b}", "d": {"e": "${c}"}},
        {"a": {"x": 1}, "b": "${a}"},  # a whole node: OmegaConf resolves it
        {"a": 1, "b": "a${a}"},  # a reference inside a string
        {"a": 1, "b": ["${a}"]},
        {"a": "${now:%Y}"},  # a resolver
        {"a": "${b}", "b": "${a}"},  # a cycle: kept as written
        {"a": "${missing}"},
    ]
    for raw in configs:
        try:
            expected = flatten(OmegaConf.to_container(OmegaConf.create(raw), resolve=True))
        except Exception:
            expected = flatten(raw)
        assert _resolved_config(raw) == expected
    assert _resolve_key_refs(flatten(config)) is not None  # the app's own: no OmegaConf


def test_group_choices_are_those_of_the_whole_file(tmp_path: Path, app_config):
    _, hydra = app_config
    path = tmp_path / "hydra.yaml"
    path.write_text(hydra)
    whole = yaml.safe_load(hydra)["hydra"]["runtime"]["choices"]
    assert _group_choices(path) == whole and whole["model"] == "resnet18_tiny"
    path.write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": {"model": "x"}}}}, indent=4))
    assert _group_choices(path) == {"model": "x"}  # another layout: parsed whole


def test_a_run_dir_reads_the_same_with_or_without_the_sweeps_reader(tmp_path: Path, app_config):
    config, hydra = app_config
    reader = _ConfigReader()
    for num, variant in enumerate([config, *_variants(config, 5, seed=1)]):
        run_dir = tmp_path / str(num)
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(variant))
        (run_dir / ".hydra" / "hydra.yaml").write_text(hydra)
        assert read_config(run_dir, reader) == read_config(run_dir)


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
