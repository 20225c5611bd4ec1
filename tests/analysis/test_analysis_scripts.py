"""The scripts in analysis/ run as files: help, plots, byte-identical reruns, bad input."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest

from tests.support import copy_sweep, run_script

pytestmark = pytest.mark.slow

SCRIPTS = ("ablation_table", "plot_sweep", "collect")
OUTPUTS = {
    "ablation_table": {"ablation.md", "ablation.tex", "ablation.csv"},
    "plot_sweep": {"ablation.png", "ablation.svg", "curves.png", "curves.svg"},
    "collect": {"runs.csv", "curves.csv"},
}


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    proc = run_script(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert "SWEEP_DIR" in proc.stdout and "--out" in proc.stdout


def test_plots_are_png_and_svg_without_dates(partial_sweep, tmp_path):
    proc = run_script("plot_sweep", partial_sweep, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in tmp_path.iterdir()} == OUTPUTS["plot_sweep"]
    for name in ("ablation.png", "curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(b"\x89PNG") and b"Software" not in data
    for name in ("ablation.svg", "curves.svg"):
        svg = (tmp_path / name).read_text()
        assert svg.lstrip().startswith("<?xml") and "<dc:date>" not in svg
        assert "loss.coeff" in svg or "glyph" in svg  # text drawn as paths


def test_reruns_are_byte_identical(partial_sweep, tmp_path):
    """All three scripts, twice into the same dir and once into another: same bytes."""
    sweep = copy_sweep(partial_sweep, tmp_path / "sweep")
    for script in SCRIPTS:  # default output dir: <sweep>/analysis
        assert run_script(script, sweep).returncode == 0
    first = _hashes(sweep / "analysis")
    assert set(first) == set().union(*OUTPUTS.values())
    for script in SCRIPTS:
        assert run_script(script, sweep).returncode == 0
    assert _hashes(sweep / "analysis") == first
    assert run_script("plot_sweep", sweep, "--out", tmp_path / "elsewhere").returncode == 0
    assert _hashes(tmp_path / "elsewhere").items() <= first.items()


def _empty(tmp_path: Path, tiny_sweep: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def _not_a_sweep(tmp_path: Path, tiny_sweep: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "2024").mkdir(parents=True)
    (folder / "2024" / "notes.txt").write_text("not a run\n")
    (folder / "result.json").write_text("{}\n")
    return folder


def _corrupt_result(tmp_path: Path, tiny_sweep: Path) -> Path:
    sweep = copy_sweep(tiny_sweep, tmp_path / "sweep")
    path = sweep / "1" / "result.json"
    path.write_text(path.read_text()[:40])  # cut short, as by a full disk
    return sweep


BAD = {
    "empty dir": (_empty, "empty directory"),
    "not a sweep": (_not_a_sweep, "not a sweep dir"),
    "corrupt result.json": (_corrupt_result, "1/result.json: corrupt result.json"),
}


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_clear_message_and_nothing_written(case, script, tiny_sweep, tmp_path):
    make, message = BAD[case]
    folder = make(tmp_path, tiny_sweep)
    before = _tree(tmp_path)
    proc = run_script(script, folder, "--strict")  # a corrupt run file refuses the table
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"{script}.py: error: {folder}") and message in lines[0]
    assert _tree(tmp_path) == before  # no analysis/ dir, no temporary files

    if script == "ablation_table":  # an explicit output dir is not created either
        proc = run_script(script, folder, "--strict", "--out", tmp_path / "out")
        assert proc.returncode == 1 and not (tmp_path / "out").exists()


def _corrupt_metrics(sweep: Path) -> Path:
    path = sweep / "1" / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["{not json", *lines[1:]]) + "\n")  # a line before the last
    return path


def _corrupt_config(sweep: Path) -> Path:
    """A run written before result.json recorded its params: its config is read instead."""
    result = sweep / "1" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "params": None}))
    path = sweep / "1" / ".hydra" / "config.yaml"
    path.write_text("loss: [unclosed\n")
    return path


def _corrupt_result_file(sweep: Path) -> Path:
    path = sweep / "1" / "result.json"
    path.write_text(path.read_text()[:40])  # cut short, as by a full disk
    return path


CORRUPT = {"result.json": _corrupt_result_file, "metrics.jsonl": _corrupt_metrics}
CORRUPT["config.yaml"] = _corrupt_config


@pytest.mark.parametrize("file", CORRUPT)
def test_a_corrupt_run_file_is_named_and_counted_and_the_rest_tabulated(file, tiny_sweep, tmp_path):
    """Run 1 (λ=0, seed 1) has an unreadable file: the table is built from the other three,
    run 1 counts as failed in its row (never averaged in), a warning names the file and the
    notes under the table give the count; --strict refuses, as before."""
    sweep = copy_sweep(tiny_sweep, tmp_path / "sweep")
    corrupt = CORRUPT[file](sweep)
    proc = run_script("ablation_table", sweep, "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(corrupt) in warnings[0], proc.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "ablation.csv").read_text())))
    knn = {float(row["loss.coeff"]): row for row in rows if row["metric"] == "knn_top1"}
    assert (knn[0]["n"], knn[0]["failed"]) == ("1", "1")
    assert (knn[1]["n"], knn[1]["failed"]) == ("2", "0")
    table, notes = proc.stdout.split("\n\n", 1)
    assert "1 run with an unreadable file" in notes and "1 run" not in table

    proc = run_script("collect", sweep, "--out", tmp_path / "collected")
    assert proc.returncode == 0, proc.stderr
    runs = list(csv.DictReader(io.StringIO((tmp_path / "collected" / "runs.csv").read_text())))
    run1 = next(r for r in runs if r["run"] == "1")
    assert run1["status"] == "failed" and str(corrupt) in run1["reason"]
    assert run_script("plot_sweep", sweep, "--out", tmp_path / "plots").returncode == 0

    strict = run_script("ablation_table", sweep, "--strict", "--out", tmp_path / "strict")
    assert strict.returncode == 1 and str(corrupt) in strict.stderr
    assert not (tmp_path / "strict").exists()
