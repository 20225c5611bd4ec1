"""The official SCE recipes as data: which value each experiment preset takes, and from where.

``official_values.csv`` lists, per preset of ``conf/experiment``, each config key the preset
fixes, its value (JSON, else plain text) and its origin: ``official`` (the official config of
that dataset: ``repo`` and ``path`` name the file, ``official_key`` the entry),
``transferred`` (the official config of another dataset, named the same way) or ``picked``
(no official source; ``official_key`` says why).
"""

from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OFFICIAL_VALUES = Path(__file__).with_name("official_values.csv")
ORIGINS = ("official", "transferred", "picked")
REPOS = ("CEA-LIST/SCE", "juliendenize/eztorch")


@dataclass(frozen=True)
class OfficialValue:
    """One key of one preset, its value and where the value comes from."""

    preset: str
    key: str
    value: Any
    origin: str
    repo: str
    path: str
    official_key: str


def load_official_values(path: Path | str = OFFICIAL_VALUES) -> list[OfficialValue]:
    """Read the official-values file (ValueError: an unknown origin, or no repo and path)."""
    rows = []
    with Path(path).open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            with contextlib.suppress(json.JSONDecodeError):  # else the value is plain text
                row["value"] = json.loads(row["value"])
            value = OfficialValue(**row)
            if value.origin not in ORIGINS:
                raise ValueError(f"{path}:{line}: origin must be one of {', '.join(ORIGINS)}")
            if value.origin != "picked" and (value.repo not in REPOS or not value.path):
                raise ValueError(f"{path}:{line}: an {value.origin} value needs repo and path")
            rows.append(value)
    return rows


def preset_values(preset: str, path: Path | str = OFFICIAL_VALUES) -> dict[str, OfficialValue]:
    """The values of one preset, by key."""
    return {v.key: v for v in load_official_values(path) if v.preset == preset}
