"""bench.fidelity's figures on outputs of every size."""

from __future__ import annotations

import pytest
import torch

from bench.fidelity import compare, compare_task, row_cosines


def test_outputs_of_vanishing_size_keep_their_cosine():
    # A randomly initialised mobilenet_v3_small gives logits ~1e-9; torch's cosine_similarity clamps
    # norms at 1e-8 and called two runs that differ by float rounding 0.06 apart.
    torch.manual_seed(0)
    reference = torch.randn(4, 1000) * 1e-9
    rounded = reference * (1 + 1e-7 * torch.randn(4, 1000))
    figures = compare(rounded, reference)
    assert figures["cosine_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert figures["top1_agreement"] == 1.0
    assert row_cosines(-reference, reference).tolist() == pytest.approx([-1.0] * 4)
    embeddings = compare_task("feature-extraction", rounded.view(4, 10, 100), reference.view(4, 10, 100))
    assert embeddings["cosine_min"] == pytest.approx(1.0, abs=1e-6)


def test_a_zero_row_matches_only_a_zero_row():
    zero, one = torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 3.0]])
    assert row_cosines(zero, zero).tolist() == [1.0]
    assert row_cosines(zero, one).tolist() == [0.0]
    assert row_cosines(one, 2 * one).tolist() == pytest.approx([1.0])


def test_an_output_that_no_longer_follows_the_input_has_no_input_dependence():
    # What torch's int8 did to a random-weight mobilenet_v3_small: logits ~1e-9 fell below the
    # quantizer's step, so every input gave the same output and the cosine (0.0076) was noise.
    torch.manual_seed(0)
    reference = torch.randn(1, 1000) * 1e-6 + torch.randn(4, 1000) * 1e-9
    flat = compare(torch.full((4, 1000), 1e-6), reference)
    assert flat["input_dependence"] == 0.0
    rounded = compare(reference + 1e-12 * torch.randn(4, 1000), reference)
    assert rounded["input_dependence"] == pytest.approx(1.0, abs=0.01) and rounded["cosine_similarity"] > 0.99
    # A reference that is the same for every input gives nothing to compare with.
    assert compare(torch.randn(4, 10), torch.ones(4, 10))["input_dependence"] is None
    assert compare(torch.full((4, 10), float("nan")), torch.randn(4, 10))["input_dependence"] is None
