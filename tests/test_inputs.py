"""Named, typed inputs (bench.suite.inputs), their suite checks, and task-aware fidelity (bench.checks.fidelity)."""

from __future__ import annotations

import re

import pytest
import torch
from support.text_models import config_only

from bench.checks.fidelity import compare_task
from bench.errors import SuiteError
from bench.models import hf
from bench.suite.inputs import InputsError, InputSpec, make_inputs, parse_inputs, select_output
from bench.suite.scenarios import parse_suite

TOKENS = [
    {"name": "input_ids", "shape": ["seq"], "dtype": "int64", "range": [5, 50]},
    {"name": "attention_mask", "shape": ["seq"], "dtype": "int64", "fill": 1},
]


def test_inputs_are_seeded_drawn_from_their_range_and_filled():
    specs = parse_inputs(TOKENS)
    batch = make_inputs(specs, 3, 16, seed=4)
    assert list(batch) == ["input_ids", "attention_mask"]
    assert batch["input_ids"].shape == (3, 16) and batch["input_ids"].dtype == torch.int64
    assert int(batch["input_ids"].min()) >= 5 and int(batch["input_ids"].max()) < 50
    assert torch.equal(batch["attention_mask"], torch.ones(3, 16, dtype=torch.int64))
    assert torch.equal(make_inputs(specs, 3, 16, seed=4)["input_ids"], batch["input_ids"])
    assert not torch.equal(make_inputs(specs, 3, 16, seed=5)["input_ids"], batch["input_ids"])
    assert InputSpec.from_dict(specs[0].to_dict()) == specs[0]


@pytest.mark.parametrize(
    ("entry", "where", "words"),
    [
        ({"name": "x", "shape": [4], "dtype": "int64"}, (0,), "needs range"),
        ({"name": "x", "shape": [4], "dtype": "int8", "fill": 1}, (0, "dtype"), "float32, int64, int32"),
        ({"name": "x", "shape": ["len"]}, (0, "shape"), "'seq'"),
        ({"name": "x", "shape": [4], "dtype": "int64", "range": [9, 3]}, (0, "range"), "low < high"),
        ({"name": "x", "shape": [4], "range": [0, 3]}, (0, "range"), "integer inputs"),
        ({"name": "x", "shape": [4], "dtype": "int64", "fill": 1.5}, (0, "fill"), "whole number"),
        ({"name": "x", "shape": [4], "size": 3}, (0, "size"), "unknown key"),
    ],
)
def test_bad_inputs_say_where_and_why(entry, where, words):
    with pytest.raises(InputsError, match=words) as caught:
        parse_inputs([entry])
    assert caught.value.where == where


def test_select_output_by_name_index_and_first_tensor():
    first, second = torch.zeros(2), torch.ones(2)
    assert select_output({"last_hidden_state": first, "pooler_output": second}, "pooler_output") is second
    assert select_output({"last_hidden_state": first, "pooler_output": second}, None) is first
    assert select_output(((first, second), 3), None) is first
    assert select_output((first, second), 1) is second
    with pytest.raises(KeyError, match="pooler_output"):
        select_output({"last_hidden_state": first, "pooler_output": second}, "logits")


def _suite(tmp_path, model: str, extra: str = "", seq: str = "seq_len: [16]") -> str:
    text = f"name: t\nmatrix:\n  model: [{model}]\n  {seq}\n{extra}"
    return parse_suite(text, str(tmp_path / "s.yaml"), file_path=tmp_path / "s.yaml")


def test_seq_len_goes_into_the_id_and_the_first_inputs_shape(tmp_path):
    (tmp_path / "m.py").write_text("")
    model = "{name: tok, factory: 'm:f', inputs: [{name: input_ids, shape: [seq], dtype: int64, range: [0, 9]}]}"
    (tmp_path / "m.py").write_text("def f():\n    pass\n")
    suite = _suite(tmp_path, model, seq="seq_len: [16, 128]")
    assert [s.id for s in suite.scenarios] == ["tok-b1-t1-fp32-eager-s16", "tok-b1-t1-fp32-eager-s128"]
    assert suite.scenarios[1].input_shape == (128,)
    assert suite.scenarios[1].source.inputs[0].range == (0, 9)


def _hf(tmp_path, **config):
    defaults = {"model_type": "bert", "vocab_size": 100, "max_position_embeddings": 64, "type_vocab_size": 2}
    return config_only(tmp_path / "folder", **{**defaults, **config})


def test_hf_inputs_come_from_config_json(tmp_path):
    _hf(tmp_path)
    suite = _suite(tmp_path, "{name: enc, hf: folder, task: feature-extraction, random_weights: true}")
    (scenario,) = suite.scenarios
    names = [(s.name, s.range, s.fill) for s in scenario.source.inputs]
    assert names == [("input_ids", (0, 100), None), ("attention_mask", None, 1), ("token_type_ids", None, 0)]
    assert scenario.id == "enc-b1-t1-fp32-eager-s16"


