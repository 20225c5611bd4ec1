"""Typed configuration of an SCE run and its validation.

The dataclasses below are the schema of ``conf/`` (registered with Hydra's ConfigStore as
``sce_schema``): a value of the wrong type fails at compose time. :func:`validate` checks the
ranges and cross-field rules and raises :class:`ConfigError` naming the key and the allowed
range. Both run before any job is submitted or any checkpoint is written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sce_sweeps.runtime import confighash
from sce_sweeps.runtime.errors import ConfigError

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "stl10", "image_folder")
ARCHS = ("resnet18", "resnet50")
VIEW_MODES = ("weak_strong", "two_strong")
OPTIMIZERS = ("sgd", "lars")
MOMENTUM_SCHEDULES = ("constant", "cosine")
TARGET_BN = ("standard", "shuffle")
BLUR_TYPES = ("kernel", "pil")
TRACKERS = ("aim", "none")
DEVICES = ("auto", "cpu", "cuda")
DATA_PATHS = ("auto", "cpu", "device")  # trainer.data_path (sce_sweeps.data.device)
AMP_DTYPES = ("float16", "bfloat16")


# Size of the train split of the datasets whose size is known before loading them.
TRAIN_SIZES = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000, "stl10": 5000}


@dataclass
class DatasetConfig:
    name: str = "fashion_mnist"
    # null: where the dataset usually is (Debian's Fashion-MNIST, else ./data); a root that
    # is set must exist (dataset.download=true creates it)
    root: str | None = None
    download: bool = False
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    mean: list[float] = field(default_factory=lambda: [0.2860])
    std: list[float] = field(default_factory=lambda: [0.3530])
    train_split: str = "train"
    test_split: str = "test"
    train_samples: int | None = None  # a fixed, seeded subset of the train split
    test_samples: int | None = None
    num_workers: int = 2
    # image_folder: leave out the image files that cannot be decoded (found by decoding every
    # image once; counted in result.json as unreadable_images) instead of failing on them
    skip_unreadable: bool = False


@dataclass
class ModelConfig:
    arch: str = "resnet18"
    width: int = 64  # channels of the first stage; 64 is torchvision's ResNet
    cifar_stem: bool = True  # 3x3 conv1 stride 1, no max-pool
    proj_hidden_dim: int = 512
    proj_output_dim: int = 128
    proj_num_layers: int = 2
    pred_hidden_dim: int = 0  # 0: no predictor
    initial_momentum: float = 0.99
    momentum_schedule: str = "constant"  # constant | cosine (to 1)
    proj_last_bias: bool = True  # bias of the projector's last Linear
    proj_last_bn: bool = False  # BatchNorm1d(affine=False) after the projector's last Linear
    pred_last_bias: bool = True  # bias of the predictor's last Linear
    # Momentum-branch BatchNorm: standard | shuffle (MoCo's shuffle BN; in one process, split
    # BN over target_bn_splits chunks of the shuffled batch, simulating that many devices)
    target_bn: str = "standard"
    target_bn_splits: int = 8


@dataclass
class LossConfig:
    coeff: float = 0.5  # lambda
    temp: float = 0.1  # tau
    temp_m: float = 0.05  # tau_m
    queue_size: int = 4096  # 0: the batch's other target outputs are the keys
    sym: bool = False


@dataclass
class AugConfig:
    mode: str = "weak_strong"  # weak target + strong online | two strong views
    crop_size: int = 28
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    num_local_crops: int = 0
    local_crop_size: int = 12
    local_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.2])
    color_jitter: float = 0.4  # strength of brightness/contrast/saturation (hue = strength/4)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0
    hflip_p: float = 0.5
    jitter_saturation: float | None = None  # null: color_jitter
    blur_type: str = "kernel"  # kernel (torchvision, tensor kernel) | pil (Pillow, radius sigma)
    blur_kernel_size: int | None = None  # kernel blur; null: 10% of the crop side, odd
    view0_blur_p: float | None = None  # two_strong's view0; null: blur_p
    view0_solarize_p: float | None = None  # two_strong's view0; null: solarize_p
    local_blur_p: float | None = None  # local crops; null: blur_p
    local_solarize_p: float | None = None  # local crops; null: solarize_p
    # One local crop per entry (side, [min, max] scale); when set, they replace
    # local_crop_size and local_crop_scale, and num_local_crops must be their number.
    local_crop_sizes: list[int] = field(default_factory=list)
    local_crop_scales: list[list[float]] = field(default_factory=list)


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.06  # for a batch of 256; scaled linearly with the batch size
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 5
    trust_coefficient: float = 0.001  # LARS eta
    # Biases and norm parameters (1-D) get no weight decay (nor, with LARS, trust ratio).
    exclude_bias_norm: bool = True


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 256
    max_steps_per_epoch: int | None = None
    device: str = "auto"
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    knn_k: int = 200
    knn_temp: float = 0.1
    eval_every: int = 1  # epochs; 0 evaluates only at the end
    # also evaluate the same network at random initialisation and raw pixels (after training)
    eval_random_init: bool = False
    linear_probe: bool = False  # a linear classifier on the frozen features, beside kNN
    checkpoint_every: int = 1  # epochs
    progress: bool = True
    num_threads: int | None = None
    # --- multi-process (sce_sweeps.engine.distributed) ---
    devices: int = 1  # processes (GPUs) per node; trainer.batch_size is the global batch
    num_nodes: int = 1
    sync_bn: bool = False  # SyncBatchNorm in both branches across GPUs (CUDA only)
    # --- throughput (docs/throughput.md) ---
    # Where the views are drawn: cpu (DataLoader workers, torchvision on PIL images), device
    # (the split on the device, Kornia on whole batches), auto (device on CUDA for the
    # datasets held in memory, else cpu).
    data_path: str = "auto"
    amp_dtype: str = "float16"  # autocast dtype with trainer.amp (bfloat16 needs no scaler)
    fused_optimizer: bool = False  # one fused kernel per SGD step (CUDA)
    compile: bool = False  # torch.compile the networks (CUDA; minutes of compilation)


# --- linear evaluation (sce_sweeps.engine.linear; presets in conf/linear) ---
LINEAR_SCHEDULES = ("step", "cosine")
LINEAR_TRAIN_CROPS = ("random_resized", "pad_crop")


@dataclass
class LinearConfig:
    enabled: bool = False  # run it after pretraining, in the same job
    epochs: int = 100
    batch_size: int = 256
    lr: float = 30.0  # for a batch of 256; scaled linearly with linear.batch_size
    schedule: str = "step"  # step (x gamma at each milestone epoch) | cosine
    milestones: list[int] = field(default_factory=lambda: [60, 80])
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    # train view: random_resized (RandomResizedCrop, linear.crop_scale) | pad_crop
    # (RandomCrop of aug.crop_size after zero-padding by linear.crop_padding px)
    train_crop: str = "random_resized"
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # random_resized
    crop_padding: int = 4  # pad_crop
    max_steps_per_epoch: int | None = None
    eval_every: int = 0  # epochs between test evaluations; 0: at the end only


# --- end linear evaluation ---


@dataclass
class TrackerConfig:
    name: str = "aim"
    # default: <sweep dir>/aim for sweeps, sweeps/runs/aim for runs; aim://host:port: a server
    repo: str | None = None
    log_images: bool = True
    system_metrics: bool = True
    # Seconds between two merges of a training run into the shared repo (null: only at the end).
    sync_interval_s: float | None = 300.0


@dataclass
class RecordConfig:
    """What the sweep runtime shows first (status, summaries, tables) and which way is better."""

    metric: str = "knn_top1"
    mode: str = "max"  # max | min (OmegaConf 2.3 has no Literal fields)


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    seed: int = 0
    sweep_name: str = "single"


def register_schema() -> None:
    """Register :class:`Config` as ``sce_schema`` so that ``conf/config.yaml`` is typed, and
    the resolvers the config files use."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    if "sce_schema.yaml" not in store.repo:  # once: storing it costs ~0.1 s, per run read
        store.store(name="sce_schema", node=Config)
    if not OmegaConf.has_resolver("sce_scale"):
        # ${sce_scale:${dataset.image_size},0.43}: a crop size as a fraction of the image's
        OmegaConf.register_new_resolver("sce_scale", lambda size, frac: max(1, round(size * frac)))


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _choice(cfg: DictConfig, key: str, choices: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    _check(value in choices, key, value, f"must be one of {', '.join(choices)}")


def _positive(cfg: DictConfig, key: str, *, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    _check(ok, key, value, "must be >= 0" if allow_zero else "must be > 0")


def _unit(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    _check(0.0 <= value <= 1.0, key, value, "must be in [0, 1]")


def _scale(cfg: DictConfig, key: str) -> None:
    lo, hi = OmegaConf.select(cfg, key)
    _check(0.0 < lo <= hi <= 1.0, key, [lo, hi], "must be [min, max] with 0 < min <= max <= 1")


def validate(cfg: DictConfig) -> None:
    """Check every range and cross-field rule of a composed run config.

    Raises:
        ConfigError: for the first invalid value, naming its key and the allowed range.
    """
    _choice(cfg, "dataset.name", DATASETS)
    _choice(cfg, "record.mode", ("max", "min"))
    for key in ("dataset.num_classes", "dataset.in_channels", "dataset.image_size"):
        _positive(cfg, key)
    for key in ("dataset.train_samples", "dataset.test_samples"):
        if OmegaConf.select(cfg, key) is not None:
            _positive(cfg, key)
    _positive(cfg, "dataset.num_workers", allow_zero=True)
    for key in ("dataset.mean", "dataset.std"):
        value = list(OmegaConf.select(cfg, key))
        _check(
            len(value) == cfg.dataset.in_channels,
            key,
            value,
            f"needs one value per channel (dataset.in_channels={cfg.dataset.in_channels})",
        )
    _check(min(cfg.dataset.std) > 0, "dataset.std", list(cfg.dataset.std), "must be > 0")

    _choice(cfg, "model.arch", ARCHS)
    for key in ("model.width", "model.proj_hidden_dim", "model.proj_output_dim"):
        _positive(cfg, key)
    _check(
        cfg.model.proj_num_layers >= 1,
        "model.proj_num_layers",
        cfg.model.proj_num_layers,
        "must be >= 1",
    )
    _positive(cfg, "model.pred_hidden_dim", allow_zero=True)
    _check(
        0.0 <= cfg.model.initial_momentum < 1.0,
        "model.initial_momentum",
        cfg.model.initial_momentum,
        "must be in [0, 1)",
    )
    _choice(cfg, "model.momentum_schedule", MOMENTUM_SCHEDULES)
    _choice(cfg, "model.target_bn", TARGET_BN)
    _positive(cfg, "model.target_bn_splits")
    if cfg.model.target_bn == "shuffle":
        _check(
            cfg.trainer.batch_size % cfg.model.target_bn_splits == 0,
            "model.target_bn_splits",
            cfg.model.target_bn_splits,
            f"must divide trainer.batch_size={cfg.trainer.batch_size} with model.target_bn=shuffle",
        )

    _unit(cfg, "loss.coeff")
    _positive(cfg, "loss.temp")
    _positive(cfg, "loss.temp_m")
    _positive(cfg, "loss.queue_size", allow_zero=True)

    _choice(cfg, "aug.mode", VIEW_MODES)
    _positive(cfg, "aug.crop_size")
    _positive(cfg, "aug.local_crop_size")
    _positive(cfg, "aug.num_local_crops", allow_zero=True)
    _scale(cfg, "aug.crop_scale")
    _scale(cfg, "aug.local_crop_scale")
    _positive(cfg, "aug.color_jitter", allow_zero=True)
    for key in ("color_jitter_p", "grayscale_p", "blur_p", "solarize_p", "hflip_p"):
        _unit(cfg, f"aug.{key}")
    for key in ("view0_blur_p", "view0_solarize_p", "local_blur_p", "local_solarize_p"):
        if OmegaConf.select(cfg, f"aug.{key}") is not None:
            _unit(cfg, f"aug.{key}")
    if cfg.aug.jitter_saturation is not None:
        _positive(cfg, "aug.jitter_saturation", allow_zero=True)
    _choice(cfg, "aug.blur_type", BLUR_TYPES)
    kernel = cfg.aug.blur_kernel_size
    if kernel is not None:
        _check(kernel >= 1 and kernel % 2 == 1, "aug.blur_kernel_size", kernel, "must be odd >= 1")
    sizes, scales = list(cfg.aug.local_crop_sizes), list(cfg.aug.local_crop_scales)
    if sizes or scales:
        _check(
            len(sizes) == len(scales) == cfg.aug.num_local_crops,
            "aug.local_crop_sizes",
            sizes,
            f"needs one size and one scale (aug.local_crop_scales) per local crop "
            f"(aug.num_local_crops={cfg.aug.num_local_crops})",
        )
        for i, size in enumerate(sizes):
            _check(
                0 < size <= cfg.aug.crop_size,
                f"aug.local_crop_sizes[{i}]",
                size,
                f"must be in [1, aug.crop_size={cfg.aug.crop_size}]",
            )
            _scale(cfg, f"aug.local_crop_scales[{i}]")
    _check(
        cfg.aug.local_crop_size <= cfg.aug.crop_size,
        "aug.local_crop_size",
        cfg.aug.local_crop_size,
        f"must be <= aug.crop_size={cfg.aug.crop_size}",
    )

    _choice(cfg, "optim.name", OPTIMIZERS)
    _positive(cfg, "optim.lr")
    _unit(cfg, "optim.momentum")
    _positive(cfg, "optim.weight_decay", allow_zero=True)
    _positive(cfg, "optim.warmup_epochs", allow_zero=True)
    _positive(cfg, "optim.trust_coefficient")

    _positive(cfg, "trainer.epochs")
    _positive(cfg, "trainer.batch_size")
    _check(
        cfg.optim.warmup_epochs <= cfg.trainer.epochs,
        "optim.warmup_epochs",
        cfg.optim.warmup_epochs,
        f"must be <= trainer.epochs={cfg.trainer.epochs}",
    )
    if cfg.trainer.max_steps_per_epoch is not None:
        _positive(cfg, "trainer.max_steps_per_epoch")
    _choice(cfg, "trainer.device", DEVICES)
    _choice(cfg, "trainer.data_path", DATA_PATHS)
    _choice(cfg, "trainer.amp_dtype", AMP_DTYPES)
    _positive(cfg, "trainer.knn_k")
    _positive(cfg, "trainer.knn_temp")
    _positive(cfg, "trainer.eval_every", allow_zero=True)
    _positive(cfg, "trainer.checkpoint_every")
    if cfg.trainer.num_threads is not None:
        _positive(cfg, "trainer.num_threads")
    # --- multi-process ---
    _positive(cfg, "trainer.devices")
    _positive(cfg, "trainer.num_nodes")
    world = cfg.trainer.devices * cfg.trainer.num_nodes
    _check(
        cfg.trainer.batch_size % world == 0,
        "trainer.batch_size",
        cfg.trainer.batch_size,
        f"must be a multiple of trainer.devices x trainer.num_nodes = {world}",
    )
    _validate_linear(cfg)

    _choice(cfg, "tracker.name", TRACKERS)
    if cfg.tracker.sync_interval_s is not None:
        _positive(cfg, "tracker.sync_interval_s", allow_zero=True)
    _positive(cfg, "seed", allow_zero=True)

    # Cross-field rules that depend on the dataset's size.
    if cfg.loss.queue_size == 0:
        _check(
            cfg.trainer.batch_size >= 2,
            "trainer.batch_size",
            cfg.trainer.batch_size,
            "must be >= 2 when loss.queue_size=0 (the batch's other samples are the keys)",
        )
    n_train = cfg.dataset.train_samples or TRAIN_SIZES.get(cfg.dataset.name)
    if n_train is not None:
        _check(
            cfg.trainer.batch_size <= n_train,
            "trainer.batch_size",
            cfg.trainer.batch_size,
            f"must be <= the {n_train} training images of dataset {cfg.dataset.name}",
        )
        _check(
            cfg.loss.queue_size <= n_train,
            "loss.queue_size",
            cfg.loss.queue_size,
            f"must be <= the {n_train} training images of dataset {cfg.dataset.name} "
            "(a queue larger than the dataset)",
        )


def _validate_linear(cfg: DictConfig) -> None:
    """The ``linear`` group (absent from configs that predate it)."""
    if OmegaConf.select(cfg, "linear") is None:
        return
    for key in ("linear.epochs", "linear.batch_size", "linear.lr"):
        _positive(cfg, key)
    _choice(cfg, "linear.schedule", LINEAR_SCHEDULES)
    _unit(cfg, "linear.gamma")
    _unit(cfg, "linear.momentum")
    _positive(cfg, "linear.weight_decay", allow_zero=True)
    _positive(cfg, "linear.eval_every", allow_zero=True)
    _choice(cfg, "linear.train_crop", LINEAR_TRAIN_CROPS)
    _scale(cfg, "linear.crop_scale")
    _positive(cfg, "linear.crop_padding", allow_zero=True)
    if cfg.linear.max_steps_per_epoch is not None:
        _positive(cfg, "linear.max_steps_per_epoch")


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's own config (no ``hydra`` node), resolved, as plain containers."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def config_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """A stable hash of what determines a run's result (tracker settings excluded)."""
    container = json.loads(json.dumps(cfg if isinstance(cfg, dict) else run_config(cfg)))
    container.pop("tracker", None)
    container.get("trainer", {}).pop("progress", None)
    container.pop("linear", None)  # a stage after pretraining, with its own hash
    if not container.get("dataset", {}).get("skip_unreadable", True):
        del container["dataset"]["skip_unreadable"]  # off: the hash of configs before the key
    return confighash.config_hash(container)
