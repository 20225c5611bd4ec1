"""Hydra launchers of sce_sweeps: ``launcher=local`` and ``launcher=slurm`` (see docs/sweeps.md).

Both validate every job's config before launching any, write the sweep's ``manifest.json``,
support a dry run (``hydra.launcher.dry_run=true``) and a resume that skips finished runs
(``hydra.launcher.resume=true``). Jobs run through submitit: a local subprocess per job, or a
SLURM job array whose jobs requeue themselves on preemption and time limits.
"""
