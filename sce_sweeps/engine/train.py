"""The SCE training loop. Augmentations are a pure function of (seed, epoch, sample) and
``checkpoint.pt`` holds all other state: a run resumed from any step continues exactly."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm import tqdm

from sce_sweeps.config import config_hash, run_config
from sce_sweeps.data import (
    EpochSampler,
    StopSafeDataLoader,
    build_datasets,
    collate_views,
    unreadable_of,
)
from sce_sweeps.data import steps_per_epoch as num_steps
from sce_sweeps.data.device import DeviceData, use_device_path
from sce_sweeps.engine import checkpoint as ckpt
from sce_sweeps.engine import distributed
from sce_sweeps.engine.baselines import CACHE, cached_metrics, init_key, pixel_metrics
from sce_sweeps.engine.knn import extract_features, feature_metrics
from sce_sweeps.engine.optim import build_optimizer, lr_at, set_lr
from sce_sweeps.runtime import record
from sce_sweeps.runtime.tracking import NullTracker
from sce_sweeps.sce import SCEModel, SCETerms, build_model, momentum_at, sce_diagnostics

LOG_EVERY = 10  # steps between tracked train metrics
# Steps between two checks for a stop signal when several processes train: the ranks agree
# through a collective whose read-back waits for the device. One process checks every step.
STOP_CHECK_EVERY = 8
EVAL_METRICS = ("knn_top1", "probe_top1")  # what an evaluation of the features records


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite."""


class Stopped(Exception):
    """Training stopped early on request (a pruner); the state is checkpointed."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


class StopSignals:
    """SIGUSR2 (time limit, preemption) and SIGTERM become a request served at the next step
    boundary: checkpoint, then hand the signal to the previous handler (submitit's requeue)."""

    SIGNALS = (signal.SIGUSR2, signal.SIGTERM)

    def __init__(self) -> None:
        self.pending: tuple[int, Any] | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _request(self, signum: int, frame: Any) -> None:
        # SIGUSR2 wins over a SIGTERM that follows it: its handler requeues the job, and a
        # job that requeues itself also exits, so the SIGTERM is served too.
        if self.pending is None or self.pending[0] != signal.SIGUSR2:
            self.pending = (signum, frame)

    def serve(self) -> None:
        """Pass the pending signal on once the state is saved."""
        signum, frame = self.pending
        self.pending = None
        handler = self.previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise SystemExit(128 + signum)


def train_step(
    model: SCEModel,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    views: list[torch.Tensor],
    momentum: float,
    net: nn.Module | None = None,
    dist: distributed.Dist | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, SCETerms]:
    """One SCE step: loss under autocast (``amp_dtype``, else float16 with the scaler on),
    backward, update, EMA of the target. ``net``: the DDP wrapper of ``model``; the loss
    returned is then the mean over ranks. Nothing here waits for the device."""
    device_type = views[0].device.type
    dtype = amp_dtype or torch.float16
    with torch.autocast(device_type, dtype, enabled=scaler.is_enabled() or bool(amp_dtype)):
        loss, terms = (net or model)(views)
    reported = dist.mean(loss) if dist is not None else loss
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    model.momentum_update(momentum)
    return reported, terms


def data_loader(
    dataset: Any, batch_size: int, workers: int, device: torch.device, **kw: Any
) -> DataLoader:
    # Its workers ignore the job's stop signals, which the loop serves (see StopSafeDataLoader).
    return StopSafeDataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda", **kw
    )


def eval_loader(dataset: Dataset, workers: int, device: torch.device) -> DataLoader:
    """A loader over an evaluation set; a small one is transformed once and kept in memory
    (its transform is deterministic), so each evaluation is forward passes only."""
    x, _ = dataset[0]
    if x.numel() * x.element_size() * len(dataset) > 2**30:
        return data_loader(dataset, 512, workers, device)
    xs, ys = zip(*data_loader(dataset, 512, workers, torch.device("cpu")))
    return data_loader(TensorDataset(torch.cat(xs), torch.cat(ys)), 512, 0, device)


@dataclass
class TrainState:
    """What changes as the run trains; ``started``: this process's clock at the start."""

    epoch: int = 0
    step_in_epoch: int = 0
    elapsed: float = 0.0
    loss_sum: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def elapsed_now(self) -> float:
        return self.elapsed + time.perf_counter() - self.started


