"""``python -m sce_sweeps.status <sweep dir> [--json]``: each job of a sweep as done / running /
pending / failed / interrupted / pruned. See :mod:`sce_sweeps.runtime.status`."""

from sce_sweeps.runtime.status import main

if __name__ == "__main__":
    raise SystemExit(main())
