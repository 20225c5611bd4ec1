"""Pure parts of the analysis: overrides, swept keys, values, references, atomic writes."""

from __future__ import annotations

import pytest

from sce_sweeps.analysis.cli import write_outputs
from sce_sweeps.analysis.collect import AXES, AnalysisError
from sce_sweeps.analysis.references import load_references, same_value
from sce_sweeps.analysis.tables import default_metrics, lower_is_better
from sce_sweeps.runtime.overrides import override_dict
from sce_sweeps.runtime.tables import format_value, stats, swept_keys


def test_parse_overrides_strips_prefixes_and_skips_hydra_and_deletions():
    lines = ["+sweep=lambda_ablation", "++loss.temp=0.1", "~aug.blur_p", "hydra.verbose=true"]
    assert override_dict([*lines, "loss.coeff=0.5", "x="]) == {
        "sweep": "lambda_ablation",
        "loss.temp": "0.1",
        "loss.coeff": "0.5",
        "x": "",
    }


def test_swept_keys_are_the_differing_overrides_not_seed_or_dataset():
    runs = [
        {"model": "tiny", "loss.coeff": "0", "seed": "0", "dataset": "cifar10"},
        {"model": "tiny", "loss.coeff": "1", "seed": "1", "dataset": "stl10"},
        {"model": "tiny", "loss.coeff": "1", "seed": "0", "optim.lr": "1e12"},
    ]
    assert swept_keys(runs, AXES.fixed) == ["loss.coeff", "optim.lr"]
    assert swept_keys(runs[:1], AXES.fixed) == []
    assert swept_keys(runs) == ["loss.coeff", "seed", "dataset", "optim.lr"]  # no app: all


def test_stats_are_mean_sample_std_and_count_of_the_finite_numbers():
    assert stats([1.0, 3.0, float("nan"), None, "resnet18"]) == {"mean": 2.0, "std": 2**0.5, "n": 2}
    one = stats([5])
    assert one["n"] == 1 and one["mean"] == 5 and one["std"] != one["std"]  # NaN


def test_values_compare_as_numbers_then_as_text():
    assert same_value(0.0, "0") and same_value(0.5, "0.50") and same_value(True, "true")
    assert not same_value(0.125, "0.12") and not same_value("multi_crop", "two_strong")
    assert [format_value(v) for v in (0.0, 0.125, 1e12, 4096, "multi_crop", None)] == [
        "0",
        "0.125",
        "1e+12",
        "4096",
        "multi_crop",
        "–",
    ]
    assert lower_is_better("loss") and lower_is_better("wall_time_s")
    assert not lower_is_better("knn_top1")


def test_packaged_references_hold_design_section_2():
    refs = load_references()
    imagenet = {(r.key, r.key_value): r for r in refs if r.dataset == "imagenet"}
    assert {k: r.value for k, r in imagenet.items() if k[0] == "trainer.epochs"} == {
        ("trainer.epochs", "100"): 72.1,
        ("trainer.epochs", "200"): 72.7,
        ("trainer.epochs", "300"): 73.3,
        ("trainer.epochs", "1000"): 74.1,
    }
    # the 75.4% multi-crop row belongs to SCE's own multi-crop, not to the ablation's aug=multi_crop
    assert imagenet[("experiment", "imagenet_multicrop")].value == 75.4
    assert imagenet[("aug", "multi_crop_sce")].value == 75.4
    assert ("aug", "multi_crop") not in imagenet
    assert all(r.confirmed and r.metric == "linear_top1" for r in imagenet.values())
    in100 = {r.key_value: r for r in refs if r.dataset == "imagenet100"}
    assert {k: r.value for k, r in in100.items()} == {"0": 81.53, "0.5": 82.94, "1": 81.11}
    assert not any(r.confirmed for r in in100.values())


@pytest.mark.parametrize(
    "text, message",
    [
        ("dataset,key\nx,y\n", "missing column(s)"),
        (
            "dataset,method,setting,key,key_value,conditions,metric,value,source,confirmed\n"
            "d,m,s,k,1,,top1,high,src,true\n",
            "is not a number",
        ),
        (
            "dataset,method,setting,key,key_value,conditions,metric,value,source,confirmed\n"
            "d,m,s,k,1,epochs,top1,1.0,src,yes\n",
            "confirmed must be true or false",
        ),
    ],
)
def test_malformed_reference_file_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "refs.csv"
    path.write_text(text)
    with pytest.raises(AnalysisError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_references(path)


def test_write_outputs_leaves_no_temporary_files(tmp_path):
    paths = write_outputs(tmp_path / "out", {"a.md": "x\n", "b.png": b"\x89PNG"})
    assert [p.name for p in paths] == ["a.md", "b.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.md", "b.png"]
    assert (tmp_path / "out" / "b.png").read_bytes() == b"\x89PNG"


def test_the_linear_evaluation_leads_the_default_metrics_with_its_baselines():
    knn = ["knn_top1", "knn_top1_init", "knn_top1_pixels"]
    probe = ["probe_top1", "probe_top1_init", "probe_top1_pixels"]
    assert default_metrics([*knn, "loss"]) == [*knn, "loss"]
    assert default_metrics([*knn, *probe, "loss"]) == [*probe, *knn, "loss"]
    full = ["linear_top1", "linear_top1_init"]
    assert default_metrics([*knn, *probe, *full, "loss"]) == [*full, *probe, *knn, "loss"]