def initial_model(cfg: DictConfig) -> SCEModel:
    """The run's network at initialisation, a function of the config alone: the random-init
    baseline and a resumed run see the same network."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return build_model(cfg)


def optimizer_and_scaler(
    model: nn.Module, cfg: DictConfig, lr: float, cuda: bool
) -> tuple[torch.optim.Optimizer, torch.amp.GradScaler, torch.dtype | None]:
    """The optimizer, the AMP scaler and the autocast dtype (bfloat16, or None for float16
    with the scaler) the config asks for; AMP and fused steps only on CUDA."""
    optimizer = build_optimizer(
        [(n, p) for n, p in model.named_parameters() if p.requires_grad],
        cfg.optim.name,
        lr,
        cfg.optim.momentum,
        cfg.optim.weight_decay,
        cfg.optim.trust_coefficient,
        cfg.optim.exclude_bias_norm,
        fused=cuda and cfg.trainer.fused_optimizer,
    )
    bf16 = cuda and cfg.trainer.amp and cfg.trainer.amp_dtype == "bfloat16"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.trainer.amp and not bf16)
    return optimizer, scaler, torch.bfloat16 if bf16 else None


class Trainer:
    """What the config makes for the whole run: seeded, then the device, the data, the model,
    the optimizer and the AMP scaler."""

    def __init__(self, cfg: DictConfig, run_dir: Path, tracker: NullTracker) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        if cfg.trainer.num_threads:
            torch.set_num_threads(cfg.trainer.num_threads)
        self.cfg, self.run_dir, self.tracker = cfg, run_dir, tracker
        self.dist = dist = distributed.setup(cfg)
        device = pick_device(cfg.trainer.device)
        if device.type == "cuda" and dist.enabled:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device, cuda = device, device.type == "cuda"
        self.memory_format = torch.channels_last if cuda and cfg.trainer.channels_last else None

        # bank: the kNN bank and the probe's train split; query: the test split
        self.ssl_set, self.bank_set, self.query_set = build_datasets(cfg)
        self.device_data: DeviceData | None = None  # the views' source on the device path
        if use_device_path(cfg.trainer.data_path, cfg.dataset.name, device):
            self.device_data = DeviceData.from_dataset(
                self.ssl_set.base, cfg, device, dist.rank, dist.world_size
            )
        bs = cfg.trainer.batch_size
        self.steps_per_epoch = num_steps(len(self.ssl_set), bs, cfg.trainer.max_steps_per_epoch)
        self.total_steps = self.steps_per_epoch * cfg.trainer.epochs
        self.warmup_steps = self.steps_per_epoch * cfg.optim.warmup_epochs
        self.base_lr = cfg.optim.lr * bs / 256
        # what an evaluation depends on beyond the features (feature_metrics's arguments)
        knn = (cfg.trainer.knn_k, cfg.trainer.knn_temp)
        self.eval_settings = (cfg.dataset.num_classes, *knn, cfg.trainer.linear_probe)

        fmt = self.memory_format or torch.preserve_format
        self.model = initial_model(cfg).to(device, memory_format=fmt)  # saved and evaluated
        # called for the loss: the model, or its DistributedDataParallel wrapper
        self.net = distributed.prepare(self.model, dist, cfg.trainer.sync_bn)
        if cuda and cfg.trainer.compile:
            self.net = torch.compile(self.net)
        self.optimizer, self.scaler, self.amp_dtype = optimizer_and_scaler(
            self.model, cfg, self.base_lr, cuda
        )

    # Made at the first evaluation, after the first step: the whole sets, and this rank's shards.
    @cached_property
    def bank_loader(self) -> DataLoader:
        return eval_loader(self.bank_set, self.cfg.dataset.num_workers, self.device)

    @cached_property
    def query_loader(self) -> DataLoader:
        return eval_loader(self.query_set, self.cfg.dataset.num_workers, self.device)

    @cached_property
    def shards(self) -> tuple[DataLoader, ...]:
        if not self.dist.enabled:
            return self.bank_loader, self.query_loader
        sets, workers = (self.bank_set, self.query_set), self.cfg.dataset.num_workers
        return tuple(
            eval_loader(Subset(d, self.dist.shard(len(d))), workers, self.device) for d in sets
        )


def _beating(loader: Iterable[Any], t: Trainer, step: int) -> Iterator[Any]:
    """``loader``'s batches, each a heartbeat: a long evaluation never looks stalled."""
    for batch in loader:
        record.beat(t.run_dir, step, t.total_steps)
        yield batch


