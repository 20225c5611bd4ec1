"""Damaged images in an image-folder dataset, through the real command line.

A truncated PNG and a file that is no image sit among good ones. Without the option the run
fails with one line that names the file (relative to the dataset root) and the option that
skips such files, even when a DataLoader worker met it; with ``dataset.skip_unreadable=true``
the run trains on the rest, logs the files it left out and records their count in
``result.json``; a sweep's dry run with ``hydra.launcher.check_data=true`` lists them without
training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import TINY, read_json, run_cli
from tests.synthetic import write_image_folder

pytestmark = pytest.mark.slow

KEEP = ("model=", "trainer.", "optim.")
IMAGES = [
    *[o for o in TINY if o.startswith(KEEP) and not o.startswith("trainer.epochs")],
    "trainer.epochs=1",
    "tracker=none",
    "dataset=tiny_imagenet",
    "dataset.num_classes=3",
    "dataset.image_size=32",
    "dataset.num_workers=2",  # decoded in DataLoader workers
    "aug.crop_size=32",
    "loss.queue_size=32",
    "trainer.batch_size=16",
]


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """An image folder (3 classes, 64 train and 24 val PNGs) with 2 damaged train files."""
    root = tmp_path_factory.mktemp("damaged") / "data"
    write_image_folder(root, {"train": 64, "val": 24}, num_classes=3)
    folder = root / "train" / "class1"
    png = folder / sorted(os.listdir(folder))[0]
    png.write_bytes(png.read_bytes()[:80])  # truncated, as by a copy that stopped
    (root / "train" / "class2" / "zz_notes.png").write_bytes(b"not an image\n")
    return root, [f"train/class1/{png.name}", "train/class2/zz_notes.png"]


def test_a_damaged_image_fails_the_run_naming_the_file_and_the_option(damaged, tmp_path):
    root, files = damaged
    proc = run_cli(*IMAGES, f"dataset.root={root}", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sce_sweeps: run failed: UnreadableImageError: {files[0]}: ")
    assert "dataset.skip_unreadable=true" in last
    reason = read_json(tmp_path / "result.json")["reason"]
    assert reason.startswith(f"UnreadableImageError: {files[0]}: ") and "\n" not in reason


def test_skip_unreadable_trains_on_the_rest_and_counts_what_it_left_out(
    damaged, tmp_path, monkeypatch
):
    root, files = damaged
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    skip = [*IMAGES, f"dataset.root={root}", "dataset.skip_unreadable=true"]
    proc = run_cli(*skip, f"hydra.run.dir={run_dir}")
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed" and result["unreadable_images"] == 2
    assert "skipping 2 unreadable images" in proc.stderr
    assert all(f in proc.stderr for f in files)


def test_a_dry_run_checks_the_data_without_training(damaged, tmp_path, monkeypatch):
    root, files = damaged
    monkeypatch.setenv("SCE_SWEEPS_CACHE", str(tmp_path / "cache"))
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        *IMAGES,
        f"dataset.root={root}",
        "loss.coeff=0,1",
        f"hydra.sweep.dir={sweep}",
        "hydra.launcher.dry_run=true",
        "hydra.launcher.check_data=true",
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the sweep would fail
    assert "DRY RUN: 2 jobs" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("  data:")]
    assert len(lines) == 1 and f"2 unreadable images in {root} (train): " in lines[0]
    assert all(f in lines[0] for f in files) and "dataset.skip_unreadable=true" in lines[0]
    assert not sweep.exists()  # nothing trained, nothing written

    clean = tmp_path / "clean"  # the same folder without its damaged files passes
    shutil.copytree(root, clean)
    for name in files:
        (clean / name).unlink()
    args = [f"dataset.root={clean}" if a == f"dataset.root={root}" else a for a in proc.args[3:]]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "  data:       checked: every file of the 2 jobs' data reads" in proc.stdout
