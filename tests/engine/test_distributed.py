"""Multi-process training (gloo, CPU): N ranks (2, 4) with global batch B train as 1 process
with B.

Equivalence holds under the same BatchNorm: each rank's online trunk normalises its own
chunk of the batch (DDP's default), which one process reproduces with split BN over the N
chunks; the momentum branch uses shuffle BN (across ranks; in one process split BN over the
same N groups of the same permutation); the projector has no BatchNorm
(``model.proj_num_layers=1``: one process does not split the projector's BN). Left over are
float rounding differences (the gradient is averaged over ranks), hence a tolerance: losses
agree to 1e-4 relative and every weight to 1e-4 absolute after 4 steps. (BatchNorm's running
statistics, used only for evaluation, differ: rank 0 keeps its half's, split BN averages both
halves'.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from tests.support import ROOT, TINY, read_json, read_metrics

LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4

# 4 steps, one per epoch, so that metrics.jsonl holds every step's loss.
STEPS = [
    *TINY,
    "tracker=none",
    "trainer.batch_size=32",
    "trainer.epochs=4",
    "trainer.max_steps_per_epoch=1",
    "trainer.eval_every=0",
    "optim.warmup_epochs=0",
    "model.proj_num_layers=1",
    "model.target_bn=shuffle",
    # views from per-sample seeds (the device path draws per-rank batch seeds instead)
    "trainer.data_path=cpu",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(
    mode: str,
    run_dir,
    overrides: list[str],
    world: int,
    codes: tuple[int, ...] = (0,),
    timeout: float = 300,
    **env_,
) -> list[str]:
    """Run tests/engine/ddp_worker.py as ``world`` ranks of one gloo group; each rank must
    exit with its code in ``codes`` (the last one for the ranks after) within ``timeout``
    seconds. Returns the ranks' stderr."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", **env_}
        if world > 1:
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        cmd = [sys.executable, "-m", "tests.engine.ddp_worker", mode, str(run_dir), *overrides]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True))
    try:
        errors = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:  # a rank that hangs
            p.kill()
    for rank, (p, err) in enumerate(zip(procs, errors)):
        assert p.returncode == codes[min(rank, len(codes) - 1)], err[-4000:]
    return errors


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_ranks_train_like_one_process_with_the_global_batch(tmp_path, world):
    one, two = tmp_path / "one", tmp_path / "two"
    splits = f"model.target_bn_splits={world}"
    _ranks("train_split", one, [*STEPS, splits, "trainer.devices=1"], 1)
    _ranks("train", two, [*STEPS, splits, f"trainer.devices={world}"], world)

    losses_one = [r["loss"] for r in read_metrics(one)]
    losses_two = [r["loss"] for r in read_metrics(two)]
    assert len(losses_one) == len(losses_two) == 4
    assert losses_one[0] != losses_one[-1]  # it trains
    assert losses_two == pytest.approx(losses_one, rel=LOSS_RTOL)

    a = torch.load(one / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(two / "checkpoint.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    assert torch.load(two / "checkpoint.pt", weights_only=False)["epoch"] == 4
    worst = 0.0
    for key in a:
        if "running_" in key:  # BN statistics: rank 0's half vs the mean of both halves
            continue
        if a[key].is_floating_point():
            diff = (a[key] - b[key]).abs().max().item()
            assert diff <= WEIGHT_ATOL, f"{key}: {diff}"
            worst = max(worst, diff)
        else:
            assert torch.equal(a[key], b[key]), key
    loss_diff = max(abs(x - y) / abs(x) for x, y in zip(losses_one, losses_two))
    print(
        f"\n{world} ranks vs 1 process: loss rel. diff {loss_diff:.1e},",
        f"weight abs. diff {worst:.1e}",
    )
    # the queue holds the 4 steps' global batches in the same order
    assert torch.allclose(a["queue"][: 4 * 32], b["queue"][: 4 * 32], atol=WEIGHT_ATOL)


def test_paper_presets_normalise_the_global_batch_on_several_devices():
    """The official CIFAR-10 recipe trains on one GPU (BatchNorm over the batch of 256): on
    several GPUs its preset keeps that batch for BatchNorm (SyncBatchNorm), as ImageNet's."""
    from hydra import compose, initialize_config_dir

    from sce_sweeps.app import CONF_DIR

    for experiment in ("cifar10", "cifar100", "stl10", "tiny_imagenet", "imagenet"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}", "trainer.devices=4"])
        assert cfg.trainer.sync_bn, experiment


@pytest.mark.slow
@pytest.mark.parametrize("sym", [False, True])
def test_the_queue_holds_every_ranks_keys_in_rank_order(tmp_path, sym):
    overrides = [*TINY, "tracker=none", "trainer.batch_size=16", "trainer.devices=2"]
    _ranks("queue", tmp_path, [*overrides, f"loss.sym={str(sym).lower()}"], 2)
    seen = torch.load(tmp_path / "queue.pt", weights_only=False)
    rank0, rank1 = seen
    assert torch.equal(rank0["queue"], rank1["queue"])  # the same queue on every rank
    # enqueued: [view0 keys of rank 0, of rank 1] (+ [view1 keys of rank 0, of rank 1])
    expected = torch.cat([torch.cat([r["keys"][v] for r in seen]) for v in range(1 + sym)])
    assert expected.shape[0] == 16 * (1 + sym)
    torch.testing.assert_close(rank0["queue"][: expected.shape[0]], expected)


@pytest.mark.parametrize("start_step", [0, 3])
def test_sampler_shards_every_global_batch_by_rank_and_resumes(start_step):
    from sce_sweeps.data import EpochSampler

    one = list(EpochSampler(100, 7, 2, 12, start_step=start_step, max_steps=6))
    ranks = [
        list(EpochSampler(100, 7, 2, 12, start_step, 6, rank=r, world_size=3)) for r in range(3)
    ]
    assert all(len(r) == (6 - start_step) * 4 for r in ranks)
    for step in range(6 - start_step):  # rank order within each global batch
        batch = [item for r in ranks for item in r[step * 4 : (step + 1) * 4]]
        assert batch == one[step * 12 : (step + 1) * 12]
    with pytest.raises(ValueError, match="split evenly"):
        EpochSampler(100, 7, 2, 12, rank=0, world_size=5)


@pytest.mark.parametrize("target_bn", ["standard", "shuffle"])
def test_sync_bn_converts_both_branches_and_keeps_the_momentum_update(target_bn):
    """trainer.sync_bn converts the momentum branch's BatchNorm too (as the official ImageNet
    run), shuffle BN's split layers aside; names and the EMA update still line up. (The
    conversion only: SyncBatchNorm's forward needs CUDA.)"""
    from hydra import compose, initialize_config_dir
    from torch import nn

    from sce_sweeps.app import CONF_DIR
    from sce_sweeps.engine.distributed import convert_sync_bn
    from sce_sweeps.sce import build_model
    from sce_sweeps.sce.model import SplitBatchNorm2d

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"model.target_bn={target_bn}"])
    model = build_model(cfg)
    names = list(model.state_dict())  # parameters and buffers, in order
    assert convert_sync_bn(model) is model
    assert list(model.state_dict()) == names

    def kinds(module: nn.Module) -> set[type]:
        return {type(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}

    assert kinds(model.backbone) == kinds(model.projector) == {nn.SyncBatchNorm}
    assert kinds(model.momentum_projector) == {nn.SyncBatchNorm}
    trunk = {SplitBatchNorm2d} if target_bn == "shuffle" else {nn.SyncBatchNorm}
    assert kinds(model.momentum_backbone) == trunk
    assert all(not p.requires_grad for p in model.target_parameters())

    online = dict(model.named_parameters())
    with torch.no_grad():
        for p in model.online_parameters():
            p.add_(1.0)
        for b in model.backbone.buffers():
            b.fill_(3)
    model.momentum_update(0.5)
    for name, p in model.named_parameters():
        if name.startswith("momentum_"):
            twin = online[name.removeprefix("momentum_")]
            assert torch.allclose(p, twin - 0.5)  # halfway to the online weights (+1)
    assert all((b == 3).all() for b in model.momentum_backbone.buffers())  # buffers copied


@pytest.mark.slow
@pytest.mark.parametrize("signal_step", [3, 8])
def test_a_stop_signal_on_one_rank_stops_every_rank_at_the_same_checked_step(tmp_path, signal_step):
    """Rank 1 gets SLURM's warning as its step ``signal_step`` begins; the ranks agree on it
    at the next step that is a multiple of STOP_CHECK_EVERY, save there and stop: rank 1
    passes its signal on (no handler before: it exits 128 + SIGUSR2), rank 0 stops with it."""
    from sce_sweeps.engine.train import STOP_CHECK_EVERY

    overrides = [*STEPS, "trainer.devices=2", "trainer.epochs=1"]
    overrides += ["trainer.max_steps_per_epoch=null", "dataset.train_samples=1024"]  # 32 steps
    codes = (128 + signal.SIGTERM, 128 + signal.SIGUSR2)
    _ranks("train_stop", tmp_path, overrides, 2, codes, STOP_RANK="1", STOP_STEP=str(signal_step))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    checked = -(-(signal_step + 1) // STOP_CHECK_EVERY) * STOP_CHECK_EVERY
    assert (state["epoch"], state["step_in_epoch"]) == (0, checked)


@pytest.mark.slow
def test_a_run_killed_after_its_final_checkpoint_finishes_on_every_rank_without_training(
    tmp_path,
):
    """A job killed between its last checkpoint and result.json is run again: every rank
    restores the same state (the history of metrics.jsonl included) and returns the result
    without training another step."""
    overrides = [*STEPS, "trainer.devices=2", "trainer.epochs=2"]
    _ranks("train", tmp_path, overrides, 2)
    first = read_json(tmp_path / "result-0.json")
    checkpoint = (tmp_path / "checkpoint.pt").read_bytes()
    for rank in (0, 1):
        (tmp_path / f"result-{rank}.json").unlink()
    _ranks("train", tmp_path, overrides, 2)  # rank 1 failed with IndexError (history[-1])
    again = [read_json(tmp_path / f"result-{rank}.json") for rank in (0, 1)]
    for result in again:
        assert (
            (result["loss"], result["epochs"])
            == (first["loss"], first["epochs"])
            == (
                read_metrics(tmp_path)[-1]["loss"],
                2,
            )
        )
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint  # not trained again


@pytest.mark.slow
@pytest.mark.parametrize("fail_rank", [0, 1])
def test_an_error_on_one_rank_ends_every_rank_with_its_reason(tmp_path, fail_rank):
    """A rank that raises (here a full disk as its step 2 begins) ends its peers, blocked in
    the step's collectives, within seconds rather than the process group's 30 min timeout;
    rank 0 records the failed rank's reason (the app: in result.json)."""
    overrides = [*STEPS, "trainer.devices=2", "trainer.epochs=1"]
    overrides += ["trainer.max_steps_per_epoch=null", "dataset.train_samples=1024"]  # 32 steps
    env = {"FAIL_RANK": str(fail_rank), "FAIL_STEP": "2"}
    errors = _ranks("train_fail", tmp_path, overrides, 2, (1,), timeout=120, **env)
    assert "No space left on device" in errors[fail_rank]
    peer = 1 - fail_rank
    assert f"rank {fail_rank} of 2 failed: OSError: [Errno 28] No space left" in errors[peer]
    if fail_rank == 1:  # rank 0 recorded it; rank 0's own failure is the app's to record
        reason = (tmp_path / "peer_failure.txt").read_text()
        assert reason == "rank 1 of 2 failed: OSError: [Errno 28] No space left on device"


@pytest.mark.slow
def test_ranks_share_the_evaluation_and_get_the_metrics_of_one_process(tmp_path):
    """3 ranks evaluate a checkpoint: each extracts the features of its shard of the bank and
    of the queries (uneven shards: 512 and 256 images), gathered in rank order; kNN top-1 and
    the linear probe are those of one process."""
    overrides = [*TINY, "tracker=none", "trainer.epochs=1", "trainer.batch_size=48"]
    overrides += ["trainer.max_steps_per_epoch=2", "trainer.linear_probe=true"]
    _ranks("train", tmp_path, [*overrides, "trainer.devices=1"], 1)
    _ranks("evaluate", tmp_path, [*overrides, "trainer.devices=1"], 1)
    one = read_json(tmp_path / "evaluate-0.json")
    _ranks("evaluate", tmp_path, [*overrides, "trainer.devices=3"], 3)
    ranks = [read_json(tmp_path / f"evaluate-{rank}.json") for rank in range(3)]
    assert one["images"] == 512 + 256
    assert [r["images"] for r in ranks] == [171 + 86, 171 + 85, 170 + 85]
    for r in ranks:
        assert r["metrics"]["knn_top1"] == pytest.approx(one["metrics"]["knn_top1"], abs=1e-9)
        assert r["metrics"]["probe_top1"] == pytest.approx(one["metrics"]["probe_top1"], abs=0.5)


def test_on_the_device_path_ranks_draw_other_views_of_the_same_images():
    """trainer.data_path=device draws each rank's views with the rank's own seed: N ranks
    train on the same images in the same order as one process with the global batch, with
    other random views (docs/multi_gpu_and_linear.md states it). On the CPU path each
    sample's views come from its own seed, the same for any number of ranks
    (test_sampler_shards_every_global_batch_by_rank_and_resumes)."""
    from hydra import compose, initialize_config_dir

    from sce_sweeps.app import CONF_DIR
    from sce_sweeps.data.device import DeviceData, DeviceViews

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, "trainer.data_path=device"])
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=generator)
    views, cpu = DeviceViews(cfg.aug, cfg.dataset), torch.device("cpu")
    one = DeviceData(images, torch.arange(64), views, 0, 16, None, cpu)
    two = [DeviceData(images, torch.arange(64), views, 0, 16, None, cpu, r, 2) for r in (0, 1)]
    one_views, one_labels = one.batch(0, 1)
    parts = [data.batch(0, 1) for data in two]
    assert torch.equal(torch.cat([labels for _, labels in parts]), one_labels)  # same images
    for v in range(2):
        two_views = torch.cat([views[v] for views, _ in parts])
        assert two_views.shape == one_views[v].shape
        assert not torch.allclose(two_views, one_views[v])  # other views
