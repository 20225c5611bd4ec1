"""The trainer's stop signals: served at a step boundary, passed on to the handler they replaced."""

from __future__ import annotations

import os
import signal

import pytest

from sce_sweeps.engine.train import StopSignals


@pytest.fixture
def recorded():
    """Handlers standing in for submitit's (SIGUSR2) and the launcher's (SIGTERM)."""
    calls: list[int] = []
    before = {s: signal.signal(s, lambda n, f: calls.append(n)) for s in StopSignals.SIGNALS}
    yield calls
    for sig, handler in before.items():
        signal.signal(sig, handler)


def test_a_signal_waits_for_serve_then_reaches_the_previous_handler(recorded):
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.pending is not None and stop.pending[0] == signal.SIGTERM
        assert recorded == []  # nothing happens before the checkpoint
        stop.serve()
    assert recorded == [signal.SIGTERM] and stop.pending is None


@pytest.mark.parametrize("order", [("USR2", "TERM"), ("TERM", "USR2")])
def test_the_requeue_signal_wins_when_both_arrive_before_a_step_ends(recorded, order):
    with StopSignals() as stop:
        for name in order:
            os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
        stop.serve()
    assert recorded == [signal.SIGUSR2]


def test_handlers_are_restored_on_exit(recorded):
    installed = signal.getsignal(signal.SIGTERM)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) != installed
    assert signal.getsignal(signal.SIGTERM) == installed


def test_without_a_previous_handler_the_signal_ends_the_process():
    before = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            with pytest.raises(SystemExit) as exit_:
                stop.serve()
        assert exit_.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, before)
