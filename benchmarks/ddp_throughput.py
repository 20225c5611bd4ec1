"""Step throughput of multi-process training against one process, on the CPU (gloo).

Times ``sce_sweeps.engine.train.train_step`` on the same global batch B of random images:
once in one process (batch B), once in ``--procs`` processes of a gloo group (B / procs
each, DistributedDataParallel, keys all-gathered into the queue, shuffle BN across ranks if
the config asks for it). Prints the images/s of both and their ratio. On a machine with
fewer cores than processes x threads the processes compete for the cores; the figure then
measures the overhead of the collectives, not a speed-up. Usage (any Hydra override)::

    python benchmarks/ddp_throughput.py                       # the demo model, 2 processes
    python benchmarks/ddp_throughput.py --procs 2 model=resnet18_tiny trainer.batch_size=64
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hydra import compose, initialize_config_dir  # noqa: E402

from sce_sweeps.app import CONF_DIR  # noqa: E402
from sce_sweeps.engine import distributed  # noqa: E402
from sce_sweeps.engine.optim import build_optimizer  # noqa: E402
from sce_sweeps.engine.train import train_step  # noqa: E402
from sce_sweeps.sce import build_model  # noqa: E402


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(args.threads)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "config", overrides=[*args.overrides, f"trainer.devices={world}", "trainer.device=cpu"]
        )
    ctx = distributed.setup(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    net = distributed.prepare(model, ctx)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    o = cfg.optim
    optimizer = build_optimizer(
        params, o.name, o.lr, o.momentum, o.weight_decay, o.trust_coefficient
    )
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    n = cfg.trainer.batch_size // world
    size, channels = cfg.aug.crop_size, cfg.dataset.in_channels
    views = [torch.randn(n, channels, size, size) for _ in range(2)]

    def step() -> None:
        loss, _ = train_step(model, optimizer, scaler, views, 0.99, net, ctx)
        loss.item()

    for _ in range(args.warmup):
        step()
    ctx.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    ctx.barrier()
    if ctx.is_main:
        out[world] = args.steps * cfg.trainer.batch_size / (time.perf_counter() - start)
    distributed.teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=2, help="processes of the DDP run")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=resnet18_tiny")
    args = parser.parse_args()
    out = mp.Manager().dict()
    for world in (1, args.procs):
        mp.spawn(_worker, args=(world, _free_port(), args, out), nprocs=world, join=True)
    one, many = out[1], out[args.procs]
    print(f"1 process:        {one:8.1f} images/s (global batch, {args.threads} thread(s))")
    print(f"{args.procs} processes (DDP): {many:8.1f} images/s ({args.threads} thread(s) each)")
    print(f"ratio {args.procs} / 1:     {many / one:8.2f}")


if __name__ == "__main__":
    main()
