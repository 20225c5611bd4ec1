"""Multi-process training, one process per device: ``trainer.batch_size`` is the global batch,
the model's hooks get collectives (keys gathered into the queue, shuffle BN across ranks) so
that the run equals one process; an error on one rank ends every rank within seconds."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sce_sweeps.runtime.record import atomic_write
from sce_sweeps.sce.model import SplitBatchNorm2d


class DistributedSetupError(RuntimeError):
    """The job's processes do not match ``trainer.devices`` x ``trainer.num_nodes``."""


@dataclass(frozen=True)
class Dist:
    """This process's rank and world size; ``enabled`` in a process group (a group of one
    too, e.g. ``torchrun --nproc_per_node 1``)."""

    rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of ``x`` over ranks (``x`` itself in one process)."""
        if not self.enabled:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank."""
        return self._flag(flag, device, dist.all_reduce)

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        """Rank 0's ``flag`` on every rank."""
        return self._flag(flag, device, lambda t: dist.broadcast(t, 0))

    def _flag(self, flag: bool, device: torch.device, collective: Callable) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([float(flag)], device=device)
        collective(t)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_buffers(self, module: nn.Module) -> None:
        """Rank 0's buffers of ``module`` (BatchNorm's running statistics) on every rank."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)

    def shard(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items; the first ``n % world`` ranks take one
        more, so that the shards in rank order are 0..n-1."""
        size, extra = divmod(n, self.world_size)
        start = self.rank * size + min(self.rank, extra)
        return range(start, start + size + (self.rank < extra))

    def gather_shards(self, x: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's shard (:meth:`shard`) of ``n`` rows, ``x`` this rank's, concatenated in
        rank order: the ``n`` rows as one process has them."""
        if not self.enabled:
            return x
        largest = -(-n // self.world_size)
        padded = x.new_zeros((largest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = all_gather(padded).split(largest)
        sizes = [len(Dist(r, self.world_size).shard(n)) for r in range(self.world_size)]
        return torch.cat([part[:size] for part, size in zip(parts, sizes)])


FAILED = ".failed-rank{rank}"


class FailureWatch:
    """Ends every rank within seconds when one fails (the others would wait 30 min in their
    next collective): an exception writes this rank's reason to :data:`FAILED`; a thread polls
    for a peer's, lets rank 0 record it (``on_peer_failure``) and ends with ``os._exit(1)``, as
    the main thread may be blocked in a collective."""

    def __init__(
        self,
        ctx: Dist,
        run_dir: Path,
        on_peer_failure: Callable[[str], None] | None = None,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.ctx, self.run_dir, self.expected = ctx, Path(run_dir), expected
        self.on_peer_failure = on_peer_failure if ctx.is_main else None
        self._done = threading.Event()
        self._lock = threading.Lock()  # a peer's failure or this rank's own: one of them

    def _path(self, rank: int) -> Path:
        return self.run_dir / FAILED.format(rank=rank)

    def __enter__(self) -> FailureWatch:
        if self.ctx.enabled:
            self._path(self.ctx.rank).unlink(missing_ok=True)
            self.ctx.barrier()
            threading.Thread(target=self._watch, name="sce-failure-watch", daemon=True).start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        with self._lock:
            self._done.set()
        if not self.ctx.enabled or not isinstance(exc, Exception) or isinstance(exc, self.expected):
            return
        path = self._path(self.ctx.rank)
        try:
            with atomic_write(path, sync=False) as f:
                f.write(f"{type(exc).__name__}: {exc}".encode())
        except OSError:  # a full disk: an empty file still tells the peers
            path.touch()

    def _watch(self) -> None:
        peers = [r for r in range(self.ctx.world_size) if r != self.ctx.rank]
        while not self._done.wait(0.5):
            failed = next((r for r in peers if self._path(r).exists()), None)
            if failed is None:
                continue
            with self._lock:
                if self._done.is_set():  # this rank's own failure is being handled
                    return
                reason = "no reason recorded"
                with contextlib.suppress(OSError):
                    reason = self._path(failed).read_text() or reason
                reason = f"rank {failed} of {self.ctx.world_size} failed: {reason}"
                print(f"sce_sweeps: {reason}; rank {self.ctx.rank} stops", file=sys.stderr)
                try:
                    if self.on_peer_failure is not None:
                        self.on_peer_failure(reason)
                finally:
                    sys.stderr.flush()
                    os._exit(1)


def world_size(cfg: Any) -> int:
    """Processes of a run: ``trainer.devices * trainer.num_nodes``."""
    return int(cfg.trainer.devices) * int(cfg.trainer.num_nodes)


def job_rank() -> int:
    """This process's rank from the environment, before any process group exists."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    try:
        from submitit import JobEnvironment

        return int(JobEnvironment().global_rank)
    except RuntimeError:  # not a submitit job
        return 0


def _export_job_env() -> None:
    """Set RANK, WORLD_SIZE, MASTER_ADDR/PORT from submitit's job environment."""
    from submitit.helpers import TorchDistributedEnvironment

    try:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    except RuntimeError as e:  # not a submitit job
        raise DistributedSetupError(
            f"trainer.devices x trainer.num_nodes > 1 needs one process per device: run it "
            f"with -m (launcher=local|slurm) or torchrun ({e})"
        ) from None


def setup(cfg: Any) -> Dist:
    """Join (or find) the run's process group; one process joins none unless its environment
    names a group (``WORLD_SIZE``, as ``torchrun`` sets)."""
    expected = world_size(cfg)
    if expected == 1 and "WORLD_SIZE" not in os.environ and not dist.is_initialized():
        return Dist()
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            _export_job_env()
        found = int(os.environ["WORLD_SIZE"])
        if found != expected:
            raise DistributedSetupError(
                f"trainer.devices x trainer.num_nodes = {expected}, but the job has "
                f"{found} processes"
            )
        cuda = cfg.trainer.device == "cuda" or (
            cfg.trainer.device == "auto" and torch.cuda.is_available()
        )
        if cuda:
            local = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
            torch.cuda.set_device(local % torch.cuda.device_count())
        # SCE_SWEEPS_DIST_BACKEND=gloo: several processes on one GPU (scripts/gpu_check.sh)
        backend = os.environ.get("SCE_SWEEPS_DIST_BACKEND") or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend, init_method="env://", timeout=timedelta(minutes=30))
    return Dist(dist.get_rank(), dist.get_world_size(), enabled=True)


