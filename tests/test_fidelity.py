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
