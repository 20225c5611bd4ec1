"""Typed configuration of an SCE run (the schema of ``conf/``: a wrong type or choice fails at
compose time) and :func:`validate`: each field's declared range and the cross-field rules."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sce_sweeps.runtime import confighash
from sce_sweeps.runtime.errors import ConfigError


class Choice(str, Enum):
    """A config choice: compares, hashes and prints as its name (``"resnet18"``)."""

    def __str__(self) -> str:
        return str(self.value)


def _choices(name: str, *values: str) -> type[Choice]:
    return Choice(name, {v: v for v in values}, module=__name__)  # type: ignore[return-value]


Dataset = _choices("Dataset", "fashion_mnist", "cifar10", "cifar100", "stl10", "image_folder")
Arch = _choices("Arch", "resnet18", "resnet50")
ViewMode = _choices("ViewMode", "weak_strong", "two_strong")
Optimizer = _choices("Optimizer", "sgd", "lars")
MomentumSchedule = _choices("MomentumSchedule", "constant", "cosine")
TargetBN = _choices("TargetBN", "standard", "shuffle")
BlurType = _choices("BlurType", "kernel", "pil")
Tracker = _choices("Tracker", "aim", "none")
Device = _choices("Device", "auto", "cpu", "cuda")
DataPath = _choices("DataPath", "auto", "cpu", "device")  # sce_sweeps.data.device
AmpDtype = _choices("AmpDtype", "float16", "bfloat16")
LinearSchedule = _choices("LinearSchedule", "step", "cosine")
LinearTrainCrop = _choices("LinearTrainCrop", "random_resized", "pad_crop")
Mode = _choices("Mode", "max", "min")

# Size of the train split of the datasets whose size is known before loading them.
TRAIN_SIZES = {"fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000, "stl10": 5000}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# A range: (check of a value, the rule as the error states it). None values are not checked.
Range = tuple[Callable[[Any], bool], str]
POSITIVE: Range = (lambda v: _finite(v) and v > 0, "must be > 0")
NON_NEGATIVE: Range = (lambda v: _finite(v) and v >= 0, "must be >= 0")
AT_LEAST_ONE: Range = (lambda v: v >= 1, "must be >= 1")
UNIT: Range = (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]")
MOMENTUM: Range = (lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")
SCALE: Range = (
    lambda v: len(v) == 2 and 0.0 < v[0] <= v[1] <= 1.0,
    "must be [min, max] with 0 < min <= max <= 1",
)
ODD: Range = (lambda v: v >= 1 and v % 2 == 1, "must be odd >= 1")


def _ranged(default: Any, allowed: Range) -> Any:
    """A field whose value :func:`validate` checks against ``allowed``."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"range": allowed})
    return field(default=default, metadata={"range": allowed})


@dataclass
class DatasetConfig:
    name: Dataset = Dataset.fashion_mnist
    # null: Debian's Fashion-MNIST, else ./data; a root that is set must exist (download creates it)
    root: str | None = None
    download: bool = False
    num_classes: int = _ranged(10, POSITIVE)
    in_channels: int = _ranged(1, POSITIVE)
    image_size: int = _ranged(28, POSITIVE)
    mean: list[float] = field(default_factory=lambda: [0.2860])
    std: list[float] = field(default_factory=lambda: [0.3530])
    train_split: str = "train"
    test_split: str = "test"
    train_samples: int | None = _ranged(None, POSITIVE)  # a fixed, seeded subset of the split
    test_samples: int | None = _ranged(None, POSITIVE)
    num_workers: int = _ranged(2, NON_NEGATIVE)
    # image_folder: leave out undecodable images (result.json: unreadable_images), not fail
    skip_unreadable: bool = False


