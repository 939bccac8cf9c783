"""bench.checks.fidelity's figures on outputs of every size."""

from __future__ import annotations

import pytest
import torch
from support.demo_runs import run_of

from bench.checks.fidelity import compare, compare_task, distinct_samples, row_cosines
from bench.report.text import build_text, text_markdown
from bench.results.record import Fidelity, ResultRecord


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


def _repeated_text_samples(sentences: int, samples: int = 16) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Named inputs and fp32 embeddings [samples, seq, hidden] as a `text:` file of `sentences` lines gives
    them for `samples` fidelity samples: the file repeats, so sample i is sentence i % sentences."""
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (sentences, 6))[torch.arange(samples) % sentences]
    named = {"input_ids": ids, "attention_mask": torch.ones(samples, 6, dtype=torch.int64)}
    return named, torch.randn(sentences, 6, 8)[torch.arange(samples) % sentences]


def test_repeated_text_samples_do_not_tie_as_each_others_nearest_neighbour():
    # A 5-sentence file for 16 samples: each sample's copies were its nearest neighbours at similarity 1,
    # and float noise (1e-7, as fp32 ONNX Runtime against fp32 eager) chose among them: 0.81 was read.
    named, reference = _repeated_text_samples(5)
    output = reference + 1e-7 * torch.randn(reference.shape)
    figures = compare_task("feature-extraction", output, reference, named["attention_mask"], named)
    assert figures["nearest_neighbour_agreement"] == 1.0
    assert (figures["inputs"], figures["duplicate_inputs"], figures["note"]) == (5, 11, None)
    assert figures["cosine_min"] == pytest.approx(1.0, abs=1e-6)


def test_too_few_distinct_samples_give_no_nearest_neighbour_agreement_and_say_why():
    named, reference = _repeated_text_samples(2)
    figures = compare_task("feature-extraction", reference.clone(), reference, named["attention_mask"], named)
    assert figures["nearest_neighbour_agreement"] is None
    assert (figures["inputs"], figures["duplicate_inputs"]) == (2, 14)
    assert "2 distinct sample(s), it needs at least 3" in figures["note"]
    assert figures["cosine_median"] == pytest.approx(1.0)  # the other figures stand, on the distinct samples


def test_samples_that_differ_in_any_named_input_are_distinct():
    ids, mask = torch.tensor([[1, 2], [1, 2], [1, 2]]), torch.tensor([[1, 1], [1, 0], [1, 1]])
    named = {"input_ids": ids, "attention_mask": mask}
    assert distinct_samples(named) == [0, 1]
    logits = torch.randn(3, 4)
    causal = compare_task("causal-lm", logits.view(3, 1, 4), logits.view(3, 1, 4), mask[:, :1], named)
    assert (causal["inputs"], causal["duplicate_inputs"], causal["positions"]) == (2, 1, 2)


def test_the_reports_text_section_says_which_samples_repeated_and_why_a_figure_is_missing(tmp_path):
    named, reference = _repeated_text_samples(2)
    figures = compare_task("feature-extraction", reference.clone(), reference, named["attention_mask"], named)
    record = ResultRecord(
        run_id="r",
        scenario_id="bert-b1",
        suite="s",
        model="bert",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        runtime="torch",
        input_shape=[6],
        status="ok",
        seq_len=6,
        named_inputs=[{"name": "input_ids", "shape": [6], "dtype": "int64"}],
        task="feature-extraction",
        fidelity=Fidelity(**figures),
    )
    run = run_of([record], tmp_path, suite="s")
    markdown = text_markdown(build_text([run], tmp_path), tmp_path)
    assert "- bert-b1: 14 of 16 samples repeat an earlier one exactly and are left out" in markdown
    assert "bert-b1: no nearest-neighbour agreement: 2 distinct sample(s)" in markdown
