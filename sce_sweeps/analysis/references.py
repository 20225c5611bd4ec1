"""Published reference numbers from a CSV file: on ``dataset``, with the swept ``key`` at
``key_value`` and the run config meeting ``conditions`` (``k=v;...``), ``source`` reports
``metric`` = ``value``; ``confirmed``: checked against the source."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sce_sweeps.analysis.collect import AnalysisError

REFERENCE_FILE = Path(__file__).with_name("reference_results.csv")


@dataclass(frozen=True)
class Reference:
    """One published number and the setting it belongs to."""

    dataset: str
    method: str
    setting: str
    key: str
    key_value: str
    conditions: tuple[tuple[str, str], ...]
    metric: str
    value: float
    source: str
    confirmed: bool


COLUMNS = tuple(f.name for f in fields(Reference))


def same_value(a: Any, b: Any) -> bool:
    """Equal as numbers when both are numbers (``0`` == ``0.0`` == ``"0"``), else as text
    (case-insensitive, so that ``True`` matches ``true``)."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a).lower() == str(b).lower()


def _parse(row: dict[str, str], where: str) -> Reference:
    try:
        value = float(row["value"])
    except ValueError:
        raise AnalysisError(f"{where}: value {row['value']!r} is not a number") from None
    confirmed = row["confirmed"].strip().lower()
    if confirmed not in ("true", "false"):
        raise AnalysisError(f"{where}: confirmed must be true or false, not {confirmed!r}")
    conditions = []
    for part in filter(None, (p.strip() for p in row["conditions"].split(";"))):
        key, sep, cond_value = part.partition("=")
        if not sep:
            raise AnalysisError(f"{where}: condition {part!r} is not key=value")
        conditions.append((key.strip(), cond_value.strip()))
    parsed = {"value": value, "conditions": tuple(conditions), "confirmed": confirmed == "true"}
    return Reference(**{**{c: row[c] for c in COLUMNS}, **parsed})


def load_references(path: Path | str = REFERENCE_FILE) -> list[Reference]:
    """Read and validate a reference file (AnalysisError: missing, or a malformed row)."""
    try:
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise AnalysisError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read reference file ({e.strerror})") from None
    return [_parse(row, f"{path}, line {i}") for i, row in enumerate(rows, start=2)]


def find_reference(
    references: list[Reference],
    dataset: str,
    values: dict[str, Any],
    configs: list[dict[str, Any]],
) -> Reference | None:
    """The first reference for ``dataset`` and the row's swept ``values`` whose conditions
    every flattened run config of the row satisfies, or None."""
    for ref in references:
        if (
            ref.dataset == dataset
            and ref.key in values
            and same_value(values[ref.key], ref.key_value)
            and all(
                key in cfg and same_value(cfg[key], want)
                for cfg in configs
                for key, want in ref.conditions
            )
        ):
            return ref
    return None
