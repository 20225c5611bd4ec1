"""Training on the device data path (trainer.data_path=device, on the CPU here): a run stopped
mid-epoch and resumed from its checkpoint ends exactly as an uninterrupted one."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from sce_sweeps.engine.train import train
from sce_sweeps.runtime import record
from sce_sweeps.runtime.tracking import NullTracker
from tests.support import TINY, compose

pytestmark = pytest.mark.slow

DEVICE = [*TINY, "trainer.data_path=device", "tracker=none", "aug.blur_p=0.5"]


class Interrupted(Exception):
    """What the previous SIGTERM handler raises, once the trainer has checkpointed."""


class TermAt(NullTracker):
    """Sends this process a SIGTERM when the loop logs ``step`` (the job being preempted)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log(self, metrics, step, epoch, context):
        if step == self.step and "loss" in metrics:
            os.kill(os.getpid(), signal.SIGTERM)


def _raise(signum, frame):
    raise Interrupted


def test_resumed_mid_epoch_on_the_device_path_ends_identically(tmp_path):
    cfg = compose(*DEVICE)
    straight = train(cfg, tmp_path / "straight")

    before = signal.signal(signal.SIGTERM, _raise)
    try:
        with pytest.raises(Interrupted):
            train(cfg, tmp_path / "stopped", tracker=TermAt(step=10))  # epoch 2, step 3 of 8
    finally:
        signal.signal(signal.SIGTERM, before)
    state = record.load_checkpoint(tmp_path / "stopped" / record.CHECKPOINT)
    assert (state["epoch"], state["step_in_epoch"]) == (1, 3)
    resumed = train(cfg, tmp_path / "stopped", resume_state=state)

    for key in ("knn_top1", "loss", "epochs"):
        assert resumed[key] == straight[key], key
    a = record.load_checkpoint(tmp_path / "straight" / record.CHECKPOINT)["model"]
    b = record.load_checkpoint(tmp_path / "stopped" / record.CHECKPOINT)["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
