"""Throughput of the full SCE training step against the bare networks on the same batch.

Both are timed in one process on the same random batch, in alternating rounds:

- full: ``sce_sweeps.engine.train.train_step`` as the training loop calls it (SCE loss over
  the queue, backward, optimizer step, EMA of the target, queue update) plus the loss read-back
  the loop does each step;
- bare: the same forwards as the SCE model (``SCEModel.branches``: the target on view0, and
  view1 with ``sym``; the online branch on the other views), a plain cosine loss over the same
  (online, target) pairs in fp32, backward and optimizer step; no queue, no softmax, no EMA,
  no read-back.

Their ratio is the framework's overhead. Usage (any Hydra override of the app)::

    python benchmarks/step_throughput.py                                 # the demo model, CPU
    python benchmarks/step_throughput.py dataset=cifar10 model=resnet18_cifar
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402

from sce_sweeps.app import CONF_DIR  # noqa: E402
from sce_sweeps.data.views import local_crops  # noqa: E402
from sce_sweeps.engine.optim import build_optimizer  # noqa: E402
from sce_sweeps.engine.train import build_model, pick_device, train_step  # noqa: E402


def _timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=resnet18_cifar")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)

    device = pick_device(cfg.trainer.device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda and cfg.trainer.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(cfg).to(device, memory_format=fmt)
    optimizer = build_optimizer(
        [(n, p) for n, p in model.named_parameters() if p.requires_grad],
        cfg.optim.name,
        cfg.optim.lr,
        cfg.optim.momentum,
        cfg.optim.weight_decay,
        cfg.optim.trust_coefficient,
        cfg.optim.exclude_bias_norm,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and cfg.trainer.amp)
    bs, c = cfg.trainer.batch_size, cfg.dataset.in_channels
    size = cfg.aug.crop_size
    views = [torch.randn(bs, c, size, size) for _ in range(2)]
    views += [torch.randn(bs, c, local, local) for local, _ in local_crops(cfg.aug)]
    views = [v.to(device, memory_format=fmt) for v in views]

    def full() -> None:
        loss, _ = train_step(model, optimizer, scaler, views, cfg.model.initial_momentum)
        loss.item()

    def bare() -> None:
        with torch.autocast(device.type, enabled=scaler.is_enabled()):
            online, targets, pairs = model.branches(views)
        loss = -torch.stack(
            [
                (F.normalize(online[o].float(), dim=1) * targets[t].float()).sum(1).mean()
                for o, t in pairs
            ]
        ).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train()
    for fn in (full, bare):  # warm-up (allocator, cuDNN autotuning, threads)
        _timed(fn, 2, device)
    times: dict[str, list[float]] = {"full": [], "bare": []}
    for _ in range(args.rounds):
        for name, fn in (("full", full), ("bare", bare)):
            times[name].append(_timed(fn, args.steps, device))
    rate = {k: bs * args.steps / statistics.median(v) for k, v in times.items()}

    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; amp={scaler.is_enabled()}; channels_last={fmt is torch.channels_last}")
    print(
        f"model: {cfg.model.arch} width {cfg.model.width}, batch {bs}, "
        f"{len(views)} views of {size}px, queue {cfg.loss.queue_size}"
    )
    print(f"full SCE step      : {rate['full']:10.1f} images/s")
    print(f"bare fwd/bwd       : {rate['bare']:10.1f} images/s")
    print(f"ratio full / bare  : {rate['full'] / rate['bare']:10.3f}")


if __name__ == "__main__":
    main()
