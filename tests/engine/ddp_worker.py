"""Entry point of the multi-process tests: ``python -m tests.engine.ddp_worker MODE RUN_DIR
OVERRIDES...`` as one rank of a gloo process group (RANK, WORLD_SIZE, MASTER_ADDR/PORT set by
the test), or as a single process.

Modes: ``train`` runs the real trainer in RUN_DIR, resuming from its checkpoint as the app
does, and writes what ``train`` returned to ``result-<rank>.json`` (``train_fail``: the rank
FAIL_RANK raises OSError as its step FAIL_STEP begins, and a peer's failure is recorded in
``peer_failure.txt`` as the app records it in result.json; ``train_stop``: the rank STOP_RANK of the
environment sends itself SIGUSR2 as its step STOP_STEP begins, as SLURM's warning would);
``train_split`` does too in one process whose online trunk normalises each chunk of the batch
on its own (split BN, ``model.target_bn_splits`` chunks), as the ranks' BatchNorm does;
``queue`` runs one SCE step of the model with its collectives and writes, from rank 0,
this step's keys of every rank and the queue; ``evaluate`` evaluates RUN_DIR's checkpoint
(``evaluate`` of the trainer) and writes, from each rank, the metrics and the number of
images its backbone saw to ``evaluate-<rank>.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from hydra import compose, initialize_config_dir

from sce_sweeps.app import CONF_DIR
from sce_sweeps.engine import distributed
from sce_sweeps.engine import train as trainer
from sce_sweeps.engine.train import train
from sce_sweeps.runtime import record
from sce_sweeps.sce import build_model, convert_split_bn


def _split_online_bn(cfg):
    """The run's model, its online trunk's BatchNorm split in ``model.target_bn_splits``
    contiguous chunks: as many as the ranks it stands for, as the target's shuffle BN."""
    model = build_model(cfg)
    convert_split_bn(model.backbone, cfg.model.target_bn_splits)
    return model


def _queue_step(cfg, out: Path) -> None:
    """One forward of the wrapped model on rank-specific views; rank 0 saves what it saw."""
    ctx = distributed.setup(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    net = distributed.prepare(model, ctx)
    generator = torch.Generator().manual_seed(100 + ctx.rank)  # each rank its own images
    n, size = cfg.trainer.batch_size // ctx.world_size, cfg.dataset.image_size
    views = [torch.randn(n, cfg.dataset.in_channels, size, size, generator=generator)] * 2
    views[1] = views[1].flip(-1)
    with torch.no_grad():  # this rank's keys, computed alone (standard BN: no collectives)
        keys = [model.target(v) for v in (views[:2] if cfg.loss.sym else views[:1])]
    net(views)
    every = [None] * ctx.world_size
    dist.all_gather_object(every, {"keys": keys, "queue": model.queue.clone()})
    if ctx.is_main:
        torch.save(every, out / "queue.pt")
    distributed.teardown()


def _signal_at(step_fn, step: int):
    """``step_fn``, sending SIGUSR2 to this process as its call number ``step`` (0-based)
    begins."""
    calls = []

    def wrapped(*args, **kwargs):
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGUSR2)
        calls.append(None)
        return step_fn(*args, **kwargs)

    return wrapped


def _fail_at(step_fn, step: int):
    """``step_fn``, raising OSError (as a full disk would) as its call number ``step`` begins."""
    calls = []

    def wrapped(*args, **kwargs):
        if len(calls) == step:
            raise OSError(28, "No space left on device")
        calls.append(None)
        return step_fn(*args, **kwargs)

    return wrapped


def _evaluate(cfg, run_dir: Path) -> None:
    """Evaluate the checkpoint's online backbone as the trainer does; count the images each
    rank's backbone sees."""
    t = trainer.Trainer(cfg, run_dir, trainer.NullTracker())
    t.model.load_state_dict(record.load_checkpoint(run_dir / record.CHECKPOINT)["model"])
    seen = []
    t.model.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    metrics = trainer.evaluate(t)
    out = {"metrics": metrics, "images": sum(seen)}
    (run_dir / f"evaluate-{t.dist.rank}.json").write_text(json.dumps(out))
    distributed.teardown()


def main() -> None:
    mode, run_dir, overrides = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    if mode == "queue":
        _queue_step(cfg, run_dir)
        return
    if mode == "evaluate":
        _evaluate(cfg, run_dir)
        return
    if mode == "train_split":
        trainer.build_model = _split_online_bn
    if mode == "train_stop" and os.environ["RANK"] == os.environ["STOP_RANK"]:
        trainer.train_step = _signal_at(trainer.train_step, int(os.environ["STOP_STEP"]))
    kwargs = {}
    if mode == "train_fail":
        if os.environ["RANK"] == os.environ["FAIL_RANK"]:
            trainer.train_step = _fail_at(trainer.train_step, int(os.environ["FAIL_STEP"]))

        def on_peer_failure(reason: str) -> None:
            (run_dir / "peer_failure.txt").write_text(reason)

        kwargs["on_peer_failure"] = on_peer_failure
    state = record.load_checkpoint(run_dir / record.CHECKPOINT)
    result = train(cfg, run_dir, resume_state=state, **kwargs)
    rank = os.environ.get("RANK", "0")
    (run_dir / f"result-{rank}.json").write_text(json.dumps(result))
    distributed.teardown()


if __name__ == "__main__":
    main()