def test_the_models_side_answers_what_an_hf_folder_gives_its_entry(tmp_path):
    folder = _hf(tmp_path, model_type="gpt2", n_positions=32, max_position_embeddings=None, type_vocab_size=None)
    facts = hf.check_entry(folder, "causal-lm", (), None, False)
    assert ([s.name for s in facts.inputs], facts.max_positions) == (["input_ids", "attention_mask"], 32)
    own = (InputSpec("input_ids", ("seq",), "int64", range=(0, 10)),)
    assert hf.check_entry(folder, "causal-lm", own, None, False).inputs == own
    (tmp_path / "prompts.txt").write_text("one sentence\n")
    for task, inputs, text, where in [
        (None, (), None, ()),
        ("causal-lm", (InputSpec("input_ids", ("seq",), "int64", range=(0, 101)),), None, ("inputs", 0, "range")),
        ("causal-lm", (), str(tmp_path / "prompts.txt"), ("text",)),  # no tokenizer in the folder
    ]:
        with pytest.raises(hf.EntryError) as info:
            hf.check_entry(folder, task, inputs, text, False)
        assert info.value.where == where
    with pytest.raises(hf.EntryError) as info:
        hf.check_entry(tmp_path / "nowhere", "causal-lm", (), None, False)
    assert info.value.where == ("hf",)
    # no vocab_size to draw token ids from: said so (it was a KeyError, an internal error)
    no_vocab = config_only(tmp_path / "novocab", model_type="gpt2", n_positions=64)
    with pytest.raises(hf.EntryError, match="has no vocab_size") as info:
        hf.check_entry(no_vocab, "causal-lm", (), None, True)
    assert info.value.where == ("hf",)
    assert hf.check_entry(no_vocab, "causal-lm", own, None, True).inputs == own


@pytest.mark.parametrize(
    ("model", "extra", "seq", "field", "words"),
    [
        (
            "{name: enc, hf: nowhere, task: feature-extraction}",
            "",
            "seq_len: [16]",
            "matrix.model.0.hf",
            "nowhere: no such folder",
        ),
        (
            "{name: enc, hf: folder/config.json, task: feature-extraction}",
            "",
            "seq_len: [16]",
            "matrix.model.0.hf",
            "config.json is a file, not a folder: hf: takes the model's folder",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true, inputs: [{name: input_ids, "
            "shape: [seq, 3], dtype: int64, range: [0, 100]}]}",
            "",
            "seq_len: [16]",
            "matrix.model.0.inputs.0.shape",
            "takes input_ids as [batch, sequence], so one sample's shape has one dimension, e.g. [seq]; [seq, 3]",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true, inputs: [{name: input_ids, "
            "shape: [seq]}]}",
            "",
            "seq_len: [16]",
            "matrix.model.0.inputs.0.dtype",
            "input_ids indexes an embedding table, so it takes integers: dtype: int64",
        ),
        (
            "{name: enc, hf: folder, task: translation, random_weights: true}",
            "",
            "seq_len: [16]",
            "matrix.model.0.task",
            "feature-extraction, text-classification, causal-lm",
        ),
        ("{name: enc, hf: folder, random_weights: true}", "", "seq_len: [16]", "matrix.model.0", "needs task"),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true}",
            "",
            "seq_len: [100]",
            "matrix",
            "maximum positions (64",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true}",
            "",
            "batch_size: [1]",
            "matrix",
            "set seq_len",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true, inputs: [{name: input_ids, "
            "shape: [seq], dtype: int64, range: [0, 30522]}]}",
            "",
            "seq_len: [16]",
            "matrix.model.0.inputs.0.range",
            "vocab_size 100",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true, text: empty.txt}",
            "",
            "seq_len: [16]",
            "matrix.model.0.text",
            "no sentences",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true, text: missing.txt}",
            "",
            "seq_len: [16]",
            "matrix.model.0.text",
            "cannot be read",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true}",
            "defaults: {generate: {new_tokens: 4}}\n",
            "seq_len: [16]",
            "matrix",
            "causal-lm",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction, random_weights: true}",
            "",
            "input_shape: [[16]]",
            "matrix",
            "input_shape does not apply",
        ),
        (
            "{name: enc, hf: folder, task: feature-extraction}",
            "",
            "seq_len: [16]",
            "matrix.model.0.hf",
            "random_weights: true",
        ),
        ("tiny_mlp", "", "seq_len: [16]", "matrix", "seq_len applies"),
    ],
)
def test_bad_text_models_are_refused_with_file_line_and_field(tmp_path, model, extra, seq, field, words):
    _hf(tmp_path)
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(SuiteError, match=re.escape(words)) as caught:
        _suite(tmp_path, model, extra, seq)
    assert caught.value.field == field
    assert caught.value.line is not None


