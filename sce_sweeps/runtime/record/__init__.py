"""The run record: the one owner of the files of a run dir and of a sweep dir (see
docs/architecture.md). It imports neither torch nor pandas, so ``status`` answers at once."""

# ruff: noqa: F401  (the seam: every name below is re-exported)
from sce_sweeps.runtime.record.checkpoints import (
    CheckpointError,
    DiskFullError,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from sce_sweeps.runtime.record.files import (
    HOST,
    RunFileError,
    atomic_write,
    locked,
    read_json,
    write_json_atomic,
)
from sce_sweeps.runtime.record.heartbeat import (
    STALL_FLOOR_S,
    STALLED,
    Stall,
    beat,
    clear_heartbeat,
    done_share,
    read_heartbeat,
    stall,
    stall_limit,
)
from sce_sweeps.runtime.record.layout import (
    CHECKPOINT,
    HEARTBEAT,
    HYDRA_DIR,
    LEDGER,
    LOCK,
    MANIFEST,
    METRICS,
    PREVIOUS_CHECKPOINT,
    RESULT,
    RUN_MARKER,
    command_line,
    confined_run_dir,
    now,
    relative_run_dir,
)
from sce_sweeps.runtime.record.ledger import (
    Usage,
    attempt_resources,
    fill_accounting,
    ledger_start,
    ledger_update,
    ledger_usage,
    needs_accounting,
    parse_tres,
    read_ledger,
    run_usage,
)
from sce_sweeps.runtime.record.manifest import (
    Job,
    Manifest,
    SweepDirBusyError,
    claim_sweep_dir,
    release_sweep_dir,
)
from sce_sweeps.runtime.record.results import (
    append_metrics,
    read_metrics,
    read_result,
    truncate_metrics,
    try_read_result,
    write_error_log,
    write_result,
)
from sce_sweeps.runtime.record.states import (
    FINAL,
    FINISHED,
    LIVE,
    SLURM_LIVE,
    STATE_ORDER,
    RunState,
)
