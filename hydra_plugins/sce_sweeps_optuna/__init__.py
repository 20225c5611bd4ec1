"""An asynchronous Optuna sweeper for Hydra: ``hydra/sweeper=sce_optuna`` (see docs/search.md).

With parallelism P it keeps P trials running through whatever Hydra launcher is configured and
starts a new one as soon as any ends. Trials report kNN top-1 after every epoch from inside
their jobs, so pruners stop bad ones early, and the study lives in a journal file in the sweep
dir, so rerunning the same command resumes it.
"""
