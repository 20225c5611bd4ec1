"""An asynchronous Optuna sweeper for Hydra, ``hydra/sweeper=sce_optuna``: P trials run at once
through any launcher, jobs report each epoch for pruning, and the study's journal in the sweep
dir makes a rerun resume it (docs/search.md)."""
