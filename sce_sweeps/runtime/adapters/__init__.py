"""Every private API of a dependency the runtime uses, one module per thing adapted.

``hydra_config`` (Hydra 1.3's config loading), ``optuna_storage`` (a study's storage and trial
ids), ``aim_repo`` (Aim's on-disk layout). Each has a public path it replaces and a test
comparing the two; ``SCE_SWEEPS_PUBLIC_APIS=all`` (or a comma list of ``hydra,optuna,aim``)
switches back to the public path.
"""

from __future__ import annotations

import os


def private(name: str) -> bool:
    """Whether the adapter ``name`` (hydra, optuna, aim) may use its dependency's internals."""
    public = {p.strip() for p in os.environ.get("SCE_SWEEPS_PUBLIC_APIS", "").split(",")}
    return not ({"all", name} & public)
