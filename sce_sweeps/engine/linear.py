"""Linear evaluation: a linear classifier trained on the frozen trunk of a pretrained run, as
the official protocol, with the preset's schedule (``conf/linear``); its state in
``<run dir>/linear/`` resumes exactly, even mid-epoch, like pretraining. Alone on a finished
run: ``python -m sce_sweeps.cli linear RUN_DIR [--random-init] [OVERRIDES...]`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from sce_sweeps.app import CONF_DIR
from sce_sweeps.config import ConfigError, validate
from sce_sweeps.data import EpochSampler, SSLDataset, build_datasets, collate_views
from sce_sweeps.data import steps_per_epoch as num_steps
from sce_sweeps.data.views import MultiViewTransform, _FitSize
from sce_sweeps.engine import checkpoint as ckpt
from sce_sweeps.engine.optim import set_lr
from sce_sweeps.engine.train import (
    StopSignals,
    data_loader,
    eval_loader,
    initial_model,
    pick_device,
)
from sce_sweeps.runtime import confighash, record
from sce_sweeps.runtime.tracking import NullTracker, make_tracker

LINEAR_DIR = "linear"  # <run dir>/linear: the stage's checkpoint.pt and metrics.jsonl


class PretrainingNotFoundError(RuntimeError):
    """The run dir has no pretraining checkpoint to evaluate."""


def linear_train_transform(cfg: DictConfig) -> MultiViewTransform:
    """A crop (``linear.train_crop``: ``random_resized``, or ``pad_crop``: the eval size,
    then a random crop after zero padding, as the official CIFAR-10 protocol) + flip."""
    d, size, lin = cfg.dataset, cfg.aug.crop_size, cfg.linear
    if lin.train_crop == "pad_crop":
        crop: list[Any] = [_FitSize(size), T.RandomCrop(size, padding=lin.crop_padding)]
    else:
        crop = [T.RandomResizedCrop(size, scale=tuple(lin.crop_scale))]
    normalize = T.Normalize([float(m) for m in d.mean], [float(s) for s in d.std])
    rest = [T.RandomHorizontalFlip(), T.ToTensor(), normalize]
    return MultiViewTransform([T.Compose(crop + rest)])


def lr_at_epoch(cfg: DictConfig, step: int, steps_per_epoch: int) -> float:
    """``linear.lr`` x batch/256, then x gamma at each milestone (step) or cosine to 0."""
    lin = cfg.linear
    base = lin.lr * lin.batch_size / 256
    if lin.schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / (lin.epochs * steps_per_epoch)))
    epoch = step // steps_per_epoch
    return base * lin.gamma ** sum(epoch >= m for m in lin.milestones)


def linear_hash(pretraining_hash: str, cfg: DictConfig) -> str:
    """The pretraining's config hash and the linear settings, hashed: a checkpoint of other
    settings is started over."""
    linear = OmegaConf.to_container(cfg.linear, resolve=True)
    return confighash.config_hash({"pretraining": pretraining_hash, "linear": linear})


@dataclass
class Probe:
    """The frozen trunk, the classifier and what trains it."""

    trunk: nn.Module
    classifier: nn.Linear
    optimizer: torch.optim.Optimizer
    device: torch.device


def build_probe(cfg: DictConfig, pretrained: dict[str, torch.Tensor] | None) -> Probe:
    """The run's online trunk (``pretrained``, or at random initialisation), frozen, and a
    linear classifier on its features."""
    device = pick_device(cfg.trainer.device)
    model = initial_model(cfg)
    torch.manual_seed(cfg.seed)  # the classifier's initialisation: a function of the seed
    if pretrained is not None:
        model.load_state_dict(pretrained)
    trunk = model.backbone.to(device).eval().requires_grad_(False)
    classifier = nn.Linear(model.projector[0].in_features, cfg.dataset.num_classes)
    nn.init.normal_(classifier.weight, std=0.01)  # on the CPU: the same on every device
    nn.init.zeros_(classifier.bias)
    classifier = classifier.to(device)
    lin = cfg.linear
    optimizer = torch.optim.SGD(
        classifier.parameters(),
        lr=lin.lr * lin.batch_size / 256,
        momentum=lin.momentum,
        weight_decay=lin.weight_decay,
    )
    return Probe(trunk, classifier, optimizer, device)


@torch.no_grad()
def accuracy(probe: Probe, loader: DataLoader) -> tuple[float, float]:
    """Top-1 and top-5 (%) of the classifier on a loader of (image, label)."""
    top1 = top5 = total = 0
    k = min(5, probe.classifier.out_features)
    for x, y in loader:
        x, y = x.to(probe.device), y.to(probe.device)
        best = probe.classifier(probe.trunk(x)).topk(k, dim=1).indices
        top1 += (best[:, 0] == y).sum().item()
        top5 += (best == y[:, None]).any(dim=1).sum().item()
        total += y.numel()
    return 100.0 * top1 / total, 100.0 * top5 / total


def _save(probe: Probe, path: Path, state: dict[str, Any]) -> None:
    trained = {"classifier": probe.classifier, "optimizer": probe.optimizer}
    saved = {name: x.state_dict() for name, x in trained.items()}
    record.save_checkpoint({**state, **saved, "rng": ckpt.rng_state()}, path)


def run_linear(
    cfg: DictConfig, run_dir: Path, tracker: NullTracker | None = None, random_init: bool = False
) -> dict[str, Any]:
    """Linear evaluation of ``run_dir``'s trunk (``random_init``: untrained, keys in ``_init``):
    the last epoch's ``linear_top1``/``_top5``, the best evaluated epoch's (the official
    number), ``linear_loss``, ``linear_epochs`` and ``linear_images_per_s``."""
    tracker = tracker or NullTracker()
    lin = cfg.linear
    pretraining = record.load_checkpoint(run_dir / record.CHECKPOINT)
    if pretraining is None:
        raise PretrainingNotFoundError(f"{run_dir} has no {record.CHECKPOINT} to evaluate")
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    probe = build_probe(cfg, None if random_init else pretraining["model"])
    out = run_dir / (LINEAR_DIR + ("_random_init" if random_init else ""))
    out.mkdir(parents=True, exist_ok=True)
    path = out / record.CHECKPOINT

    _, bank, test = build_datasets(cfg)
    train_set = SSLDataset(bank.base, linear_train_transform(cfg))
    steps = num_steps(len(train_set), lin.batch_size, lin.max_steps_per_epoch)
    test_loader = eval_loader(test, cfg.dataset.num_workers, probe.device)

    run_hash = linear_hash(pretraining["config_hash"], cfg)
    state = {"epoch": 0, "step_in_epoch": 0, "loss_sum": 0.0, "hash": run_hash, "best": None}
    saved = record.load_checkpoint(path)
    if saved is not None and saved["hash"] == state["hash"]:
        probe.classifier.load_state_dict(saved["classifier"])
        probe.optimizer.load_state_dict(saved["optimizer"])
        ckpt.set_rng_state(saved["rng"])
        state = {k: saved.get(k, state[k]) for k in state}
    else:
        record.truncate_metrics(out)
    suffix = "_init" if random_init else ""
    trained_s, trained_steps = 0.0, 0
    probe.classifier.train()
    with StopSignals() as stop:
        while state["epoch"] < lin.epochs:
            start, first = time.perf_counter(), state["step_in_epoch"]
            sampler = EpochSampler(
                len(train_set), cfg.seed, state["epoch"], lin.batch_size, first, steps
            )
            loader = data_loader(
                train_set, lin.batch_size, cfg.dataset.num_workers, probe.device, sampler=sampler,
                collate_fn=collate_views,
            )  # fmt: skip
            for (x,), y in loader:
                step = state["epoch"] * steps + state["step_in_epoch"]
                set_lr(probe.optimizer, lr_at_epoch(cfg, step, steps))
                x, y = x.to(probe.device, non_blocking=True), y.to(probe.device, non_blocking=True)
                with torch.no_grad():
                    features = probe.trunk(x)
                loss = F.cross_entropy(probe.classifier(features), y)
                probe.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                probe.optimizer.step()
                state["loss_sum"] += loss.item()
                state["step_in_epoch"] += 1
                if stop.pending:  # checkpoint at the step boundary, then pass the signal on
                    _save(probe, path, dict(state))
                    stop.serve()
            trained_s += time.perf_counter() - start
            trained_steps += steps - first
            epoch = state["epoch"] + 1
            row = {"epoch": epoch, "loss": state["loss_sum"] / steps}
            if epoch == lin.epochs or (lin.eval_every and epoch % lin.eval_every == 0):
                top1, top5 = accuracy(probe, test_loader)
                row.update(top1=top1, top5=top5)
                if state["best"] is None or top1 > state["best"]["top1"]:
                    state["best"] = dict(row)
                logged = {f"linear_top1{suffix}": top1, f"linear_top5{suffix}": top5}
                tracker.log(logged, epoch * steps, epoch, {"subset": "linear"})
            record.append_metrics(out, row)
            state.update(epoch=epoch, step_in_epoch=0, loss_sum=0.0)
            _save(probe, path, {**state, "result": row})
            if stop.pending:
                stop.serve()
    saved = record.load_checkpoint(path)
    last, best = saved["result"], saved.get("best") or saved["result"]
    return {
        f"linear_top1{suffix}": last["top1"],
        f"linear_top5{suffix}": last["top5"],
        f"linear_top1_best{suffix}": best["top1"],
        f"linear_top5_best{suffix}": best["top5"],
        f"linear_best_epoch{suffix}": best["epoch"],
        f"linear_loss{suffix}": last["loss"],
        f"linear_epochs{suffix}": lin.epochs,
        # train images per second of this process's epochs (trunk forward + classifier step)
        f"linear_images_per_s{suffix}": trained_steps * lin.batch_size / max(trained_s, 1e-9),
    }


def run_dir_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config from its checkpoint (newer keys: their defaults) with the overrides
    applied: its own linear protocol unless an override chooses another (``linear=cifar``)."""
    state = record.load_checkpoint(run_dir / record.CHECKPOINT)
    if state is None:
        raise FileNotFoundError(f"{run_dir} holds no {record.CHECKPOINT}: nothing to evaluate")
    choice = [o for o in overrides if o.split("=")[0].lstrip("+~") == "linear"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        defaults = compose("config", overrides=choice)  # keys newer than the run get defaults
    OmegaConf.set_struct(defaults, False)
    own = OmegaConf.create(state["config"])
    if choice:
        own.pop("linear", None)
    rest = OmegaConf.from_dotlist([o.lstrip("+") for o in overrides if o not in choice])
    return OmegaConf.merge(defaults, own, rest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sce_sweeps.cli linear",
        description="Linear evaluation of one finished or stopped run, alone: its config and "
        "protocol from its checkpoint, OVERRIDES choose another; linear_top1/top5 go into its "
        "result.json and its Aim run.",
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--random-init", action="store_true", help="the untrained network")
    parser.add_argument("overrides", nargs="*", help="e.g. linear=imagenet linear.epochs=10")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = run_dir_config(args.run_dir, args.overrides)
        validate(cfg)
    except (FileNotFoundError, ConfigError, record.RunFileError) as e:
        print(f"sce_sweeps.cli linear: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    result = record.try_read_result(args.run_dir) or {}
    state = record.load_checkpoint(args.run_dir / record.CHECKPOINT)
    info = {k: v for k, v in result.items() if k in ("sweep_name", "job_num", "overrides")}
    tracker = make_tracker(cfg, args.run_dir, state.get("tracker_run_hash"), info)
    status = record.RunState.FAILED
    try:
        metrics = run_linear(cfg, args.run_dir, tracker, random_init=args.random_init)
        status = record.RunState(result.get("status", record.RunState.COMPLETED))
    finally:
        tracker.close(status.value)
    if result:
        record.write_result(args.run_dir, {**result, **metrics})
    suffix = "_init" if args.random_init else ""
    top1, speed = metrics[f"linear_top1{suffix}"], metrics[f"linear_images_per_s{suffix}"]
    print(f"linear top-1 {top1:.2f}% ({speed:.0f} img/s) [{args.run_dir}]")
