"""Ablation tables from real tiny sweeps: values, partial sweeps, manifests, references,
several sweeps at once."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from sce_sweeps.analysis import ablation_table, collect
from sce_sweeps.analysis.cli import collect_main, table_main
from tests.support import copy_sweep, read_json, run_script

pytestmark = pytest.mark.slow


def _override(result: dict, key: str, default: float | None = None) -> float | None:
    """A swept value from the run's own result.json overrides."""
    for item in result["overrides"]:
        if item.startswith(f"{key}="):
            return float(item.split("=", 1)[1])
    return default


def _results_by_coeff(sweep: Path) -> dict[float, list[dict]]:
    by_coeff: dict[float, list[dict]] = {}
    for path in sorted(sweep.glob("*/result.json")):
        result = read_json(path)
        by_coeff.setdefault(_override(result, "loss.coeff"), []).append(result)
    return by_coeff


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _markdown_row(markdown: str, first_cells: list[str]) -> list[str]:
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[: len(first_cells)] == first_cells:
            return cells
    raise AssertionError(f"no row {first_cells} in\n{markdown}")


def test_table_is_mean_and_std_of_the_runs_result_json(tiny_sweep, tmp_path):
    out = tmp_path / "out"
    proc = run_script("ablation_table", tiny_sweep, "--out", out)
    assert proc.returncode == 0, proc.stderr
    markdown = (out / "ablation.md").read_text()
    assert proc.stdout == markdown
    latex = (out / "ablation.tex").read_text()
    rows = {(float(r["loss.coeff"]), r["metric"]): r for r in _csv(out / "ablation.csv")}

    expected = _results_by_coeff(tiny_sweep)
    assert sorted(expected) == [0.0, 1.0]
    means = {}
    for coeff, runs in expected.items():
        assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}
        for metric in ("knn_top1", "loss"):
            values = [r[metric] for r in runs]
            row = rows[(coeff, metric)]
            assert float(row["mean"]) == pytest.approx(statistics.mean(values), rel=1e-12)
            assert float(row["std"]) == pytest.approx(statistics.stdev(values), rel=1e-12)
            assert (row["n"], row["failed"], row["unfinished"]) == ("2", "0", "0")
        knn = [r["knn_top1"] for r in runs]
        means[coeff] = statistics.mean(knn)
        cell = f"{statistics.mean(knn):.2f} ± {statistics.stdev(knn):.2f}"
        assert cell in _markdown_row(markdown, [f"{coeff:g}"])[1]
        assert f"{statistics.mean(knn):.2f} \\pm {statistics.stdev(knn):.2f}" in latex

    best = max(means, key=means.get)
    assert rows[(best, "knn_top1")]["best"] == "True"
    assert rows[(1 - best, "knn_top1")]["best"] == "False"
    assert _markdown_row(markdown, [f"{best:g}"])[1].startswith("**")
    assert not _markdown_row(markdown, [f"{1 - best:g}"])[1].startswith("**")
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\mathbf{"):
        assert command in latex


def test_partial_sweep_shows_failed_and_unfinished_runs(partial_sweep, tmp_path):
    failed = read_json(partial_sweep / "4" / "result.json")
    assert failed["status"] == "failed" and "nan" in failed["reason"].lower()
    assert not (partial_sweep / "3" / "result.json").exists()

    out = tmp_path / "out"
    proc = run_script("ablation_table", partial_sweep, "--out", out)
    assert proc.returncode == 0, proc.stderr
    rows = {
        (float(r["loss.coeff"]), float(r["optim.lr"]), r["metric"]): r
        for r in _csv(out / "ablation.csv")
    }
    counts = {k[:2]: (r["n"], r["failed"], r["unfinished"]) for k, r in rows.items()}
    assert counts == {
        (0.0, 0.12): ("2", "0", "0"),
        (1.0, 0.12): ("1", "0", "1"),  # run 3 has no result.json yet
        (1.0, 1e12): ("0", "1", "0"),  # NaN loss
    }
    survivor = read_json(partial_sweep / "2" / "result.json")
    assert float(rows[(1.0, 0.12, "knn_top1")]["mean"]) == survivor["knn_top1"]
    assert rows[(1.0, 0.12, "knn_top1")]["std"] == ""  # one run: no std
    assert rows[(1.0, 1e12, "knn_top1")]["mean"] == ""  # nothing averaged

    markdown = (out / "ablation.md").read_text()
    header = _markdown_row(markdown, ["loss.coeff", "optim.lr"])
    failed_row = dict(zip(header, _markdown_row(markdown, ["1", "1e+12"])))
    assert failed_row["failed"] == "1" and failed_row["n"] == "0"
    assert failed_row["kNN top-1 (%)"] == "–"
    running_row = dict(zip(header, _markdown_row(markdown, ["1", "0.12"])))
    assert running_row["unfinished"] == "1" and running_row["n"] == "1"


def test_manifest_states_and_jobs_not_started(partial_sweep, tmp_path):
    sweep = copy_sweep(partial_sweep, tmp_path / "sweep")
    manifest = json.loads((sweep / "manifest.json").read_text())  # the launcher's own
    # the launcher saw jobs 0-2 end; job 3 start (the fixture): its process is gone
    assert [j["state"] for j in manifest["jobs"]] == ["completed"] * 3 + ["running"]
    manifest["pid"] = os.getpid()  # the launcher lives: a job it has not started is pending
    first = manifest["jobs"][0]["overrides"]  # loss.coeff=0 seed=0: the same, with seed 5
    pending = [o if not o.startswith("seed=") else "seed=5" for o in first]
    job = {**manifest["jobs"][0], "num": 5, "overrides": pending, "run_dir": "5"}
    manifest["jobs"].append({**job, "state": "pending", "job_ids": [], "config_hash": "x"})
    (sweep / "manifest.json").write_text(json.dumps(manifest))

    sweeps = collect([sweep])
    status = dict(zip(sweeps.runs["run"], sweeps.runs["status"]))
    assert status == {
        "0": "completed",
        "1": "completed",
        "2": "completed",
        "3": "interrupted",
        "4": "failed",
        "5": "pending",
    }
    rows = ablation_table(sweeps, ["knn_top1"]).rows
    counts = {
        (r["loss.coeff"], r["optim.lr"]): (r["n"], r["failed"], r["unfinished"])
        for r in rows.to_dict("records")
    }
    assert counts == {(0.0, 0.12): (2, 0, 1), (1.0, 0.12): (1, 0, 1), (1.0, 1e12): (0, 1, 0)}


def test_references_shown_beside_measured_with_difference(tiny_sweep, tmp_path):
    references = tmp_path / "refs.csv"
    references.write_text(
        "dataset,method,setting,key,key_value,conditions,metric,value,source,confirmed\n"
        "fashion_mnist_20k,SCE,test,loss.coeff,0,trainer.epochs=2,knn_top1,40.0,a test,true\n"
        "fashion_mnist_20k,SCE,test,loss.coeff,1,,linear_top1,70.5,a note,false\n"
        "fashion_mnist_20k,SCE,test,loss.coeff,1,trainer.epochs=999,knn_top1,1.0,never,true\n"
    )
    out = tmp_path / "out"
    assert table_main([str(tiny_sweep), "--out", str(out), "--references", str(references)]) == 0
    rows = {(float(r["loss.coeff"]), r["metric"]): r for r in _csv(out / "ablation.csv")}
    mean0 = statistics.mean(r["knn_top1"] for r in _results_by_coeff(tiny_sweep)[0.0])
    assert float(rows[(0.0, "knn_top1")]["ref_value"]) == 40.0
    assert float(rows[(0.0, "knn_top1")]["diff"]) == pytest.approx(mean0 - 40.0)
    # another metric (linear vs kNN): shown, not differenced; a failed condition: not shown
    assert rows[(1.0, "knn_top1")]["ref_metric"] == "linear_top1"
    assert rows[(1.0, "knn_top1")]["diff"] == ""

    markdown = (out / "ablation.md").read_text()
    header = _markdown_row(markdown, ["loss.coeff"])
    row0 = dict(zip(header, _markdown_row(markdown, ["0"])))
    row1 = dict(zip(header, _markdown_row(markdown, ["1"])))
    assert (row0["ref"], row0["diff"]) == ("40.00", f"{mean0 - 40.0:+.2f}")
    assert (row1["ref"], row1["diff"]) == ("70.50?", "–")
    assert "UNCONFIRMED" in markdown and "a note" in markdown

    # a row without a reference of its own shows none in the ref column
    references.write_text("\n".join(references.read_text().splitlines()[:2]) + "\n")
    assert table_main([str(tiny_sweep), "--out", str(out), "--references", str(references)]) == 0
    row1 = dict(zip(header, _markdown_row((out / "ablation.md").read_text(), ["1"])))
    assert (row1["ref"], row1["diff"]) == ("–", "–")


def test_several_sweeps_give_one_column_group_per_dataset(tiny_sweep, cifar_sweep, tmp_path):
    out = tmp_path / "out"
    assert table_main([str(tiny_sweep), str(cifar_sweep), "--out", str(out)]) == 0
    rows = {
        (r["dataset"], float(r["loss.coeff"]), r["metric"]): r for r in _csv(out / "ablation.csv")
    }
    for dataset, sweep in (("fashion_mnist_20k", tiny_sweep), ("cifar10", cifar_sweep)):
        for coeff, runs in _results_by_coeff(sweep).items():
            mean = statistics.mean(r["knn_top1"] for r in runs)
            row = rows[(dataset, coeff, "knn_top1")]
            assert float(row["mean"]) == pytest.approx(mean) and int(row["n"]) == len(runs)
    markdown = (out / "ablation.md").read_text()
    header = _markdown_row(markdown, ["loss.coeff"])
    assert "fashion_mnist_20k: kNN top-1 (%)" in header and "cifar10: kNN top-1 (%)" in header
    assert markdown.count("**") == 4  # one best cell per dataset
    latex = (out / "ablation.tex").read_text()
    # 7 columns a dataset, then the GPU-h and CPU-h its rows spent (ledger.json)
    assert r"\multicolumn{9}{c}{fashion\_mnist\_20k}" in latex and r"\cmidrule(lr)" in latex

    # several sweeps need --out: nothing is written into one of them by surprise
    assert table_main([str(tiny_sweep), str(cifar_sweep)]) == 1
    assert not (tiny_sweep / "analysis").exists() and not (cifar_sweep / "analysis").exists()


def test_collect_writes_tidy_runs_and_curves(partial_sweep, tmp_path):
    out = tmp_path / "out"
    assert collect_main([str(partial_sweep), "--out", str(out)]) == 0
    runs = {r["run"]: r for r in _csv(out / "runs.csv")}
    assert sorted(runs) == ["0", "1", "2", "3", "4"]
    assert [runs[k]["status"] for k in sorted(runs)] == [
        "completed",
        "completed",
        "completed",
        "interrupted",  # as `python -m sce_sweeps.cli status` says: no result, no process
        "failed",
    ]
    for name in ("0", "1", "2"):
        result = read_json(partial_sweep / name / "result.json")
        assert float(runs[name]["knn_top1"]) == result["knn_top1"]
        assert float(runs[name]["loss.coeff"]) == _override(result, "loss.coeff")
        assert runs[name]["config_hash"] == result["config_hash"]
    assert runs["4"]["reason"].startswith("NonFiniteLossError")
    assert runs["0"]["dataset"] == "fashion_mnist_20k" and runs["0"]["model.width"] == "4"

    curves = _csv(out / "curves.csv")
    epochs = {(r["run"], r["epoch"]) for r in curves}
    assert epochs == {(run, e) for run in ("0", "1", "2", "3") for e in ("1", "2")}
    first = next(r for r in curves if (r["run"], r["epoch"]) == ("0", "2"))
    last_line = (partial_sweep / "0" / "metrics.jsonl").read_text().splitlines()[-1]
    assert float(first["knn_top1"]) == json.loads(last_line)["knn_top1"]


def test_baselines_are_shown_by_default_beside_the_metric(tiny_sweep, tmp_path):
    """Runs that recorded their baselines get them as columns without asking; a table whose
    best row does not beat a baseline says so."""
    out = tmp_path / "out"
    proc = run_script("ablation_table", tiny_sweep, "--out", out)
    assert proc.returncode == 0, proc.stderr
    markdown = proc.stdout
    header = _markdown_row(markdown, ["loss.coeff"])
    assert header[1:4] == ["kNN top-1 (%)", "kNN top-1 at init (%)", "kNN top-1 raw pixels (%)"]
    by_coeff = _results_by_coeff(tiny_sweep)
    best = max(statistics.mean(r["knn_top1"] for r in runs) for runs in by_coeff.values())
    for coeff, runs in by_coeff.items():
        row = dict(zip(header, _markdown_row(markdown, [f"{coeff:g}"])))
        pixels = {r["knn_top1_pixels"] for r in runs}
        assert len(pixels) == 1  # the same bank and queries for every run: one value
        assert row["kNN top-1 raw pixels (%)"] == f"{pixels.pop():.2f} ± 0.00"
        init = statistics.mean(r["knn_top1_init"] for r in runs)
        assert row["kNN top-1 at init (%)"].startswith(f"{init:.2f} ± ")
    assert "Baselines of kNN top-1 (%), by the same code: random init and raw pixels" in markdown
    for name, key in (("random init", "knn_top1_init"), ("raw pixels", "knn_top1_pixels")):
        floor = max(statistics.mean(r[key] for r in runs) for runs in by_coeff.values())
        warned = f"no row beats the {name} baseline of kNN top-1 (%)" in markdown
        assert warned == (best <= floor), markdown
    # asked for other metrics only: no baseline columns
    table = ablation_table(collect([tiny_sweep]), ["knn_top1", "loss"])
    assert set(table.rows["metric"]) == {"knn_top1", "loss"}


def test_a_metric_no_run_recorded_is_empty_not_a_config_value(tiny_sweep, tmp_path):
    """``loss`` is also a config group (its choice ``sce``): runs whose result.json lack the
    loss metric must show no loss, not the group's choice read as a number."""
    sweep = copy_sweep(tiny_sweep, tmp_path / "sweep")
    for path in sweep.glob("*/result.json"):
        result = json.loads(path.read_text())
        del result["loss"]
        path.write_text(json.dumps(result))
    table = ablation_table(collect([sweep]))
    losses = table.rows[table.rows["metric"] == "loss"]
    assert len(losses) and losses["n"].eq(0).all(), losses
    knn = table.rows[table.rows["metric"] == "knn_top1"]
    assert knn["n"].eq(2).all()  # the other metrics as before


def test_params_in_result_json_give_the_runs_their_run_configs_gave(partial_sweep, tmp_path):
    """Each run records its resolved, flattened params and group choices in result.json; a
    run written before that is read from its .hydra files, with the same values."""
    older = copy_sweep(partial_sweep, tmp_path / "older")
    for path in older.glob("*/result.json"):
        result = read_json(path)
        assert isinstance(result["params"]["loss.coeff"], float)
        assert result["params"]["dataset"] == "fashion_mnist_20k"
        path.write_text(json.dumps({k: v for k, v in result.items() if k != "params"}))
    new = collect([partial_sweep]).runs.drop(columns="sweep_dir")
    old = collect([older]).runs.drop(columns="sweep_dir")
    assert list(new.columns) == list(old.columns)
    assert new.astype(str).to_dict("records") == old.astype(str).to_dict("records")