@dataclass
class ModelConfig:
    arch: Arch = Arch.resnet18
    width: int = _ranged(64, POSITIVE)  # channels of the first stage; 64 is torchvision's
    cifar_stem: bool = True  # 3x3 conv1 stride 1, no max-pool
    proj_hidden_dim: int = _ranged(512, POSITIVE)
    proj_output_dim: int = _ranged(128, POSITIVE)
    proj_num_layers: int = _ranged(2, AT_LEAST_ONE)
    pred_hidden_dim: int = _ranged(0, NON_NEGATIVE)  # 0: no predictor
    initial_momentum: float = _ranged(0.99, MOMENTUM)
    momentum_schedule: MomentumSchedule = MomentumSchedule.constant  # cosine: to 1
    proj_last_bias: bool = True  # bias of the projector's last Linear
    proj_last_bn: bool = False  # BatchNorm1d(affine=False) after the projector's last Linear
    pred_last_bias: bool = True  # bias of the predictor's last Linear
    # Momentum-branch BN: standard | shuffle (MoCo's; one process: BN per target_bn_splits chunk)
    target_bn: TargetBN = TargetBN.standard
    target_bn_splits: int = _ranged(8, POSITIVE)


@dataclass
class LossConfig:
    coeff: float = _ranged(0.5, UNIT)  # lambda
    temp: float = _ranged(0.1, POSITIVE)  # tau
    temp_m: float = _ranged(0.05, POSITIVE)  # tau_m
    queue_size: int = _ranged(4096, NON_NEGATIVE)  # 0: the batch's other targets are the keys
    sym: bool = False


@dataclass
class AugConfig:
    mode: ViewMode = ViewMode.weak_strong  # weak target + strong online | two strong views
    crop_size: int = _ranged(28, POSITIVE)
    crop_scale: list[float] = _ranged([0.2, 1.0], SCALE)
    num_local_crops: int = _ranged(0, NON_NEGATIVE)
    local_crop_size: int = _ranged(12, POSITIVE)
    local_crop_scale: list[float] = _ranged([0.05, 0.2], SCALE)
    color_jitter: float = _ranged(0.4, NON_NEGATIVE)  # brightness/contrast/saturation; hue: /4
    color_jitter_p: float = _ranged(0.8, UNIT)
    grayscale_p: float = _ranged(0.2, UNIT)
    blur_p: float = _ranged(0.0, UNIT)
    solarize_p: float = _ranged(0.0, UNIT)
    hflip_p: float = _ranged(0.5, UNIT)
    jitter_saturation: float | None = _ranged(None, NON_NEGATIVE)  # null: color_jitter
    blur_type: BlurType = BlurType.kernel  # kernel (torchvision) | pil (Pillow, radius sigma)
    blur_kernel_size: int | None = _ranged(None, ODD)  # kernel; null: 10% of the crop, odd
    view0_blur_p: float | None = _ranged(None, UNIT)  # two_strong's view0; null: blur_p
    view0_solarize_p: float | None = _ranged(None, UNIT)  # two_strong's view0; null: solarize_p
    local_blur_p: float | None = _ranged(None, UNIT)  # local crops; null: blur_p
    local_solarize_p: float | None = _ranged(None, UNIT)  # local crops; null: solarize_p
    # One local crop per entry (side, [min, max] scale), replacing local_crop_size and _scale
    local_crop_sizes: list[int] = field(default_factory=list)
    local_crop_scales: list[list[float]] = field(default_factory=list)


@dataclass
class OptimConfig:
    name: Optimizer = Optimizer.sgd
    lr: float = _ranged(0.06, POSITIVE)  # for a batch of 256; scaled linearly with the batch
    momentum: float = _ranged(0.9, UNIT)
    weight_decay: float = _ranged(5e-4, NON_NEGATIVE)
    warmup_epochs: int = _ranged(5, NON_NEGATIVE)
    trust_coefficient: float = _ranged(0.001, POSITIVE)  # LARS eta
    exclude_bias_norm: bool = True  # 1-D params (biases, norms): no weight decay, no LARS ratio


