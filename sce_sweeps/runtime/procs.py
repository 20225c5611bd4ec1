"""Whether a process of this host is alive: the one liveness check."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int | None, marker: str | None = None) -> bool:
    """Whether process ``pid`` of this host runs (another user's counts) and, given a
    ``marker``, its command line holds it (a pid taken since by another program does not)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if marker and cmdline.exists():
        return marker in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return True
