"""The one config hash: what tells one job's config from another's."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def config_hash(container: dict[str, Any]) -> str:
    """A stable hash of a resolved config (plain containers): 16 hex digits."""
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
