"""Throughput of the full SCE training step against the bare networks on the same batch, and
where the full step's time goes.

Both are timed in one process on the same random batch, in alternating rounds:

- full: ``sce_sweeps.engine.train.train_step`` as the training loop calls it (SCE loss over
  the queue, backward, optimizer step, EMA of the target, queue update), with the loop's loss
  read-back (one ``.item()`` every ``LOG_EVERY`` steps);
- bare: the same forwards as the SCE model (``SCEModel.branches``: the target on view0, and
  view1 with ``sym``; the online branch on the other views), a plain cosine loss over the same
  (online, target) pairs in fp32, backward and optimizer step; no queue, no softmax, no EMA,
  no read-back.

Their ratio is the framework's overhead. The breakdown then runs the full step phase by phase
(the device synchronised around each phase, so the phases add up to a little more than the
step) and the bare step's loss and backward the same way, and prints each phase's time per
step: the difference between the two columns is what the method itself costs.

Options of the step are Hydra overrides: ``trainer.amp``, ``trainer.amp_dtype=bfloat16``,
``trainer.channels_last``, ``trainer.fused_optimizer=true``, ``trainer.compile=true`` (CUDA
only, as in the trainer). Usage::

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
from sce_sweeps.engine.train import (  # noqa: E402
    LOG_EVERY,
    build_model,
    optimizer_and_scaler,
    pick_device,
    train_step,
)
from sce_sweeps.sce.loss import loss_from_terms, sce_diagnostics, sce_terms  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - start


class Step:
    """The model, optimizer, scaler and batch of the benchmark, built as the trainer does."""

    def __init__(self, cfg) -> None:  # noqa: ANN001
        self.cfg = cfg
        self.device = device = pick_device(cfg.trainer.device)
        cuda = device.type == "cuda"
        self.fmt = fmt = (
            torch.channels_last if cuda and cfg.trainer.channels_last else torch.contiguous_format
        )
        torch.manual_seed(0)
        self.model = build_model(cfg).to(device, memory_format=fmt)
        self.optimizer, self.scaler, self.amp_dtype = optimizer_and_scaler(
            self.model, cfg, cfg.optim.lr, cuda
        )
        self.autocast = self.scaler.is_enabled() or self.amp_dtype is not None
        self.net = torch.compile(self.model) if cuda and cfg.trainer.compile else self.model
        bs, c, size = cfg.trainer.batch_size, cfg.dataset.in_channels, cfg.aug.crop_size
        views = [torch.randn(bs, c, size, size) for _ in range(2)]
        views += [torch.randn(bs, c, local, local) for local, _ in local_crops(cfg.aug)]
        self.views = [v.to(device, memory_format=fmt) for v in views]
        self.momentum = cfg.model.initial_momentum
        self.calls = 0

    def full(self) -> None:
        """The trainer's step, and its read-back every LOG_EVERY steps."""
        loss, terms = train_step(
            self.model,
            self.optimizer,
            self.scaler,
            self.views,
            self.momentum,
            self.net,
            amp_dtype=self.amp_dtype,
        )
        self.calls += 1
        if self.calls % LOG_EVERY == 0:
            loss.item()
            sce_diagnostics(terms)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, self.amp_dtype or torch.float16, self.autocast)

    def _forward(self):  # noqa: ANN202
        with self._autocast():
            return self.model.branches(self.views)

    def _update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def bare(self) -> None:
        """The same forwards, a cosine loss, backward and optimizer step."""
        online, targets, pairs = self._forward()
        self._update(cosine_loss(online, targets, pairs))

    def phases(self, bare: bool) -> dict[str, float]:
        """One step, phase by phase, synchronised around each; seconds per phase."""
        m, times = self.model, {}

        def phase(name: str, fn: Callable[[], object]) -> object:
            _sync(self.device)
            start = time.perf_counter()
            out = fn()
            _sync(self.device)
            times[name] = time.perf_counter() - start
            return out

        online, targets, pairs = phase("forward (online + target)", self._forward)
        if bare:
            loss = phase("loss", lambda: cosine_loss(online, targets, pairs))
        else:

            def sce() -> tuple[torch.Tensor, object]:
                with torch.autocast(
                    self.device.type, self.amp_dtype or torch.float16, self.autocast
                ):
                    queue = m.queue.clone() if m.queue_size else None
                    terms = [
                        sce_terms(online[o], targets[t], queue, m.coeff, m.temp, m.temp_m)
                        for o, t in pairs
                    ]
                    return torch.stack([loss_from_terms(x) for x in terms]).mean(), terms[0]

            loss, terms = phase("loss", sce)
        self.optimizer.zero_grad(set_to_none=True)
        phase("backward", lambda: self.scaler.scale(loss).backward())
        phase("optimizer", lambda: (self.scaler.step(self.optimizer), self.scaler.update()))
        if bare:
            return times
        phase("EMA of the target", lambda: m.momentum_update(self.momentum))
        keys = torch.cat([m.gather_keys(t) for t in targets])
        phase("queue update", lambda: m.dequeue_and_enqueue(keys))
        times["read-back .item() (every step)"] = _read_back(loss, self.device)
        phase("diagnostics (every step)", lambda: sce_diagnostics(terms))
        return times


