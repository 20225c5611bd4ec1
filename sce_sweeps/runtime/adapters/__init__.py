"""Every private API of Hydra, Optuna and Aim the runtime uses, each with its public path
(``SCE_SWEEPS_PUBLIC_APIS=all``, or some of ``hydra,optuna,aim``) and a test comparing both.
"""

from __future__ import annotations

import os


def private(name: str) -> bool:
    """Whether the adapter ``name`` (hydra, optuna, aim) may use its dependency's internals."""
    public = {p.strip() for p in os.environ.get("SCE_SWEEPS_PUBLIC_APIS", "").split(",")}
    return not ({"all", name} & public)
