"""The official recipes (conf/experiment): each composes to its official values, and trains.

Each preset is composed with Hydra's real compose API and compared, key by key, with
sce_sweeps/presets/official_values.csv; then it trains two steps on CPU on a tiny dataset
written in that dataset's real on-disk format, with only sizes shrunk (and, for the CIFAR-10
and ImageNet presets, two steps of their linear evaluation protocol).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sce_sweeps.analysis.references import find_reference, load_references
from sce_sweeps.app import CONF_DIR
from sce_sweeps.config import ConfigError, validate
from sce_sweeps.engine.linear import run_linear
from sce_sweeps.engine.train import train
from tests.support import ROOT, compose
from tests.synthetic import write_fake_dataset

# One row per preset and key: value (JSON, else text), origin, and the official file it is from.
OFFICIAL_VALUES = ROOT / "sce_sweeps" / "presets" / "official_values.csv"
REPOS = ("CEA-LIST/SCE", "juliendenize/eztorch")

PRESETS = (
    "cifar10",
    "cifar100",
    "stl10",
    "tiny_imagenet",
    "imagenet100",
    "imagenet",
    "imagenet_multicrop",
)


def load_official_values() -> list[SimpleNamespace]:
    with OFFICIAL_VALUES.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        with contextlib.suppress(json.JSONDecodeError):  # else the value is plain text
            row["value"] = json.loads(row["value"])
    return [SimpleNamespace(**row) for row in rows]


def preset_values(preset: str) -> dict[str, SimpleNamespace]:
    return {v.key: v for v in load_official_values() if v.preset == preset}


def same(a, b) -> bool:
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        return (
            isinstance(a, list | tuple)
            and isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def test_official_values_file():
    values = load_official_values()
    assert {v.preset for v in values} == set(PRESETS)
    for v in values:
        assert v.origin in ("official", "transferred", "picked")
        assert v.origin != "picked" or not v.repo
        assert v.origin == "picked" or (v.repo in REPOS and v.path and v.official_key)
    for preset in ("cifar10", "imagenet", "imagenet_multicrop"):  # official through and through
        rows = preset_values(preset)
        assert len(rows) > 35
        assert {k for k, v in rows.items() if v.origin != "official"} <= {"dataset.name"}
    assert preset_values("cifar10")["dataset.std"].value == [0.2023, 0.1994, 0.2010]
    assert preset_values("cifar10")["optim.exclude_bias_norm"].value is False
    multicrop = preset_values("imagenet_multicrop")
    assert multicrop["aug.local_crop_sizes"].value == [192, 160, 128, 96]
    assert multicrop["trainer.epochs"].path.endswith("resnet50_imagenet_five_crops.yaml")


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_resolves_to_its_official_values(preset):
    text = (Path(CONF_DIR) / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    cfg = compose(f"experiment={preset}")
    validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    wrong = {}
    for key, want in preset_values(preset).items():
        got = OmegaConf.select(OmegaConf.create(resolved), key, default="<missing>")
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        if not same(got, want.value):
            wrong[key] = (got, want.value)
    assert not wrong, f"experiment={preset}: key: (resolved, official) {wrong}"


def test_presets_differ_where_the_recipes_do():
    cifar = compose("experiment=cifar10")
    demo = compose()
    assert (cifar.model.target_bn, demo.model.target_bn) == ("shuffle", "standard")
    assert (cifar.aug.blur_type, cifar.aug.blur_p, demo.aug.blur_p) == ("pil", 0.5, 0.0)
    # a group option chosen after the preset still wins over the preset's group choice
    swapped = compose("experiment=imagenet", "aug=multi_crop_sce")
    assert swapped.aug.num_local_crops == 4 and swapped.loss.sym


@pytest.mark.parametrize(
    "preset, aug, top1",
    [("imagenet", "two_strong", 72.7), ("imagenet_multicrop", "multi_crop_sce", 75.4)],
)
def test_published_number_belongs_to_the_official_preset(preset, aug, top1):
    cfg = compose(f"experiment={preset}")
    flat = pd.json_normalize(OmegaConf.to_container(cfg, resolve=True), sep=".").iloc[0].to_dict()
    flat.update(experiment=preset, aug=aug)  # the group choices, as the analysis reads them
    refs = load_references()
    for key in ("experiment", "aug"):
        ref = find_reference(refs, "imagenet", {key: flat[key]}, [flat])
        assert ref is not None and ref.value == top1 and ref.metric == "linear_top1"
    assert find_reference(refs, "imagenet", {"aug": "multi_crop"}, [flat]) is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiment=cifar10", "trainer.batch_size=100"], "model.target_bn_splits=8 is invalid"),
        (["experiment=imagenet_multicrop", "aug.num_local_crops=2"], "aug.local_crop_sizes="),
        (["experiment=imagenet", "aug.view0_blur_p=1.5"], "aug.view0_blur_p=1.5 is invalid"),
    ],
)
def test_preset_overrides_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(*overrides))


def test_a_preset_choice_outside_its_enum_fails_at_compose():
    with pytest.raises(Exception, match=re.escape("aug.blur_type=box")) as error:
        compose("experiment=cifar10", "aug.blur_type=box")
    assert "expected one of [kernel, pil]" in str(error.value.__cause__)


# Tiny sizes for a two-step run on CPU; everything else is the preset's.
TINY = [
    "model.width=4",
    "model.proj_hidden_dim=32",
    "model.proj_output_dim=16",
    "trainer.batch_size=16",
    "loss.queue_size=32",
    "trainer.epochs=1",
    "trainer.max_steps_per_epoch=2",
    "optim.warmup_epochs=0",
    "trainer.eval_random_init=false",
    "trainer.knn_k=5",
    "trainer.num_threads=1",
    "trainer.progress=false",
    "dataset.num_workers=0",
]
# ImageNet recipes at 96 px: every crop size follows dataset.image_size (multi-crop: 82, 69,
# 55 and 41 px local crops), a fifth of the pixels of 224.
IMAGENET = ["model.pred_hidden_dim=32", "dataset.image_size=96"]
FIXTURES = {  # preset -> (dataset.name, extra overrides)
    "cifar10": ("cifar10", []),
    "cifar100": ("cifar100", []),
    "stl10": ("stl10", []),
    "tiny_imagenet": ("image_folder", []),
    "imagenet100": ("image_folder", IMAGENET),
    "imagenet": ("image_folder", IMAGENET),
    "imagenet_multicrop": ("image_folder", IMAGENET),
}


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_two_steps_on_its_real_format(preset, tmp_path):
    name, extra = FIXTURES[preset]
    write_fake_dataset(name, tmp_path / "data", num_train=32, num_test=12)
    overrides = [f"experiment={preset}", *TINY, *extra, f"dataset.root={tmp_path / 'data'}"]
    cfg = compose(*overrides)
    validate(cfg)
    result = train(cfg, tmp_path / "run")
    assert result["epochs"] == 1 and math.isfinite(result["loss"])
    assert 0.0 <= result["knn_top1"] <= 100.0
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    if preset in ("cifar10", "imagenet"):  # and the preset's linear protocol, two steps of it
        assert cfg.linear.schedule == ("step" if preset == "cifar10" else "cosine")
        small = ["linear.epochs=1", "linear.max_steps_per_epoch=2", "linear.batch_size=16"]
        linear = run_linear(compose(*overrides, *small), tmp_path / "run")
        assert 0.0 <= linear["linear_top1"] <= 100.0 and linear["linear_epochs"] == 1
