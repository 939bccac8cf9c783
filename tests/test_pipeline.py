"""The input pipeline: stages timed apart, accuracy counted against the folder's labels."""

from __future__ import annotations

import json

import pytest
import torch

from bench.checks.pipeline import (
    STAGES,
    DataSpec,
    build_loader,
    check_data_spec,
    evenly_spaced,
    run_pipeline,
    write_image_folder,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("data") / "images", classes=3, per_class=6)


def _colour_model():
    """Predicts the class from the dominant colour: right on write_image_folder's images."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 3)).eval()
    with torch.no_grad():
        model[2].weight.copy_(torch.eye(3))
        model[2].bias.zero_()
    return model


def _run(spec, model, batch_size=4, to_runtime=lambda b: b):
    loader = build_loader(spec, (3, 32, 32), batch_size)
    with torch.inference_mode():
        return run_pipeline(loader, model, to_runtime).figures()


def test_every_image_goes_through_every_stage_and_the_labels_are_counted(folder):
    figures = _run(DataSpec(folder=str(folder)), _colour_model())
    assert figures["images"] == 18 and figures["batches"] == 5  # 4+4+4+4+2
    assert set(figures["stage_median_s"]) == set(STAGES)
    assert all(v > 0 for v in figures["stage_total_s"].values())
    assert figures["top1_accuracy"] == 1.0
    assert figures["end_to_end_images_per_s"] == pytest.approx(18 / sum(figures["stage_total_s"].values()))


def test_a_wrong_model_scores_what_it_scores(folder):
    model = _colour_model()
    with torch.no_grad():
        model[2].weight.copy_(torch.eye(3)[[1, 2, 0]])  # predicts the next class
    figures = _run(DataSpec(folder=str(folder)), model)
    assert figures["top1_accuracy"] == 0.0
    assert figures["top5_accuracy"] == 1.0 and figures["classes"] == 3  # top-5 of 3 classes says nothing


def test_class_index_maps_sub_folders_to_the_models_classes(folder, tmp_path):
    mapping = tmp_path / "classes.json"
    mapping.write_text(json.dumps({"000": 1, "001": 2, "002": 0}))
    model = _colour_model()
    with torch.no_grad():
        model[2].weight.copy_(torch.eye(3)[[2, 0, 1]])  # colour c -> class (c + 1) % 3
    assert _run(DataSpec(folder=str(folder), class_index=str(mapping)), model)["top1_accuracy"] == 1.0


def test_max_images_and_the_runtime_conversion_apply(folder):
    seen = []

    def to_runtime(batch):
        seen.append(batch.dtype)
        return batch.numpy()

    figures = _run(
        DataSpec(folder=str(folder), max_images=5),
        lambda x: _colour_model()(torch.from_numpy(x)).numpy(),
        to_runtime=to_runtime,
    )
    assert figures["images"] == 5 and seen == [torch.float32, torch.float32]


def test_max_images_spreads_over_every_class(folder):
    assert evenly_spaced(18, 3) == [0, 8, 17] and evenly_spaced(5, 5) == [0, 1, 2, 3, 4]
    assert evenly_spaced(18, 1) == [0] and evenly_spaced(18, 0) == []
    subset = build_loader(DataSpec(folder=str(folder), max_images=3), (3, 32, 32), 4).dataset
    assert sorted(subset.dataset.targets[i] for i in subset.indices) == [0, 1, 2]  # not 3 of class 0


def test_specs_that_cannot_feed_the_model_say_why(folder, tmp_path):
    assert check_data_spec(DataSpec(folder=str(folder)), (3, 32, 32)) is None
    assert "square RGB" in check_data_spec(DataSpec(folder=str(folder)), (64,))
    assert "is not a folder" in check_data_spec(DataSpec(folder=str(tmp_path / "nope")), (3, 32, 32))
    (tmp_path / "flat").mkdir()
    assert "ImageFolder layout" in check_data_spec(DataSpec(folder=str(tmp_path / "flat")), (3, 32, 32))
    (tmp_path / "named" / "cats").mkdir(parents=True)
    named = DataSpec(folder=str(tmp_path / "named"), class_index="name")
    assert "not class numbers: cats" in check_data_spec(named, (3, 32, 32))
