"""End-to-end throughput of SCE training: does the data path keep up with the step?

In one process, on the configured run (any Hydra override of the app), in images/s (samples
of the train split, each with all its views):

(a) full epochs through the real data path: the trainer's own ``run_epoch`` (batches, views,
    step, the loop's logging), once with the CPU DataLoader path (``trainer.data_path=cpu``:
    ``dataset.num_workers`` workers, torchvision on PIL images) and once with the device path
    (``trainer.data_path=device``: the split on the device, Kornia on whole batches);
(b) the same number of steps of ``train_step`` on one batch of views already on the device;
(c) the bare networks on that batch: the same forwards, a cosine loss, backward, optimizer.

It prints (a)/(b) for each path (1.0: the data path costs nothing) and (b)/(c) (the SCE
step's overhead over the networks), and the wall time that (a) implies for the configured
number of epochs over the full train split (with ``experiment=cifar10``: CIFAR-10's 50k images
and the official 200 epochs), training steps only (no kNN evaluations). Usage::

    python benchmarks/epoch_throughput.py                                  # the embedded default
    python benchmarks/epoch_throughput.py trainer.max_steps_per_epoch=40  # shorter epochs
    python benchmarks/epoch_throughput.py experiment=cifar10 dataset.root=<cifar> \\
        trainer.device=cuda dataset.num_workers=8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hydra import compose, initialize_config_dir  # noqa: E402
from step_throughput import cosine_loss  # noqa: E402

from sce_sweeps.app import CONF_DIR  # noqa: E402
from sce_sweeps.config import TRAIN_SIZES  # noqa: E402
from sce_sweeps.data.device import DeviceData  # noqa: E402
from sce_sweeps.engine.train import (  # noqa: E402
    LOG_EVERY,
    StopSignals,
    Trainer,
    TrainState,
    run_epoch,
    train_step,
)
from sce_sweeps.runtime.tracking import NullTracker  # noqa: E402


def _copy(t: Trainer, **changes: Any) -> Trainer:
    """A shallow copy of the trainer ``t`` with ``changes`` to its attributes (e.g.
    ``device_data=None``: batches from the DataLoader)."""
    t = copy.copy(t)
    vars(t).update(changes)
    return t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _epochs(t: Trainer, epochs: int) -> Callable[[], None]:
    """Run ``epochs`` full epochs of the trainer's own loop."""

    def run() -> None:
        with StopSignals() as stop:
            for epoch in range(epochs):
                run_epoch(t, TrainState(epoch=epoch), stop)

    return run


def _steps(t: Trainer, views: list[torch.Tensor], steps: int, bare: bool) -> Callable[[], None]:
    """``steps`` SCE steps (or bare steps) on one batch already on the device."""
    model, optimizer, scaler = t.model, t.optimizer, t.scaler
    momentum = t.cfg.model.initial_momentum

    def sce() -> None:
        for i in range(steps):
            loss, _ = train_step(
                model, optimizer, scaler, views, momentum, t.net, t.dist, t.amp_dtype
            )
            if i % LOG_EVERY == 0:
                loss.item()

    def networks() -> None:  # the bare step of step_throughput.py
        dtype = t.amp_dtype or torch.float16
        autocast = scaler.is_enabled() or t.amp_dtype is not None
        for _ in range(steps):
            with torch.autocast(views[0].device.type, dtype, enabled=autocast):
                online, targets, pairs = model.branches(views)
            loss = cosine_loss(online, targets, pairs)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return networks if bare else sce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per data path")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (a), (b), (c)")
    parser.add_argument(
        "--paths", default="cpu,device", help="data paths to time, of cpu and device"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=cifar10")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*args.overrides, "tracker=none", "trainer.progress=false"],
        )
    cfg.trainer.data_path = "cpu"  # the device path is added below, on the same trainer
    paths = args.paths.split(",")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        t = Trainer(cfg, Path(run_dir), NullTracker())
    device_data = DeviceData.from_dataset(t.ssl_set.base, cfg, t.device)
    trainers = {
        "cpu": _copy(t, device_data=None),
        "device": _copy(t, device_data=device_data),
    }
    print(
        "set-up (data, model, evaluation sets, split on the device): "
        f"{time.perf_counter() - start:.1f} s"
    )
    t.model.train()
    steps, bs = t.steps_per_epoch, cfg.trainer.batch_size
    views, _ = device_data.batch(0, 0)
    fmt = t.memory_format or torch.contiguous_format
    views = [v.contiguous(memory_format=fmt) for v in views]

    # warm-up: a few steps of each (threads, allocator, cuDNN autotuning, first workers)
    warm = _copy(t, steps_per_epoch=min(3, steps))
    for path in paths:
        _epochs(_copy(trainers[path], steps_per_epoch=warm.steps_per_epoch), 1)()
    _steps(t, views, 3, bare=False)()
    _steps(t, views, 3, bare=True)()

    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for path in paths:
            times.setdefault(f"(a) {path}", []).append(
                _timed(_epochs(trainers[path], args.epochs), t.device)
            )
        n = steps * args.epochs
        times.setdefault("(b)", []).append(_timed(_steps(t, views, n, bare=False), t.device))
        times.setdefault("(c)", []).append(_timed(_steps(t, views, n, bare=True), t.device))
    images = steps * args.epochs * bs
    rate = {k: images / statistics.median(v) for k, v in times.items()}

    cuda = t.device.type == "cuda"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    tr = cfg.trainer
    amp = t.scaler.is_enabled() or t.amp_dtype is not None
    print(
        f"device: {name}; amp={amp}; channels_last={t.memory_format is not None}; "
        f"fused_optimizer={cuda and tr.fused_optimizer}; compile={cuda and tr.compile}; "
        f"DataLoader workers: {cfg.dataset.num_workers}"
    )
    print(
        f"run: {cfg.dataset.name}, {len(t.ssl_set)} train images, {steps} steps of {bs} per "
        f"epoch, {len(views)} views ({cfg.aug.mode}), {cfg.model.arch} width {cfg.model.width}"
    )
    labels = {
        "(a) cpu": "(a) epochs, CPU DataLoader path",
        "(a) device": "(a) epochs, device path",
        "(b)": "(b) SCE steps, one batch on device",
        "(c)": "(c) bare networks, same batch",
    }
    for key, value in rate.items():
        print(f"{labels[key]:40s}: {value:10.1f} images/s")
    for path in paths:
        print(f"(a)/(b) {path:33s}: {rate[f'(a) {path}'] / rate['(b)']:10.3f}")
    print(f"(b)/(c) {'':33s}: {rate['(b)'] / rate['(c)']:10.3f}")
    full = cfg.dataset.train_samples or TRAIN_SIZES.get(cfg.dataset.name, len(t.ssl_set))
    for path in paths:
        minutes = tr.epochs * (full // bs) * bs / rate[f"(a) {path}"] / 60
        print(
            f"implied: {tr.epochs} epochs of {full} images on the {path} path: {minutes:.1f} min "
            "(training steps only)"
        )


if __name__ == "__main__":
    main()
