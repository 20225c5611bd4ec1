"""``python -m sce_sweeps.resume <sweep dir> [overrides]``: rerun a sweep's failed and
unfinished jobs, skipping finished ones. See :mod:`sce_sweeps.runtime.resume`."""

from sce_sweeps.runtime.resume import main

if __name__ == "__main__":
    raise SystemExit(main())