@dataclass
class TrainerConfig:
    epochs: int = _ranged(200, POSITIVE)
    batch_size: int = _ranged(256, POSITIVE)
    max_steps_per_epoch: int | None = _ranged(None, POSITIVE)
    device: Device = Device.auto
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    knn_k: int = _ranged(200, POSITIVE)
    knn_temp: float = _ranged(0.1, POSITIVE)
    eval_every: int = _ranged(1, NON_NEGATIVE)  # epochs; 0 evaluates only at the end
    eval_random_init: bool = False  # also evaluate the network at init and raw pixels, at the end
    linear_probe: bool = False  # a linear classifier on the frozen features, beside kNN
    checkpoint_every: int = _ranged(1, POSITIVE)  # epochs
    progress: bool = True
    num_threads: int | None = _ranged(None, POSITIVE)
    # --- multi-process (sce_sweeps.engine.distributed) ---
    devices: int = _ranged(1, POSITIVE)  # processes (GPUs) per node; batch_size is global
    num_nodes: int = _ranged(1, POSITIVE)
    sync_bn: bool = False  # SyncBatchNorm in both branches across GPUs (CUDA only)
    # --- throughput (docs/throughput.md) ---
    # Where the views are drawn: cpu (DataLoader workers, torchvision on PIL images), device
    # (Kornia on whole batches on the device), auto (device on CUDA for in-memory datasets).
    data_path: DataPath = DataPath.auto
    amp_dtype: AmpDtype = AmpDtype.float16  # autocast dtype (bfloat16 needs no scaler)
    fused_optimizer: bool = False  # one fused kernel per SGD step (CUDA)
    compile: bool = False  # torch.compile the networks (CUDA; minutes of compilation)


@dataclass
class LinearConfig:
    """Linear evaluation (sce_sweeps.engine.linear; presets in conf/linear)."""

    enabled: bool = False  # run it after pretraining, in the same job
    epochs: int = _ranged(100, POSITIVE)
    batch_size: int = _ranged(256, POSITIVE)
    lr: float = _ranged(30.0, POSITIVE)  # for a batch of 256; scaled with linear.batch_size
    schedule: LinearSchedule = LinearSchedule.step  # step (x gamma at each milestone) | cosine
    milestones: list[int] = field(default_factory=lambda: [60, 80])
    gamma: float = _ranged(0.1, UNIT)
    momentum: float = _ranged(0.9, UNIT)
    weight_decay: float = _ranged(0.0, NON_NEGATIVE)
    # train view: random_resized (linear.crop_scale) | pad_crop (pad linear.crop_padding px)
    train_crop: LinearTrainCrop = LinearTrainCrop.random_resized
    crop_scale: list[float] = _ranged([0.08, 1.0], SCALE)  # random_resized
    crop_padding: int = _ranged(4, NON_NEGATIVE)  # pad_crop
    max_steps_per_epoch: int | None = _ranged(None, POSITIVE)
    eval_every: int = _ranged(0, NON_NEGATIVE)  # epochs between evaluations; 0: at the end


@dataclass
class TrackerConfig:
    name: Tracker = Tracker.aim
    # default: <sweep dir>/aim for sweeps, sweeps/runs/aim for runs; aim://host:port: a server
    repo: str | None = None
    log_images: bool = True
    system_metrics: bool = True
    # Seconds between two merges of a training run into the shared repo (null: only at the end).
    sync_interval_s: float | None = _ranged(300.0, NON_NEGATIVE)


@dataclass
class RecordConfig:
    """What the sweep runtime shows first (status, summaries, tables) and which way is better."""

    metric: str = "knn_top1"
    mode: Mode = Mode.max


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
    seed: int = _ranged(0, NON_NEGATIVE)
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


