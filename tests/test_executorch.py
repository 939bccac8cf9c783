"""load: executorch (bench.runtimes.executorch): ExecuTorch with its XNNPACK delegate.

Unit tests of what it refuses, then one end-to-end run of the real CLI (slow: lowering imports
ExecuTorch's compiler stack), skipped where the `executorch` extra is not installed."""

from __future__ import annotations

import dataclasses

import pytest
from support.text_models import TAGGER_FACTORY

from bench import runtimes
from bench.results.runfolder import load_run
from bench.runtimes import executorch
from bench.suite.scenarios import BatchingPolicy, CapacityPolicy, Scenario, SeqLenMix

TAGGER = "tagger-b1-t1-fp32-executorch-s12"


def _scenario(**changes) -> Scenario:
    return dataclasses.replace(Scenario("tiny_mlp", 1, 1, 1, "fp32", "executorch", (64,)), **changes)


@pytest.mark.parametrize("precision", ["fp16", "bf16", "int8_dynamic", "int8_static"])
def test_only_fp32_is_lowered(precision):
    reason = runtimes.unsupported_reason(_scenario(precision=precision))
    assert reason is not None and f"bench lowers fp32 programs to ExecuTorch's XNNPACK delegate; {precision}" in reason


def test_weight_only_precisions_say_their_own_reason_first():
    reason = runtimes.unsupported_reason(_scenario(precision="int8_weight_only"))
    assert reason is not None and "bench runs it under eager and compile, not executorch" in reason


def test_without_the_extra_the_row_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(executorch.sources, "spec_available", lambda module: module != "executorch")
    assert runtimes.unsupported_reason(_scenario()) == executorch.EXECUTORCH_MISSING
    assert "pip install .[executorch]" in executorch.EXECUTORCH_MISSING


def test_its_program_takes_the_timed_batch_and_fidelitys_samples():
    assert executorch.max_batch(_scenario(batch_size=1)) == 4  # FIDELITY_INPUTS in one call
    assert executorch.max_batch(_scenario(batch_size=16)) == 16
    runtime = runtimes.RUNTIMES["executorch"]
    assert runtime.engine == "executorch" and not runtime.takes_numpy and runtime.profiler is None
    assert "grad_mode and module_mode apply to torch modules" in runtimes.unsupported_reason(
        _scenario(grad_mode="no_grad")
    )


def test_capacity_instances_load_a_program_that_takes_their_batches():
    capacity = CapacityPolicy(slo_p99_ms=50, offline_batch_size=16)
    assert executorch.max_batch(_scenario(capacity=capacity)) == 16  # the offline closed loop's batch
    batched = dataclasses.replace(capacity, offline_batch_size=2, batching=BatchingPolicy(max_batch=8, max_delay_ms=2))
    assert executorch.max_batch(_scenario(batch_size=3, capacity=batched)) == 24  # 8 requests of 3 in one call


def test_a_capacity_request_mix_of_other_seq_lens_is_refused():
    mix = CapacityPolicy(slo_p99_ms=50, request_mix=SeqLenMix(choices=(16, 64), weights=(1.0, 1.0)))
    reason = runtimes.unsupported_reason(_scenario(seq_len=16, capacity=mix))
    assert reason is not None and "capacity.request_mix draws seq_len 16, 64" in reason and "(16)" in reason
    same = dataclasses.replace(mix, request_mix=SeqLenMix(choices=(16,), weights=(1.0,)))
    assert runtimes.unsupported_reason(_scenario(seq_len=16, capacity=same)) is None


@pytest.mark.slow
def test_executorch_runs_end_to_end(run_cli, write_suite, tmp_path):
    pytest.importorskip("executorch.runtime", reason="pip install .[executorch]")
    suite = write_suite(
        """
        name: executorch
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix:
          model: [tiny_mlp]
          load: [executorch]
        include:
          # convolutions, a batch and 2 threads in one row: each row lowers its own program (~10 s here)
          - {model: tiny_cnn, load: executorch, batch_size: 8, threads: 2}
          - {model: tiny_mlp, load: executorch, precision: int8_dynamic}  # refused before a worker starts
          # named inputs: exported from bench.suite.inputs.positional, fed in the inputs' order
          - {model: {name: tagger, factory: "bench_e2e_named_tagger:tagger", output: logits,
                     inputs: [{name: input_ids, shape: [seq], dtype: int64, range: [0, 50]},
                              {name: attention_mask, shape: [seq], dtype: int64, fill: 1}]},
             load: executorch, seq_len: 12}
        """
    )
    (tmp_path / "bench_e2e_named_tagger.py").write_text(TAGGER_FACTORY, encoding="utf-8")
    result = run_cli("run", str(suite), "--no-history", timeout_s=900)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    written = load_run(run_dir)
    assert written.warnings == []
    rows = {r.scenario_id: r for r in written.records}
    measured = ("tiny_mlp-b1-t1-fp32-executorch", "tiny_cnn-b8-t2-fp32-executorch")
    for scenario_id in (*measured, TAGGER):
        row = rows[scenario_id]
        assert row.status == "ok", (scenario_id, row.reason)
        assert row.runtime == "executorch" and row.artifact_format == "executorch_program"
        assert row.artifact_prepare_s > 0 and row.load_s > 0 and row.first_inference_s > 0
        assert row.compiled.compiler == "executorch_xnnpack" and row.compiled.num_threads == row.threads
        assert row.fidelity.cosine_similarity > 0.9999, scenario_id
    assert rows[TAGGER].fidelity.top1_agreement == 1.0
    refused = rows["tiny_mlp-b1-t1-int8_dynamic-executorch"]
    assert refused.status == "unsupported" and "XNNPACK delegate" in refused.reason
