"""Pruning variants: what each does to the weights, and that a shrunk model loads back."""

from __future__ import annotations

import pytest
import torch

from bench import runtimes
from bench.models import catalog as models
from bench.models.pruning import Variant, apply_variant, fit_to_state_dict, parse_variant
from bench.suite.scenarios import parse_suite


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dense", Variant("dense")),
        ("pruned-l1-30", Variant("pruned-l1", 30)),
        ("pruned-channels-5", Variant("pruned-channels", 5)),
        ("shrunk-channels-50", Variant("shrunk-channels", 50)),
    ],
)
def test_variants_parse(text, expected):
    assert parse_variant(text) == expected


@pytest.mark.parametrize("text", ["pruned-l1-0", "pruned-l1-100", "pruned-30", "sparse", 30, None])
def test_bad_variants_say_what_is_expected(text):
    with pytest.raises(ValueError, match="expected 'dense', 'pruned-l1-N'"):
        parse_variant(text)


def _model(name="tiny_mlp"):
    return models.build_model(name, seed=0)


def test_unstructured_pruning_zeroes_weights_but_keeps_every_shape():
    dense_shapes = {k: v.shape for k, v in _model().state_dict().items()}
    model, facts = apply_variant(_model(), parse_variant("pruned-l1-30"))
    assert {k: v.shape for k, v in model.state_dict().items()} == dense_shapes
    assert facts["weight_sparsity"] == pytest.approx(0.30, abs=0.01)
    assert facts["parameters_after"] == facts["parameters_before"]
    assert not any("orig" in k or "mask" in k for k in model.state_dict())  # made permanent


def test_channel_pruning_zeroes_whole_output_rows():
    model, facts = apply_variant(_model(), parse_variant("pruned-channels-50"))
    first = model[0].weight
    zero_rows = int((first.abs().sum(dim=1) == 0).sum())
    assert zero_rows == first.shape[0] // 2
    assert facts["parameters_after"] == facts["parameters_before"]


@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_cnn", "small_transformer", "resnet18"])
def test_shrinking_removes_channels_for_real_and_the_file_loads_into_a_fresh_model(name):
    model, facts = apply_variant(_model(name), parse_variant("shrunk-channels-50"))
    assert facts["pruned_layers"] >= 1
    assert facts["parameters_after"] < 0.8 * facts["parameters_before"]
    x = models.make_input(models.default_input_shape(name), 2)
    with torch.inference_mode():
        expected = model(x)
        state = model.state_dict()
        fresh = fit_to_state_dict(_model(name), state)
        fresh.load_state_dict(state)
        assert torch.equal(fresh.eval()(x), expected)
    assert expected.shape[1] == _model(name)(x).shape[1]  # the outputs (classes) are never shrunk


@pytest.mark.parametrize("load", ["eager", "mmap"])
def test_a_shrunk_file_loads_in_eval_mode_and_gives_the_shrunk_models_outputs(load, tmp_path):
    [scenario] = parse_suite(
        f"name: s\nmatrix: {{model: [resnet18], variant: [shrunk-channels-50], load: [{load}], "
        "input_shape: [[3, 32, 32]]}\n"
    ).scenarios
    artifact = runtimes.prepare_artifact(scenario, tmp_path / "cache")
    infer, _ = runtimes.load_model(scenario, artifact.path)
    assert not any(m.training for m in infer.modules())  # resized BatchNorm layers included
    shrunk, _ = runtimes.build_variant(scenario)
    x = models.make_input((3, 32, 32), 2)
    with torch.inference_mode():
        assert torch.allclose(infer(x), shrunk(x), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_mlp", "tiny_cnn", "small_transformer", "resnet18"])
def test_zeroed_channels_are_the_removed_ones(name):
    """pruned-channels-N and shrunk-channels-N are the same model, with and without the zeros."""
    zeroed, zeroed_facts = apply_variant(_model(name), parse_variant("pruned-channels-50"))
    shrunk, shrunk_facts = apply_variant(_model(name), parse_variant("shrunk-channels-50"))
    assert zeroed_facts["pruned_layers"] == shrunk_facts["pruned_layers"]
    assert zeroed_facts["parameters_after"] == zeroed_facts["parameters_before"]
    x = models.make_input(models.default_input_shape(name), 2)
    with torch.inference_mode():
        assert torch.allclose(zeroed(x), shrunk(x), atol=1e-5), (zeroed(x) - shrunk(x)).abs().max()
        assert not torch.allclose(zeroed(x), _model(name)(x), atol=1e-3)  # and not the dense model


def test_shrinking_keeps_the_channels_with_the_largest_norm():
    dense = _model()
    norms = dense[0].weight.norm(dim=1)
    model, _ = apply_variant(_model(), parse_variant("shrunk-channels-25"))
    kept = model[0].weight
    assert kept.shape[0] == 192
    assert kept.norm(dim=1).min() >= torch.sort(norms).values[64] - 1e-6


def test_a_model_without_layers_to_prune_is_refused():
    with pytest.raises(ValueError, match="no Linear or Conv layer"):
        apply_variant(torch.nn.Sequential(torch.nn.ReLU()), parse_variant("pruned-l1-10"))