def evaluate(
    t: Trainer, backbone: nn.Module | None = None, shared: bool = True, step: int = 0
) -> dict[str, float]:
    """``knn_top1`` (and ``probe_top1``) of a backbone's frozen features (the online one's by
    default), beating the heartbeat at ``step``. ``shared``: each rank extracts its shards,
    with rank 0's BatchNorm statistics; else this rank evaluates alone."""
    backbone = backbone or t.model.backbone
    ctx = t.dist if shared else distributed.Dist()
    ctx.broadcast_buffers(backbone)
    loaders = t.shards if shared else (t.bank_loader, t.query_loader)
    bank, queries = (
        [
            ctx.gather_shards(x, len(dataset))
            for x in extract_features(backbone, _beating(loader, t, step), t.device)
        ]
        for loader, dataset in zip(loaders, (t.bank_set, t.query_set))
    )
    return feature_metrics(bank, queries, *t.eval_settings)


def baselines(t: Trainer) -> dict[str, float]:
    """The same evaluation at random initialisation (``*_init``) and of raw pixels
    (``*_pixels``), each cached (:mod:`sce_sweeps.engine.baselines`)."""
    init = initial_model(t.cfg).backbone.to(t.device)
    key, step = init_key(init, t.cfg, t.device), t.total_steps - 1

    def evaluate_init() -> dict[str, float]:
        metrics = evaluate(t, init, shared=False, step=step)
        return {f"{name}_init": value for name, value in metrics.items()}

    metrics = cached_metrics(t.run_dir.parent / CACHE / f"{key}.json", evaluate_init)
    bank, queries = _beating(t.bank_loader, t, step), _beating(t.query_loader, t, step)
    metrics.update(pixel_metrics(bank, queries, *t.eval_settings))
    return metrics


def restore(t: Trainer, resume_state: dict[str, Any] | None) -> TrainState:
    """The state to train from: the checkpoint's, or a fresh one."""
    if resume_state is None:
        if t.dist.is_main:
            record.truncate_metrics(t.run_dir)
        return TrainState()
    if resume_state["config_hash"] != config_hash(t.cfg):
        raise ValueError(
            f"{t.run_dir / record.CHECKPOINT} belongs to another config "
            f"(hash {resume_state['config_hash']} != {config_hash(t.cfg)}); "
            "use a new run dir or remove the checkpoint"
        )
    t.model.load_state_dict(resume_state["model"])
    t.optimizer.load_state_dict(resume_state["optimizer"])
    t.scaler.load_state_dict(resume_state["scaler"])
    ckpt.set_rng_state(resume_state["rng"])
    # every rank reads the same rows; rank 0 drops the lines of a later epoch
    history = record.truncate_metrics(t.run_dir, resume_state["epoch"], t.dist.is_main)
    kept = ("epoch", "step_in_epoch", "elapsed", "loss_sum")
    return TrainState(**{k: resume_state[k] for k in kept}, history=history)


def save(t: Trainer, state: TrainState) -> None:
    """Write everything a resume needs to the run dir's checkpoint, atomically (rank 0)."""
    if not t.dist.is_main:
        return
    checkpoint = {
        "model": t.model.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "scaler": t.scaler.state_dict(),
        "rng": ckpt.rng_state(),
        "epoch": state.epoch,
        "step_in_epoch": state.step_in_epoch,
        "elapsed": state.elapsed_now(),
        "loss_sum": float(state.loss_sum),
        "tracker_run_hash": t.tracker.run_hash,
        "config": run_config(t.cfg),
        "config_hash": config_hash(t.cfg),
    }
    record.save_checkpoint(checkpoint, t.run_dir / record.CHECKPOINT)


