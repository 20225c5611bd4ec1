""":class:`RunState`, the one vocabulary of run states, and what SLURM's job states mean in it."""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """Where a run stands; a ``str`` that prints, formats and serialises as its plain value
    (``enum.StrEnum`` is 3.11+)."""

    COMPLETED = "completed"  # trained every epoch; result.json has its metrics
    PRUNED = "pruned"  # stopped early by a pruner (Optuna); result.json says after which epoch
    FAILED = "failed"  # result.json says why, or its job ended without one
    RUNNING = "running"  # its process or SLURM job is running
    PENDING = "pending"  # queued (SLURM), or waiting for the launcher to start it
    NOT_SUBMITTED = "not submitted"  # the launcher could not submit it (SLURM refused)
    INTERRUPTED = "interrupted"  # no result and nothing running: a resume continues it

    def __str__(self) -> str:
        return self.value

    def __format__(self, format_spec: str) -> str:
        return format(self.value, format_spec)


FINAL = (RunState.COMPLETED, RunState.PRUNED, RunState.FAILED)  # what result.json may say
FINISHED = (RunState.COMPLETED, RunState.PRUNED)  # a resume does not rerun these
LIVE = (RunState.RUNNING, RunState.PENDING)  # nor these, which are on their way
STATE_ORDER = (
    RunState.COMPLETED,
    RunState.PRUNED,
    RunState.RUNNING,
    RunState.PENDING,
    RunState.FAILED,
    RunState.NOT_SUBMITTED,
    RunState.INTERRUPTED,
)
# SLURM job states (squeue, sacct) of a job still on its way, and the run state each means.
SLURM_LIVE = {
    **dict.fromkeys(
        ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESIZING"),
        RunState.PENDING,
    ),
    **dict.fromkeys(
        ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT"),
        RunState.RUNNING,
    ),
}
