"""A run's ``result.json`` (written once it ends) and its ``metrics.jsonl`` (a line per epoch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sce_sweeps.runtime.record.files import RunFileError, atomic_write, read_json, write_json_atomic
from sce_sweeps.runtime.record.layout import ERROR_LOG, METRICS, RESULT, now
from sce_sweeps.runtime.record.states import FINAL, RunState


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``result.json`` if any; a RunFileError if corrupt or its status is not final."""
    path = Path(run_dir) / RESULT
    result = read_json(path)
    if result is not None and result.get("status") not in FINAL:
        raise RunFileError(
            f"{path}: corrupt {RESULT} (status {result.get('status')!r} is not one of "
            f"{', '.join(FINAL)})"
        )
    return result


def try_read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """:func:`read_result`, with a corrupt file counted as no result."""
    try:
        return read_result(run_dir)
    except RunFileError:
        return None


def write_result(run_dir: str | Path, result: dict[str, Any], stamp: bool = True) -> dict[str, Any]:
    """Write ``result.json`` (its ``status`` a final state), stamped ``finished_at`` unless not
    ``stamp`` (a note added to the result of a run that ended earlier)."""
    status = RunState(result["status"])
    if status not in FINAL:
        raise ValueError(f"result status must be one of {[s.value for s in FINAL]}: {status}")
    result = {**result, "status": status.value}
    if stamp:
        result["finished_at"] = now()
    write_json_atomic(result, Path(run_dir) / RESULT)
    return result


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """``metrics.jsonl`` rows, but a partial last line (a run killed mid-write)."""
    path = Path(run_dir) / METRICS
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                break
            raise RunFileError(f"{path}: corrupt line {i + 1}") from None
    return rows


def append_metrics(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one epoch's row to ``metrics.jsonl`` (a kill mid-append tears only that line)."""
    with (Path(run_dir) / METRICS).open("a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(run_dir: str | Path, last_epoch: int = 0, write: bool = True) -> list:
    """The rows of epochs <= ``last_epoch``; ``write`` also drops the later ones from the file."""
    path = Path(run_dir) / METRICS
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    if write and not rows:
        path.unlink(missing_ok=True)
    elif write:
        with atomic_write(path, sync=False) as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


def write_error_log(run_dir: str | Path, text: str) -> None:
    """A failed run's traceback into ``error.log``, else (a full disk) into stderr."""
    try:
        (Path(run_dir) / ERROR_LOG).write_text(text)
    except OSError as e:
        print(f"{ERROR_LOG} not written ({e}):\n{text}", file=sys.stderr)
