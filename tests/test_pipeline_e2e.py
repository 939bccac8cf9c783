"""End to end: an image folder through the real `bench run`, with pruned variants beside the dense model."""

from __future__ import annotations

import json

import pytest

from bench.checks.pipeline import STAGES, write_image_folder
from bench.results.runfolder import load_run

pytestmark = pytest.mark.slow

# Predicts write_image_folder's classes from the images' dominant colour, through a Linear-ReLU-Linear
# block that shrink-channels can cut (half of its hidden units carry no signal).
COLOUR_MODEL = """
import torch
from torch import nn


def build():
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 3))
    with torch.no_grad():
        for layer in (model[2], model[4]):
            layer.weight.zero_()
            layer.bias.zero_()
        for c in range(3):
            model[2].weight[c * 10:(c + 1) * 10, c] = 1.0
            model[4].weight[c, c * 10:(c + 1) * 10] = 1.0
    return model
"""


def test_a_labelled_folder_gives_stage_times_and_accuracy_per_variant(run_cli, write_suite, tmp_path):
    write_image_folder(tmp_path / "images", classes=3, per_class=5)
    (tmp_path / "bench_e2e_colour.py").write_text(COLOUR_MODEL, encoding="utf-8")
    (tmp_path / "classes.json").write_text(json.dumps({"000": 0, "001": 1, "002": 2}), encoding="utf-8")
    suite = write_suite(
        """
        name: pipeline
        defaults:
          measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}
          data: {folder: images, class_index: classes.json}
        matrix:
          model: [{name: colour, factory: "bench_e2e_colour:build", input_shape: [3, 32, 32]}]
          batch_size: [4]
          variant: [dense, pruned-l1-40, shrunk-channels-50]
        include:
          - {model: tiny_cnn, variant: shrunk-channels-50}
        """
    )
    done = run_cli("run", str(suite), "--no-history")
    assert done.returncode == 0, done.stderr
    (results,) = tmp_path.glob("reports/*/results.jsonl")
    rows = {r.scenario_id: r for r in load_run(results.parent).records}
    assert set(rows) == {
        "colour-b4-t1-fp32-eager",
        "colour-b4-t1-fp32-eager-pruned-l1-40",
        "colour-b4-t1-fp32-eager-shrunk-channels-50",
        "tiny_cnn-b1-t1-fp32-eager-shrunk-channels-50",
    }
    for scenario_id, row in rows.items():
        assert row.status == "ok", row.reason
        assert row.pipeline.images == 15 and set(row.pipeline.stage_median_s) == set(STAGES)
        if scenario_id.startswith("colour"):
            assert row.pipeline.batches == 4 and row.pipeline.classes == 3
            assert row.pipeline.top1_accuracy == 1.0  # the signal-carrying half of the units survives
        else:
            assert row.pipeline.batches == 15 and row.pipeline.classes == 10  # batch 1; random weights

    dense, unstructured = rows["colour-b4-t1-fp32-eager"], rows["colour-b4-t1-fp32-eager-pruned-l1-40"]
    shrunk = rows["colour-b4-t1-fp32-eager-shrunk-channels-50"]
    assert dense.pruning is None and dense.variant == "dense"
    assert unstructured.pruning.parameters_after == unstructured.pruning.parameters_before
    assert shrunk.pruning.parameters_after < shrunk.pruning.parameters_before
    assert shrunk.artifact_bytes < dense.artifact_bytes  # the smaller matrices are what is saved and loaded
    assert rows["tiny_cnn-b1-t1-fp32-eager-shrunk-channels-50"].fidelity.inputs  # measured against dense fp32

    report = (results.parent / "report.md").read_text(encoding="utf-8")
    assert "## Input pipeline" in report and "| colour-b4-t1-fp32-eager | 15 |" in report
    assert "vs dense (×)" in report  # the summary's ratio to the dense row, shown because variants exist
    assert (results.parent / "figures" / "pipeline_stages.png").stat().st_size > 0
    assert 'id="pipeline"' in (results.parent / "report.html").read_text(encoding="utf-8")


def test_a_missing_data_folder_and_a_bad_variant_are_refused_before_anything_runs(run_cli, write_suite):
    suite = write_suite("name: s\ndefaults: {data: {folder: nowhere}}\nmatrix: {model: [resnet18]}\n")
    done = run_cli("validate", str(suite))
    assert done.returncode == 2 and "data.folder" in done.stderr and "is not a folder" in done.stderr
    suite = write_suite("name: s\nmatrix: {model: [tiny_mlp], variant: [pruned-50]}\n", name="v.yaml")
    done = run_cli("validate", str(suite))
    assert done.returncode == 2 and "matrix.variant" in done.stderr and "shrunk-channels-N" in done.stderr