def _cpu_loader(t: Trainer, state: TrainState) -> DataLoader:
    """The rest of the epoch's batches from DataLoader workers (``trainer.data_path=cpu``)."""
    cfg = t.cfg
    sampler = EpochSampler(
        len(t.ssl_set),
        cfg.seed,
        state.epoch,
        cfg.trainer.batch_size,
        start_step=state.step_in_epoch,
        max_steps=t.steps_per_epoch,
        rank=t.dist.rank,
        world_size=t.dist.world_size,
    )
    return data_loader(
        t.ssl_set,
        sampler.local_batch_size,
        cfg.dataset.num_workers,
        t.device,
        sampler=sampler,
        collate_fn=collate_views,
        # its own generator: a DataLoader draws its workers' base seed from the global one
        # as each epoch starts, which a run resumed mid-epoch would draw once more
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _check_finite(value: float, state: TrainState, step: int) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(f"loss is {value} at epoch {state.epoch + 1}, step {step}")


def run_epoch(t: Trainer, state: TrainState, stop: StopSignals) -> None:
    """Train the rest of ``state.epoch``; on a stop signal, checkpoint and pass it on.

    The loss is read back (a wait for the device) only every ``LOG_EVERY`` steps, before a
    checkpoint and at the end of the epoch; a non-finite one stops the run there."""
    cfg = t.cfg
    if t.device_data is not None:
        loader = t.device_data.epoch(state.epoch, state.step_in_epoch)
    else:
        loader = _cpu_loader(t, state)
    bar = tqdm(
        loader,
        total=t.steps_per_epoch - state.step_in_epoch,
        desc=f"epoch {state.epoch + 1}/{cfg.trainer.epochs}",
        disable=None if cfg.trainer.progress else True,  # None: off when not a tty
        leave=False,
    )
    fmt = t.memory_format or torch.contiguous_format
    for views, _ in bar:
        step = state.epoch * t.steps_per_epoch + state.step_in_epoch
        lr = lr_at(step, t.total_steps, t.warmup_steps, t.base_lr)
        set_lr(t.optimizer, lr)
        views = [v.to(t.device, non_blocking=True, memory_format=fmt) for v in views]
        if step == 0:  # a few (weak, strong) pairs as the network sees them
            pairs = torch.stack([v[:8] for v in views[:2]], 1).flatten(0, 1)
            t.tracker.log_images("views", pairs, step)
        momentum = momentum_at(
            step, t.total_steps, cfg.model.initial_momentum, cfg.model.momentum_schedule
        )
        loss, terms = train_step(
            t.model, t.optimizer, t.scaler, views, momentum, t.net, t.dist, t.amp_dtype
        )
        state.loss_sum += loss.detach().double()  # a float64 tensor within the epoch
        state.step_in_epoch += 1
        record.beat(t.run_dir, step, t.total_steps)  # heartbeat.json, every few seconds
        if step % LOG_EVERY == 0:
            loss_value = loss.item()
            _check_finite(loss_value, state, step)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            logged = {"loss": loss_value, "lr": lr, "momentum": momentum}
            logged.update(coeff=cfg.loss.coeff, temp=cfg.loss.temp, temp_m=cfg.loss.temp_m)
            logged.update(sce_diagnostics(terms))
            t.tracker.log(logged, step, state.epoch + 1, {"subset": "train"})
        checked = not t.dist.enabled or state.step_in_epoch % STOP_CHECK_EVERY == 0
        if checked and t.dist.any(stop.pending is not None, t.device):
            _check_finite(float(state.loss_sum), state, step)
            save(t, state)
            _serve(stop)
    bar.close()
    state.loss_sum = float(state.loss_sum)
    _check_finite(state.loss_sum, state, (state.epoch + 1) * t.steps_per_epoch - 1)


def _serve(stop: StopSignals) -> None:
    """Pass on this process's stop signal; a rank without one stops with its peers.

    Every rank first leaves the process group: a process that exits with it alive may abort
    (SIGABRT) at shutdown, gloo's threads still holding tensors of its last collectives."""
    distributed.teardown()
    if stop.pending:
        stop.serve()
    else:
        raise SystemExit(128 + signal.SIGTERM)


def _print_epoch(t: Trainer, row: dict[str, Any], train_s: float) -> None:
    """One line per epoch on stderr: loss, images/s, kNN top-1 when evaluated, time left."""
    epochs, done = t.cfg.trainer.epochs, row["epoch"]
    images = t.steps_per_epoch * t.cfg.trainer.batch_size
    left = row["elapsed_s"] / done * (epochs - done)  # resumed runs: a rough estimate
    line = f"epoch {done}/{epochs}: loss {row['loss']:.4f}, {images / max(train_s, 1e-9):.0f} img/s"
    if "knn_top1" in row:
        line += f", kNN top-1 {row['knn_top1']:.2f}%"
    if "probe_top1" in row:
        line += f", linear probe top-1 {row['probe_top1']:.2f}%"
    print(f"{line}, {left / 60:.1f} min left", file=sys.stderr, flush=True)


def end_epoch(t: Trainer, state: TrainState) -> dict[str, Any]:
    """Close ``state.epoch``: its metrics row (evaluated when due) to metrics.jsonl and the
    tracker, and the state moved to the next epoch. Returns the row."""
    cfg, epoch = t.cfg, state.epoch
    end_step = (epoch + 1) * t.steps_per_epoch
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "loss": state.loss_sum / state.step_in_epoch,
        "lr": lr_at(end_step - 1, t.total_steps, t.warmup_steps, t.base_lr),
    }
    every = cfg.trainer.eval_every
    train_s = state.elapsed_now() - (state.history[-1]["elapsed_s"] if state.history else 0.0)
    if epoch + 1 == cfg.trainer.epochs or (every and (epoch + 1) % every == 0):
        row.update(evaluate(t, step=end_step - 1))
    row["elapsed_s"] = state.elapsed_now()
    if t.dist.is_main and cfg.trainer.progress and not sys.stderr.isatty():
        _print_epoch(t, row, train_s)  # the bar is hidden in a log: never silent
    state.history.append(row)
    state.epoch, state.step_in_epoch, state.loss_sum = epoch + 1, 0, 0.0
    if not t.dist.is_main:
        return row
    record.append_metrics(t.run_dir, row)
    t.tracker.log({"loss_epoch": row["loss"]}, end_step, epoch + 1, {"subset": "train"})
    evaluated = {k: row[k] for k in EVAL_METRICS if k in row}
    if evaluated:
        t.tracker.log(evaluated, end_step, epoch + 1, {"subset": "eval"})
    return row


