"""Every config file composes; invalid values fail before training with a one-line error."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sce_sweeps.app import CONF_DIR, config_error_line
from sce_sweeps.config import ConfigError, run_config, validate
from tests.support import ROOT, compose

GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "sweep")


def options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group, option", [(g, o) for g in GROUPS for o in options(g)], ids=lambda x: str(x)
)
def test_every_group_option_composes_and_validates(group, option):
    base = [] if group == "trainer" else ["trainer=paper"]
    base += ["dataset=imagenet"] if option == "sce_imagenet" else []
    base += ["launcher=slurm"] if group == "cluster" else []
    cfg = compose(*base, f"{group}={option}", hydra=True)
    OmegaConf.resolve(cfg)
    validate(cfg)
    # launcher and cluster choose and fill hydra.launcher; the others are the run's own nodes
    # an experiment is a recipe over the other groups: it shows in the choices
    node = "hydra.launcher" if group in ("launcher", "cluster") else group
    node = "hydra.runtime.choices.experiment" if group == "experiment" else node
    assert OmegaConf.select(cfg, node) is not None


def test_default_is_demo_on_fashion_mnist():
    cfg = compose(hydra=True)
    assert cfg.dataset.name == "fashion_mnist" and cfg.aug.crop_size == 28
    assert cfg.loss.coeff == 0.5 and cfg.loss.temp == 0.1 and cfg.loss.temp_m == 0.05


def test_demo_is_an_experiment_selected_last():
    cfg = compose(hydra=True)
    choices = cfg.hydra.runtime.choices
    assert choices.experiment == "demo" and choices.trainer == "demo"
    assert cfg.dataset.train_samples == 20000 and cfg.optim.warmup_epochs == 1
    # the experiment overrides config.yaml's own groups
    assert choices.model != "resnet18_cifar" and cfg.trainer.epochs < 200


@pytest.mark.parametrize("experiment", ["experiment=none", "~experiment", "experiment=demo"])
def test_group_choices_give_their_own_values(experiment):
    """optim=lars and dataset=cifar10 never inherit the demo's learning rate, warm-up or
    subset, with or without the demo experiment."""
    lars = compose(experiment, "optim=lars", hydra=True).optim
    assert (lars.name, lars.lr, lars.warmup_epochs, lars.weight_decay) == ("lars", 0.3, 10, 1e-6)
    cifar = compose(experiment, "dataset=cifar10", hydra=True).dataset
    assert (cifar.name, cifar.train_samples, cifar.image_size) == ("cifar10", None, 32)
    trainer = compose(experiment, "trainer=paper", hydra=True)
    assert trainer.trainer.epochs == 200
    assert trainer.optim.lr == (0.06 if experiment != "experiment=demo" else 0.12)


def test_without_the_experiment_the_groups_are_the_official_cifar_recipe():
    cfg = compose("experiment=none", hydra=True)
    assert (cfg.optim.lr, cfg.optim.warmup_epochs, cfg.trainer.epochs) == (0.06, 5, 200)
    assert cfg.model.width == 64 and cfg.dataset.train_samples is None


def test_schema_rejects_wrong_types_at_compose_time():
    with pytest.raises(Exception, match="loss.coeff"):
        compose("loss.coeff=abc", hydra=True)


@pytest.mark.parametrize(
    "override, key",
    [
        ("loss.coeff=1.5", "loss.coeff"),
        ("loss.temp=0", "loss.temp"),
        ("loss.temp_m=-0.1", "loss.temp_m"),
        ("loss.queue_size=-1", "loss.queue_size"),
        ("model.initial_momentum=1.0", "model.initial_momentum"),
        ("optim.lr=0", "optim.lr"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("trainer.batch_size=-4", "trainer.batch_size"),
        ("aug.crop_scale=[0.5,0.2]", "aug.crop_scale"),
        ("dataset.train_samples=1000", "loss.queue_size"),
        ("aug.local_crop_size=40", "aug.local_crop_size"),
        ("aug.blur_kernel_size=4", "aug.blur_kernel_size"),
        ("dataset.mean=[0.1,0.2]", "dataset.mean"),
    ],
)
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(compose(override, hydra=True))


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("dataset.name=mnist", "fashion_mnist, cifar10, cifar100, stl10, image_folder"),
        ("model.arch=vit", "resnet18, resnet50"),
        ("optim.name=adam", "sgd, lars"),
        ("trainer.device=tpu", "auto, cpu, cuda"),
        ("tracker.name=wandb", "aim, none"),
        ("linear.schedule=poly", "step, cosine"),
    ],
)
def test_a_choice_outside_its_enum_fails_at_compose_naming_the_key_and_the_choices(
    override, allowed
):
    with pytest.raises(Exception) as error:
        compose(override)
    line = config_error_line(error.value)
    assert line is not None and override in line and f"[{allowed}]" in line, line


def test_choices_read_as_their_names():
    cfg = compose("model.arch=resnet50")
    assert cfg.model.arch == "resnet50" and f"{cfg.model.arch}" == "resnet50"
    run = run_config(cfg)
    assert type(run["model"]["arch"]) is str and run["model"]["arch"] == "resnet50"


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, key",
    [
        ("loss.coeff=1.5", "loss.coeff"),
        ("loss.temp=0", "loss.temp"),
        ("loss.temp_m=-0.1", "loss.temp_m"),
        ("loss.queue_size=-1", "loss.queue_size"),
        ("dataset.name=mnist", "dataset.name"),
        ("model.arch=vit", "model.arch"),
        ("optim.name=adam", "optim.name"),
        ("trainer.epochs=0", "trainer.epochs"),
        ("aug.crop_scale=[0.5,0.2]", "aug.crop_scale"),
        ("dataset.train_samples=1000", "loss.queue_size"),
        ("loss.coeff=abc", "loss.coeff"),
        ("trainer.epochs=1.5", "trainer.epochs"),
        ("dataset=mnist", "dataset/mnist"),
        ("loss.temp=[0.1", "loss.temp"),
        ("trainer.epoch=3", "trainer.epoch"),
    ],
)
def test_cli_invalid_override_exits_nonzero_and_writes_nothing(tmp_path, override, key):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "sce_sweeps", override, f"hydra.run.dir={run_dir}", "tracker=none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, naming the key
    assert lines[0].startswith("sce_sweeps: invalid config: ") and key in lines[0]
    assert not (run_dir / "checkpoint.pt").exists() and not (run_dir / "result.json").exists()