def teardown() -> None:
    """Leave the process group (end of the run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@torch.no_grad()
def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` (N x ...), concatenated in rank order (world*N x ...); no gradient."""
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


@torch.no_grad()
def _shuffle_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of the permuted global batch, and the index that unshuffles."""
    x_all = all_gather(x)
    perm = torch.randperm(x_all.shape[0]).to(x.device)  # drawn everywhere; rank 0's wins
    dist.broadcast(perm, 0)
    n, rank = x.shape[0], dist.get_rank()
    return x_all[perm][rank * n : (rank + 1) * n], torch.argsort(perm)


@torch.no_grad()
def _unshuffle_batch(z: torch.Tensor, unshuffle: torch.Tensor) -> torch.Tensor:
    n, rank = z.shape[0], dist.get_rank()
    return all_gather(z)[unshuffle][rank * n : (rank + 1) * n]


def convert_sync_bn(module: nn.Module) -> nn.Module:
    """Replace in place the BatchNorm layers of ``module`` (both branches of an SCEModel) by
    SyncBatchNorm, as the official ImageNet run (eztorch trainer ``gpu_ddp_sbn_amp``); shuffle
    BN's split BN stays. Parameters and buffers keep their tensors and names."""
    if isinstance(module, SplitBatchNorm2d):
        return module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        setattr(module, name, convert_sync_bn(child))
    return module


def prepare(model: nn.Module, ctx: Dist, sync_bn: bool = False) -> nn.Module:
    """Give ``model`` the collectives of its hooks (and SyncBatchNorm with ``sync_bn``); return
    its DDP wrapper, to call for the loss (``model`` is the one saved and evaluated)."""
    if not ctx.enabled:
        return model
    model.gather_keys = all_gather
    if model.target_bn == "shuffle":
        model.shuffle_batch = _shuffle_batch
        model.unshuffle_batch = _unshuffle_batch
        trunk = model.momentum_backbone.modules()
        splits = next((m.num_splits for m in trunk if isinstance(m, SplitBatchNorm2d)), 1)
        model.set_target_bn_splits(max(1, splits // ctx.world_size))
    cuda = next(model.parameters()).is_cuda
    if sync_bn and not cuda:
        raise ValueError(
            "trainer.sync_bn=true needs GPUs (SyncBatchNorm runs on CUDA only); on the CPU set "
            "trainer.sync_bn=false: each rank's BatchNorm then sees batch_size / devices samples"
        )
    if sync_bn:
        convert_sync_bn(model)
    device_ids = [torch.cuda.current_device()] if cuda else None
    # Buffers are synced once, at wrapping: the queue stays the same on every rank by
    # construction, and only rank 0's BN statistics are evaluated and saved.
    ddp = DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)
    ddp.register_comm_hook(None, _mean_in_float64)
    return ddp


def _mean_in_float64(_, bucket):  # unannotated: DDP checks a hook's annotations as objects
    """DDP's gradient averaging, summed in float64: the same float32 mean whatever the order
    of the ranks' terms. DDP rebuilds its buckets after a process's first step, which changes
    the summation order: in float32 a resumed run would round unlike the uninterrupted one."""
    grads = bucket.buffer()
    work = dist.all_reduce(grads.double(), async_op=True)

    def mean(done: torch.futures.Future[list[torch.Tensor]]) -> torch.Tensor:
        return grads.copy_(done.value()[0].div_(dist.get_world_size()))

    return work.get_future().then(mean)
