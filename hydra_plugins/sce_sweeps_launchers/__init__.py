"""Hydra launchers of sce_sweeps: ``launcher=local`` and ``launcher=slurm`` (see docs/sweeps.md)."""
