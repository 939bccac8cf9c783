"""End to end: text models through the real `bench run`: Hugging Face folders with a tokenizer and
real sentences, generation, a factory and an ONNX file with several named inputs, and bad entries
that become failed rows naming their field."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from support.text_models import SENTENCES, TAGGER_FACTORY, bert_folder, gpt2_folder
from torch import nn

from bench.results.runfolder import load_run

pytestmark = pytest.mark.slow

TOKENS = (
    "[{name: input_ids, shape: [seq], dtype: int64, range: [0, 50]}, "
    "{name: attention_mask, shape: [seq], dtype: int64, fill: 1}]"
)


def _onnx_two_inputs(path: Path) -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(50, 8)

        def forward(self, input_ids, weights):
            return (self.embed(input_ids) * weights.unsqueeze(-1)).sum(dim=1)

    example = (torch.randint(0, 50, (1, 12)), torch.ones(1, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Two().eval(),
            example,
            str(path),
            dynamo=False,
            input_names=["input_ids", "weights"],
            dynamic_axes={"input_ids": {0: "batch"}, "weights": {0: "batch"}},
        )


def test_text_models_run_in_every_load_mode_with_task_fidelity_and_generation(run_cli, write_suite, tmp_path):
    bert_folder(tmp_path / "bert")
    bert_folder(tmp_path / "classifier", labels=3)
    gpt2_folder(tmp_path / "gpt2")
    shutil.copytree(tmp_path / "bert", tmp_path / "misfit")
    config = json.loads((tmp_path / "misfit" / "config.json").read_text())
    (tmp_path / "misfit" / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    (tmp_path / "bench_e2e_text_models.py").write_text(TAGGER_FACTORY)
    _onnx_two_inputs(tmp_path / "two.onnx")
    suite = write_suite(
        f"""
        name: text
        defaults: {{measure: {{warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}, seq_len: 12, batch_size: 2}}
        matrix:
          - model: [{{name: enc, hf: bert, task: feature-extraction, text: sentences.txt}}]
            precision: [fp32, int8_dynamic]
          - model: [enc]
            load: [mmap, onnxruntime]
          - model: [{{name: tagger, factory: "bench_e2e_text_models:tagger", inputs: {TOKENS}, output: logits}}]
            load: [torchscript, export]
        include:
          - {{model: {{name: cls, hf: classifier, task: text-classification, text: sentences.txt}}}}
          - {{model: {{name: lm, hf: gpt2, task: causal-lm}}, generate: {{new_tokens: 4, rounds: 2}}}}
          - {{model: {{name: two, onnx: two.onnx, inputs: [{{name: input_ids, shape: [seq], dtype: int64,
              range: [0, 50]}}, {{name: weights, shape: [seq], fill: 1}}]}}}}
          - {{model: {{name: two_int, onnx: two.onnx, inputs: [{{name: input_ids, shape: [seq], dtype: int64,
              range: [0, 50]}}, {{name: weights, shape: [seq], dtype: int64, fill: 1}}]}}}}
          - {{model: {{name: pixels, hf: bert, task: feature-extraction, inputs: [{{name: pixel_values,
              shape: [seq], dtype: int64, range: [0, 50]}}]}}}}
          - {{model: {{name: misfit, hf: misfit, task: feature-extraction}}}}
        """
    )
    result = run_cli("run", str(suite), "--no-history")
    assert result.returncode == 1, result.stdout + result.stderr  # the three bad entries
    assert "Traceback" not in result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    written = load_run(run_dir)
    assert written.warnings == []
    rows = {r.scenario_id: r for r in written.records}
    statuses = {k: r.status for k, r in rows.items()}
    assert statuses == {
        "enc-b2-t1-fp32-eager-s12": "ok",
        "enc-b2-t1-int8_dynamic-eager-s12": "ok",
        "enc-b2-t1-fp32-mmap-s12": "ok",
        "enc-b2-t1-fp32-onnxruntime-s12": "ok",
        "tagger-b2-t1-fp32-torchscript-s12": "ok",
        "tagger-b2-t1-fp32-export-s12": "ok",
        "cls-b2-t1-fp32-eager-s12": "ok",
        "lm-b2-t1-fp32-eager-s12": "ok",
        "two-b2-t1-fp32-onnxruntime-s12": "ok",
        "two_int-b2-t1-fp32-onnxruntime-s12": "failed",
        "pixels-b2-t1-fp32-eager-s12": "failed",
        "misfit-b2-t1-fp32-eager-s12": "failed",
    }, {k: r.reason for k, r in rows.items() if r.status != "ok"}

    encoder = rows["enc-b2-t1-fp32-eager-s12"]
    assert encoder.seq_len == 12 and encoder.task == "feature-extraction" and encoder.input_shape == [12]
    assert [i["name"] for i in encoder.named_inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert "mean-pooled" in encoder.fidelity.metric and encoder.fidelity.top1_agreement is None
    assert encoder.fidelity.cosine_min > 0.9999 and encoder.fidelity.nearest_neighbour_agreement == 1.0
    int8 = rows["enc-b2-t1-int8_dynamic-eager-s12"].fidelity
    assert int8.cosine_min < 1.0 and int8.nearest_neighbour_agreement is not None
    for scenario_id in ("enc-b2-t1-fp32-mmap-s12", "enc-b2-t1-fp32-onnxruntime-s12"):
        assert rows[scenario_id].fidelity.cosine_min > 0.999, scenario_id
    assert rows["tagger-b2-t1-fp32-export-s12"].fidelity.max_abs_error < 1e-5
    assert rows["cls-b2-t1-fp32-eager-s12"].fidelity.top1_agreement == 1.0

    lm = rows["lm-b2-t1-fp32-eager-s12"]
    assert lm.fidelity.kl_divergence_mean == pytest.approx(0.0, abs=1e-6) and lm.fidelity.positions == 16 * 12
    generation = lm.generation
    assert (generation.prompt_tokens, generation.new_tokens, generation.batch_size) == (12, 4, 2)
    assert generation.ttft_s.rounds == 2 and generation.tpot_s.rounds == 2 * 3
    assert len(generation.tpot_by_position_s) == 3 and generation.tokens_per_s > 0
    # 2 layers x keys and values x batch 2 x 2 heads x 15 cached positions x 16 dims x 4 bytes
    assert generation.kv_cache_bytes == 2 * 2 * 2 * 2 * 15 * 16 * 4

    assert "input 'weights' takes FLOAT" in rows["two_int-b2-t1-fp32-onnxruntime-s12"].reason
    assert "inputs of model 'two_int'" in rows["two_int-b2-t1-fp32-onnxruntime-s12"].reason
    pixels = rows["pixels-b2-t1-fp32-eager-s12"].reason
    assert "takes no pixel_values" in pixels and "input_ids, attention_mask" in pixels and "inputs of model" in pixels
    misfit = rows["misfit-b2-t1-fp32-eager-s12"].reason
    assert "hf of model 'misfit'" in misfit and "intermediate" in misfit

    report = (run_dir / "report.html").read_text()
    assert "Text models" in report and "Generation" in report and "mean-pooled" in report
    assert (run_dir / "figures" / "text_tpot_by_position.png").stat().st_size > 0
    csv = (run_dir / "results.csv").read_text().splitlines()
    assert "seq_len" in csv[0] and "ttft_median_ms" in csv[0]


def test_library_warnings_stay_out_of_the_console_and_go_to_the_run_folders_log(run_cli, write_suite, tmp_path):
    # Importing transformers (and torchao with it) logged torch's _pytree Enum deprecation, and ONNX Runtime's
    # static quantizer raised numpy's "RuntimeWarning: invalid value encountered in divide", between the
    # progress lines of every such run.
    bert_folder(tmp_path / "bert")
    gpt2_folder(tmp_path / "gpt2")
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    suite = write_suite(
        """
        name: quiet
        defaults: {measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.02}, calibration: {samples: 4},
                   seq_len: 8, batch_size: 1}
        matrix:
          model: [{name: enc, hf: bert, task: feature-extraction, text: sentences.txt}]
          precision: [int8_static]
          load: [onnxruntime]
        include:
          - {model: {name: lm, hf: gpt2, task: causal-lm}, generate: {new_tokens: 2, rounds: 1}}
        """
    )
    result = run_cli("run", str(suite), "--no-history")
    assert result.returncode == 0, result.stderr
    library_lines = re.findall(r"^.*(?:Warning\b|WARNING|^W\d{4} ).*$", result.stderr, re.M)
    assert library_lines == [], result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    log = (run_dir / "library.log").read_text()
    assert re.search(r"RuntimeWarning|WARNING torch\.utils\._pytree", log), log
    # ORT's symbolic shape inference gives up on this BERT and saved sym_shape_infer_temp.onnx and its
    # external data into the folder bench ran from (the user's)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("sym_shape") or p.suffix == ".data"]
