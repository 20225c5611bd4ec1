"""Checkpoint files: written atomically with the previous one kept, which a resume falls back on."""

from __future__ import annotations

import errno
import io
import shutil
import sys
from pathlib import Path
from typing import Any

from sce_sweeps.runtime.record.files import RunFileError, atomic_write, remove_stale_temps
from sce_sweeps.runtime.record.layout import CHECKPOINT, PREVIOUS_CHECKPOINT
from sce_sweeps.runtime.record.ledger import ledger_update


class CheckpointError(RunFileError):
    """No readable checkpoint to resume from although one was written."""


class DiskFullError(OSError):
    """The device filled up while a file was written; the message says how much is needed."""

    def __str__(self) -> str:
        return str(self.strerror)


def _size_mb(nbytes: float) -> str:
    return f"{max(1, round(nbytes / 2**20))} MB"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically, keeping the checkpoint it replaces as
    ``checkpoint.prev.pt``; a full device raises DiskFullError, the old file untouched."""
    import torch

    path = Path(path)
    try:
        with atomic_write(path, previous=path.with_name(PREVIOUS_CHECKPOINT)) as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as e:
        # torch reports a full disk as "RuntimeError: [enforce fail at inline_container.cc...]
        # unexpected pos"; the size the checkpoint needs is measured by writing it to memory
        free = shutil.disk_usage(path.parent).free
        buffer = io.BytesIO()
        torch.save(state, buffer)
        needed = buffer.tell()
        if not (isinstance(e, OSError) and e.errno == errno.ENOSPC) and needed < free:
            raise
        have = _size_mb(free) if free >= 2**20 else f"{free // 1024} kB"
        raise DiskFullError(
            errno.ENOSPC,
            f"no space left on device while writing {path.name} (needs {_size_mb(needed)}, "
            f"{have} free in {path.parent})",
        ) from None
    ledger_update(path.parent)  # an attempt killed from now on counts up to here


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, else the previous one (with a warning); None if there is none."""
    import torch

    path = Path(path)
    remove_stale_temps(path)
    candidates = [p for p in (path, path.with_name(PREVIOUS_CHECKPOINT)) if p.exists()]
    errors = []
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=False)
        except Exception as e:  # truncated: RuntimeError, EOFError, UnpicklingError...
            errors.append(f"{candidate.name} is unreadable ({type(e).__name__}: {e})")
            continue
        if candidate != path:
            why = errors[0] if errors else f"{path.name} is missing"
            print(
                f"sce_sweeps: warning: {why}; resuming from the previous checkpoint "
                f"{candidate} (epoch {state.get('epoch')})",
                file=sys.stderr,
                flush=True,
            )
        return state
    if errors:
        raise CheckpointError(
            f"cannot resume from {path.parent}: {'; '.join(errors)}; remove them to start over"
        )
    return None


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run has written a checkpoint (the latest or the one before it)."""
    return any((Path(run_dir) / name).exists() for name in (CHECKPOINT, PREVIOUS_CHECKPOINT))