def train(
    cfg: DictConfig,
    run_dir: Path,
    tracker: NullTracker | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], bool] | None = None,
    resume_state: dict[str, Any] | None = None,
    on_peer_failure: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train SCE in ``run_dir`` (from ``resume_state``); return the final metrics.
    ``on_epoch_end(epoch, row)`` returning True checkpoints and raises :class:`Stopped`;
    ``on_peer_failure(reason)``: rank 0's record of another rank's failure."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = distributed.setup(cfg)
    with distributed.FailureWatch(ctx, run_dir, on_peer_failure, expected=(Stopped,)):
        t = Trainer(cfg, run_dir, tracker or NullTracker())
        state = restore(t, resume_state)
        state.started = time.perf_counter()
        t.model.train()
        with StopSignals() as stop:
            while state.epoch < cfg.trainer.epochs:
                run_epoch(t, state, stop)
                row = end_epoch(t, state)
                stop_now = bool(on_epoch_end(state.epoch, row)) if on_epoch_end else False
                stop_now = t.dist.broadcast_flag(stop_now, t.device)  # rank 0's verdict
                last = state.epoch == cfg.trainer.epochs
                if last or stop_now or state.epoch % cfg.trainer.checkpoint_every == 0:
                    save(t, state)
                if stop_now:
                    raise Stopped(f"stopped after epoch {state.epoch}")
                if t.dist.any(stop.pending is not None, t.device):
                    _serve(stop)

    final = state.history[-1]
    result = {k: final[k] for k in EVAL_METRICS if k in final}
    result.update(loss=final["loss"], epochs=final["epoch"], wall_time_s=state.elapsed_now())
    result.setdefault("knn_top1", math.nan)
    if cfg.dataset.skip_unreadable:  # the images left out, over the splits read
        result["unreadable_images"] = len(unreadable_of(t.ssl_set, t.bank_set, t.query_set))
    if cfg.trainer.eval_random_init and t.dist.is_main:  # after training: never before step 1
        result.update(baselines(t))
    return result
