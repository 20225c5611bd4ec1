"""Sweep bookkeeping shared by the launchers and the command line.

The sweep's files (``manifest.json``, run dirs, results, the sweep dir's lock) and the run
states are :mod:`sce_sweeps.runfiles`'.

- :mod:`~sce_sweeps.sweep.plan`: compose and validate every job before launching any; the
  dry-run report.
- :mod:`~sce_sweeps.sweep.status`: each job's state from its run dir and from SLURM;
  ``python -m sce_sweeps.status <sweep dir>``.
- :mod:`~sce_sweeps.sweep.resume`: ``python -m sce_sweeps.resume <sweep dir>`` reruns the
  sweep's command with ``hydra.launcher.resume=true``.

Nothing here imports torch: the status command answers in well under a second.
"""
