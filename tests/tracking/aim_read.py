"""Read an Aim repo back through Aim's SDK, values with their steps.

Run in a process of its own (``python -m tests.tracking.aim_read REPO`` prints JSON), so that
the test process never holds the repo's databases open (``aim up`` may need them next).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import ROOT


def read_repo(repo: Path) -> list[dict[str, Any]]:
    """Every run of ``repo``: its parameters, times, metrics (steps, values, epochs) and the
    steps and sizes of its ``views`` images."""
    from aim import Repo
    from aim.storage.context import Context

    from sce_sweeps.runtime.adapters.aim_repo import index_repo

    index_repo(repo)  # what `aim up` does in the background: makes the runs queryable
    aim_repo = Repo.from_path(str(repo))
    runs = []
    for run in aim_repo.iter_runs():
        metrics = []
        for metric in run.metrics():
            steps, (values, epochs, _) = metric.data.items_list()
            metrics.append(
                {
                    "name": metric.name,
                    "context": metric.context.to_dict(),
                    "steps": steps,
                    "values": values,
                    "epochs": epochs,
                }
            )
        images = {}
        views = run.get_image_sequence("views", Context({"subset": "train"}))
        if views is not None:
            steps, (batches, *_) = views.data.items_list()
            images = {"steps": steps, "counts": [len(b) for b in batches]}
        runs.append(
            {
                "hash": run.hash,
                "experiment": run.experiment,
                "name": run.name,
                "created": run.creation_time,
                "ended": run.end_time,
                "params": {k: run.get(k) for k in ("hparams", "swept", "job", "status")},
                "metrics": metrics,
                "images": images,
            }
        )
    return runs


def read(repo: Path) -> list[dict[str, Any]]:
    """:func:`read_repo` in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.tracking.aim_read", str(repo)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def series(run: dict[str, Any], name: str, subset: str) -> dict[str, list]:
    """The one metric ``name`` of ``run`` in context ``{"subset": subset}``."""
    found = [m for m in run["metrics"] if m["name"] == name and m["context"] == {"subset": subset}]
    assert len(found) == 1, (name, subset, [(m["name"], m["context"]) for m in run["metrics"]])
    return found[0]


if __name__ == "__main__":
    print(json.dumps(read_repo(Path(sys.argv[1])), default=str))
