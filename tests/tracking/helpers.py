"""Overrides shared by the tracking tests."""

from __future__ import annotations

from tests.helpers import TINY


def tiny(**changes: object) -> list[str]:
    """The TINY overrides with some keys changed (``tiny(**{"trainer.epochs": 3})``)."""
    kept = [o for o in TINY if o.split("=")[0] not in changes]
    return kept + [f"{key}={value}" for key, value in changes.items()]