def _check_ranges(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Each value against the range its schema field declares (a group the config lacks, e.g.
    ``linear`` in configs older than it, is skipped)."""
    for f in fields(schema):
        key = prefix + f.name
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        group = f.default_factory
        if isinstance(group, type) and is_dataclass(group):
            _check_ranges(cfg, group, key + ".")
        elif "range" in f.metadata:
            ok, allowed = f.metadata["range"]
            value = list(value) if OmegaConf.is_list(value) else value
            _check(ok(value), key, value, allowed)


def validate(cfg: DictConfig) -> None:
    """Check a composed run config's declared ranges and cross-field rules; raise
    :class:`ConfigError` naming the first invalid key and what it allows."""
    _check_ranges(cfg, Config)
    d, m, a, o, t = cfg.dataset, cfg.model, cfg.aug, cfg.optim, cfg.trainer
    for key in ("mean", "std"):
        need = f"needs one value per channel (dataset.in_channels={d.in_channels})"
        _check(len(d[key]) == d.in_channels, f"dataset.{key}", list(d[key]), need)
    _check(min(d.std) > 0, "dataset.std", list(d.std), "must be > 0")
    if m.target_bn == "shuffle":
        splits = m.target_bn_splits
        need = f"must divide trainer.batch_size={t.batch_size} with model.target_bn=shuffle"
        _check(t.batch_size % splits == 0, "model.target_bn_splits", splits, need)
    sizes, scales = list(a.local_crop_sizes), list(a.local_crop_scales)
    if sizes or scales:
        need = (
            "needs one size and one scale (aug.local_crop_scales) per local crop "
            f"(aug.num_local_crops={a.num_local_crops})"
        )
        _check(len(sizes) == len(scales) == a.num_local_crops, "aug.local_crop_sizes", sizes, need)
        for i, (size, scale) in enumerate(zip(sizes, scales)):
            need = f"must be in [1, aug.crop_size={a.crop_size}]"
            _check(0 < size <= a.crop_size, f"aug.local_crop_sizes[{i}]", size, need)
            _check(SCALE[0](list(scale)), f"aug.local_crop_scales[{i}]", list(scale), SCALE[1])
    need = f"must be <= aug.crop_size={a.crop_size}"
    _check(a.local_crop_size <= a.crop_size, "aug.local_crop_size", a.local_crop_size, need)
    need = f"must be <= trainer.epochs={t.epochs}"
    _check(o.warmup_epochs <= t.epochs, "optim.warmup_epochs", o.warmup_epochs, need)
    world = t.devices * t.num_nodes
    need = f"must be a multiple of trainer.devices x trainer.num_nodes = {world}"
    _check(t.batch_size % world == 0, "trainer.batch_size", t.batch_size, need)
    if cfg.loss.queue_size == 0:
        need = "must be >= 2 when loss.queue_size=0 (the batch's other samples are the keys)"
        _check(t.batch_size >= 2, "trainer.batch_size", t.batch_size, need)
    n_train = d.train_samples or TRAIN_SIZES.get(d.name)
    if n_train is not None:
        images = f"the {n_train} training images of dataset {d.name}"
        _check(t.batch_size <= n_train, "trainer.batch_size", t.batch_size, f"must be <= {images}")
        need = f"must be <= {images} (a queue larger than the dataset)"
        _check(cfg.loss.queue_size <= n_train, "loss.queue_size", cfg.loss.queue_size, need)


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's own config (no ``hydra`` node), resolved, as plain containers (choices as
    their names)."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    return container


def config_hash(cfg: DictConfig | dict[str, Any]) -> str:
    """A stable hash of what determines a run's result (tracker settings excluded)."""
    container = json.loads(json.dumps(cfg if isinstance(cfg, dict) else run_config(cfg)))
    # not what a run computes: tracking, the linear stage (its own hash), what the runtime shows
    for key in ("tracker", "linear", "record"):
        container.pop(key, None)
    container.get("trainer", {}).pop("progress", None)
    if not container.get("dataset", {}).get("skip_unreadable", True):
        del container["dataset"]["skip_unreadable"]  # off: the hash of configs before the key
    return confighash.config_hash(container)
