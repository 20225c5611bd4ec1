"""sce_sweeps: run, track and tabulate hyperparameter sweeps of SCE (WACV 2023)."""

__version__ = "0.1.0"