def cosine_loss(online, targets, pairs) -> torch.Tensor:  # noqa: ANN001
    """The bare step's loss: minus the mean cosine of each (online, target) pair, in fp32."""
    return -torch.stack(
        [
            (F.normalize(online[o].float(), dim=1) * targets[t].float()).sum(1).mean()
            for o, t in pairs
        ]
    ).mean()


def _read_back(loss: torch.Tensor, device: torch.device) -> float:
    """What a read-back costs on its own: the wait is for work already queued, so the time is
    measured from a synchronised device (on a GPU, the real cost is the lost overlap)."""
    _sync(device)
    start = time.perf_counter()
    loss.item()
    return time.perf_counter() - start


def _breakdown(step: Step, steps: int) -> None:
    rows: dict[str, list[float]] = {}
    for bare in (False, True):
        for _ in range(steps):
            for name, s in step.phases(bare).items():
                rows.setdefault((name, bare), []).append(s)
    ms = {k: 1000 * statistics.median(v) for k, v in rows.items()}
    names = list(dict.fromkeys(name for name, _ in ms))
    in_step = [n for n in names if "every step" not in n]
    full_total = sum(ms[n, False] for n in in_step)
    bare_total = sum(ms.get((n, True), 0.0) for n in in_step)
    print(f"\nbreakdown (median of {steps} steps, synchronised around each phase), ms/step:")
    print(f"  {'phase':34s} {'full':>9s} {'bare':>9s} {'full - bare':>12s}")
    for n in names:
        bare = ms.get((n, True))
        extra = "" if "every step" not in n else f"  (the loop: every {LOG_EVERY} steps)"
        b = "" if bare is None else f"{bare:9.2f}"
        diff = ms[n, False] - (bare or 0.0)
        print(f"  {n:34s} {ms[n, False]:9.2f} {b:>9s} {diff:12.2f}{extra}")
    print(
        f"  {'sum of the step phases':34s} {full_total:9.2f} {bare_total:9.2f} "
        f"{full_total - bare_total:12.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    parser.add_argument("--no-breakdown", action="store_true", help="only the two rates")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=resnet18_cifar")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)

    step = Step(cfg)
    step.model.train()
    for fn in (step.full, step.bare):  # warm-up (allocator, cuDNN autotuning, threads)
        _timed(fn, 2, step.device)
    times: dict[str, list[float]] = {"full": [], "bare": []}
    for _ in range(args.rounds):
        for name, fn in (("full", step.full), ("bare", step.bare)):
            times[name].append(_timed(fn, args.steps, step.device))
    bs = cfg.trainer.batch_size
    rate = {k: bs * args.steps / statistics.median(v) for k, v in times.items()}

    t, cuda = cfg.trainer, step.device.type == "cuda"
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    amp = f"{t.amp_dtype}" if step.autocast else "off"
    print(
        f"device: {name}; amp={amp}; channels_last={step.fmt is torch.channels_last}; "
        f"fused_optimizer={cuda and t.fused_optimizer}; compile={cuda and t.compile}"
    )
    print(
        f"model: {cfg.model.arch} width {cfg.model.width}, batch {bs}, "
        f"{len(step.views)} views of {cfg.aug.crop_size}px, queue {cfg.loss.queue_size}"
    )
    print(f"full SCE step      : {rate['full']:10.1f} images/s")
    print(f"bare fwd/bwd       : {rate['bare']:10.1f} images/s")
    print(f"ratio full / bare  : {rate['full'] / rate['bare']:10.3f}")
    if not args.no_breakdown:
        _breakdown(step, args.steps)


if __name__ == "__main__":
    main()