def test_a_float_token_input_of_a_text_factory_is_refused_naming_its_dtype(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n    pass\n")
    model = (
        "{name: tok, factory: 'm:f', task: feature-extraction, inputs: [{name: input_ids, shape: [seq], "
        "dtype: int64, range: [0, 9]}, {name: token_type_ids, shape: [seq], fill: 0}]}"
    )
    with pytest.raises(SuiteError, match="token_type_ids indexes an embedding table") as caught:
        _suite(tmp_path, model)
    assert caught.value.field == "matrix.model.0.inputs.1.dtype"


@pytest.mark.parametrize(
    ("architecture", "task", "fits"),
    [
        ("BertModel", "causal-lm", "a base model without a task head. The task that fits it: task: feature-extraction"),
        ("GPT2LMHeadModel", "text-classification", "a causal language model. The task that fits it: task: causal-lm"),
        ("BertForSequenceClassification", "feature-extraction", "The task that fits it: task: text-classification"),
        ("BertForMaskedLM", "text-classification", "No task bench offers is sure to fit it"),
    ],
)
def test_a_task_that_cannot_load_the_saved_architecture_is_blamed_on_the_task(tmp_path, architecture, task, fits):
    _hf(tmp_path, architectures=[architecture])
    model = f"{{name: enc, hf: folder, task: {task}}}"
    with pytest.raises(SuiteError, match=re.escape(fits)) as caught:
        _suite(tmp_path, model)
    assert caught.value.field == "matrix.model.0.task"
    assert f"task: {task} does not fit this folder" in str(caught.value) and f"architecture {architecture}" in str(
        caught.value
    )
    assert "weights do not fit" not in str(caught.value)
    # With seeded random weights any task builds from config.json; the ones that load a masked LM are not refused.
    assert _suite(tmp_path, model.replace("}", ", random_weights: true}")).scenarios
    _hf(tmp_path, architectures=["BertForMaskedLM"])
    assert _suite(tmp_path, "{name: enc, hf: folder, task: causal-lm, random_weights: true}").scenarios


def test_generation_cannot_run_past_the_models_positions(tmp_path):
    _hf(tmp_path, model_type="gpt2", n_positions=40, max_position_embeddings=None, type_vocab_size=None)
    model = "{name: lm, hf: folder, task: causal-lm, random_weights: true}"
    assert _suite(tmp_path, model, "defaults: {generate: {new_tokens: 24}}\n").scenarios[0].generate.new_tokens == 24
    with pytest.raises(SuiteError, match=re.escape("plus generate.new_tokens (25) is 41")):
        _suite(tmp_path, model, "defaults: {generate: {new_tokens: 25}}\n")


def test_feature_extraction_fidelity_pools_real_tokens_only():
    torch.manual_seed(0)
    reference = torch.randn(6, 5, 8)
    mask = torch.ones(6, 5)
    mask[:, 3:] = 0
    output = reference.clone()
    output[:, 3:] = 100.0  # padding positions differ wildly: a mask-aware pooling never sees them
    figures = compare_task("feature-extraction", output, reference, mask)
    assert figures["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert figures["nearest_neighbour_agreement"] == 1.0
    assert figures["top1_agreement"] is None  # no argmax over embedding dimensions
    assert "mean-pooled" in figures["metric"]
    unmasked = compare_task("feature-extraction", output, reference, None)
    assert unmasked["cosine_min"] < 0.99


def test_causal_lm_fidelity_is_next_token_agreement_and_kl():
    torch.manual_seed(0)
    reference = torch.randn(2, 4, 10)
    same = compare_task("causal-lm", reference, reference, torch.ones(2, 4))
    assert same["top1_agreement"] == 1.0 and same["kl_divergence_mean"] == pytest.approx(0.0, abs=1e-6)
    assert same["positions"] == 8
    flipped = compare_task("causal-lm", -reference, reference, torch.ones(2, 4))
    assert flipped["top1_agreement"] < 0.5 and flipped["kl_divergence_mean"] > 0.1


def test_text_classification_fidelity_is_top1_on_raw_logits():
    reference = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]])
    output = torch.tensor([[2.0, 1.5], [0.5, 3.0], [0.4, 0.5]])
    figures = compare_task("text-classification", output, reference)
    assert figures["top1_agreement"] == pytest.approx(2 / 3)
    assert figures["max_abs_error"] == pytest.approx(0.6)


def test_hf_rows_without_transformers_are_unsupported_with_the_install_hint(tmp_path, monkeypatch):
    from bench import runtimes
    from bench.models import hf

    _hf(tmp_path)
    (scenario,) = _suite(tmp_path, "{name: enc, hf: folder, task: feature-extraction, random_weights: true}").scenarios
    assert runtimes.unsupported_reason(scenario) is None
    monkeypatch.setattr(hf, "available", lambda: False)
    assert "pip install .[transformers]" in runtimes.unsupported_reason(scenario)


def test_kv_cache_bytes_count_each_tensor_once():
    from bench.checks.generation import cache_bytes

    keys = torch.zeros(2, 4, 8, dtype=torch.float32)

    class Layer:
        def __init__(self) -> None:
            self.keys, self.values, self.same = keys, torch.zeros(2, 4, 8, dtype=torch.bfloat16), keys

    class Cache:
        def __init__(self) -> None:
            self.layers = [Layer(), Layer()]

    assert cache_bytes(Cache()) == 64 * 4 + 2 * 64 * 2  # the shared keys tensor counted once
    assert cache_bytes(((keys, keys + 1),)) == 2 * 64 * 4
