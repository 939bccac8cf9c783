"""The compiled load modes (bench.runtimes.compile, .aoti, .openvino): compile, aoti and openvino.

Unit tests first (suite settings, honest gaps, error lines, the Inductor cache), then one
end-to-end run of the real CLI on the tiny model (slow: Inductor builds C++ kernels).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from support.text_models import TAGGER_FACTORY

from bench import runtimes
from bench.errors import CompileFailed, SuiteError, Unsupported, first_error_line
from bench.results.record import CompiledRuntime, ResultRecord
from bench.results.runfolder import load_run
from bench.runtimes import compile as compiled
from bench.runtimes import openvino
from bench.suite.scenarios import CompilePolicy, Scenario, parse_suite


def _suite(body: str) -> tuple[Scenario, ...]:
    return parse_suite(f"name: s\nmatrix:\n  model: [tiny_mlp]\n{body}", "s.yaml").scenarios


def _scenario(**changes) -> Scenario:
    base = Scenario("tiny_mlp", 1, 1, 1, "fp32", "compile", (64,))
    return dataclasses.replace(base, **changes)


def test_compile_settings_default_merge_and_survive_the_worker_spec():
    (plain,) = _suite("  load: [compile]\n")
    assert plain.compile is None and compiled.policy_of(plain) == CompilePolicy("default", False, "cold")
    text = (
        "defaults:\n  compile: {mode: max-autotune-no-cudagraphs}\n"
        "include:\n  - {model: tiny_cnn, load: compile, compile: {dynamic: true, cache: warm}}\n"
    )
    scenarios = parse_suite(f"name: s\n{text}matrix:\n  model: [tiny_mlp]\n  load: [compile]\n", "s.yaml").scenarios
    assert scenarios[0].compile == CompilePolicy("max-autotune-no-cudagraphs", False, "cold")
    assert scenarios[1].compile == CompilePolicy("max-autotune-no-cudagraphs", True, "warm")  # merged over defaults
    assert Scenario.from_dict(json.loads(json.dumps(scenarios[1].to_dict()))) == scenarios[1]


@pytest.mark.parametrize(
    ("block", "field", "fragment"),
    [
        ("{mode: fast}", "compile.mode", "expected one of default, max-autotune-no-cudagraphs"),
        ("{dynamic: 'yes'}", "compile.dynamic", "expected true or false"),
        ("{cache: hot}", "compile.cache", "expected one of cold, warm"),
        ("{fullgraph: true}", "compile.fullgraph", "unknown key 'fullgraph'"),
    ],
)
def test_bad_compile_settings_name_the_field_and_line(block, field, fragment):
    with pytest.raises(SuiteError) as info:
        parse_suite(f"name: s\ndefaults:\n  compile: {block}\nmatrix:\n  model: [tiny_mlp]\n", "s.yaml")
    assert info.value.field == f"defaults.{field}" and info.value.line == 3 and fragment in info.value.message


def test_known_gaps_are_unsupported_with_a_reason(monkeypatch):
    assert "torch.export cannot export int8_dynamic" in runtimes.unsupported_reason(
        _scenario(load="aoti", precision="int8_dynamic")
    )
    assert "NNCF" in runtimes.unsupported_reason(_scenario(load="openvino", precision="int8_dynamic"))
    monkeypatch.setattr(openvino.sources, "spec_available", lambda module: module != "openvino")
    assert runtimes.unsupported_reason(_scenario(load="openvino")) == openvino.OPENVINO_MISSING
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    reason = runtimes.unsupported_reason(_scenario(load="aoti"))
    assert "needs a C++ compiler" in reason and "apt-get install g++" in reason


def test_a_users_aoti_package_needs_trust_code_and_only_it_takes_trust_code(tmp_path):
    (tmp_path / "mine.pt2").write_bytes(b"PK not checked before the run")
    entry = "{name: mine, aoti: mine.pt2, input_shape: [4]}"
    with pytest.raises(SuiteError) as info:
        parse_suite(f"name: s\nmatrix:\n  model: [{entry}]\n  load: [aoti]\n", str(tmp_path / "s.yaml"))
    assert info.value.field == "matrix.model.0.trust_code"
    assert "run as native code" in info.value.message and "trust_code: true" in info.value.message
    trusted = entry.replace("input_shape", "trust_code: true, input_shape")
    (scenario,) = parse_suite(
        f"name: s\nmatrix:\n  model: [{trusted}]\n  load: [aoti]\n", str(tmp_path / "s.yaml")
    ).scenarios
    assert scenario.source.trust_code and scenario.load == "aoti"
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(SuiteError, match="does not apply to onnx sources"):
        parse_suite(
            "name: s\nmatrix:\n  model: [{name: m, onnx: m.onnx, trust_code: true, input_shape: [4]}]\n",
            str(tmp_path / "s.yaml"),
        )


def test_first_error_line_skips_the_compilers_boilerplate():
    exc = RuntimeError(
        '\n  Traceback (most recent call last):\n  File "x.py", line 3\n'
        "Unsupported: call_function UserDefinedObjectVariable(foo) [] {}\n\n"
        "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace\n"
    )
    assert first_error_line(exc) == "Unsupported: call_function UserDefinedObjectVariable(foo) [] {}"
    assert first_error_line(ValueError("")) == "ValueError"


def test_a_compile_that_raises_is_one_line_with_a_hint():
    def infer(batch):
        raise RuntimeError("backend='inductor' raised:\nCppCompileError: C++ compile error\n" + "noise\n" * 200)

    with pytest.raises(CompileFailed) as info:
        compiled.first_compiled_call(infer, None)
    message = str(info.value)
    assert message.startswith("torch.compile failed: backend='inductor' raised:") and "noise" not in message
    assert "stderr.log" in message


def test_a_model_dynamo_leaves_to_eager_is_unsupported_not_timed_as_compiled():
    with pytest.raises(Unsupported, match="compiled no graph"):
        compiled.first_compiled_call(lambda batch: batch, 1)  # a plain function: nothing compiles


def test_inductor_cache_is_fresh_per_scenario_unless_warm(tmp_path, monkeypatch):
    monkeypatch.delenv(compiled.CACHE_ENV, raising=False)
    artifact = tmp_path / "entry" / "tiny_mlp-fp32.pt"
    artifact.parent.mkdir()
    facts, cleanup = compiled.set_up_inductor_cache(_scenario(), artifact)
    cold = Path(compiled.os.environ[compiled.CACHE_ENV])
    assert facts == {"cache": "cold"} and cold.is_dir() and not any(cold.iterdir())
    cleanup()
    assert not cold.exists()

    warm = _scenario(compile=CompilePolicy(cache="warm"))
    facts, _ = compiled.set_up_inductor_cache(warm, artifact)
    folder = Path(compiled.os.environ[compiled.CACHE_ENV])
    assert facts == {"cache": "cold"} and folder.parent == artifact.parent  # empty the first time
    (folder / "fxgraph").mkdir()
    assert compiled.set_up_inductor_cache(warm, artifact)[0] == {"cache": "warm"}
    other = dataclasses.replace(warm, compile=CompilePolicy(mode="max-autotune-no-cudagraphs", cache="warm"))
    assert compiled.warm_cache_dir(other, artifact) != folder  # another mode compiles other code


def test_record_keeps_compile_figures_through_json():
    record = ResultRecord(
        run_id="r",
        scenario_id="s",
        suite="x",
        model="tiny_mlp",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="compile",
        runtime="torch",
        input_shape=[64],
        status="ok",
        compile_s=1.5,
        compiled=CompiledRuntime(compiler="inductor", mode="default", cache="cold", graphs=1),
    )
    again = ResultRecord.from_dict(json.loads(record.to_json()))
    assert again == record and again.compiled.cache == "cold"


@pytest.mark.slow
def test_compile_aoti_and_openvino_run_end_to_end(run_cli, write_suite, tmp_path):
    if not compiled.cxx_compiler():
        pytest.skip("no C++ compiler: Inductor cannot build (the rows are unsupported, checked above)")
    suite = write_suite(
        """
        name: compiled
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix:
          model: [tiny_mlp]
          load: [compile, aoti, openvino]
        include:  # refused before a worker starts
          - {model: tiny_mlp, load: aoti, precision: int8_dynamic}
          - {model: tiny_mlp, load: openvino, precision: int8_dynamic}
          # named inputs: exported from bench.suite.inputs.positional (aoti), fed by name (openvino)
          - {model: {name: tagger, factory: "bench_e2e_named_tagger:tagger", output: logits,
                     inputs: [{name: input_ids, shape: [seq], dtype: int64, range: [0, 50]},
                              {name: attention_mask, shape: [seq], dtype: int64, fill: 1}]},
             load: aoti, seq_len: 12}
          - {model: tagger, load: openvino, seq_len: 12}
        """
    )
    (tmp_path / "bench_e2e_named_tagger.py").write_text(TAGGER_FACTORY, encoding="utf-8")
    result = run_cli("run", str(suite), "--no-history", timeout_s=1500)  # two cold Inductor builds
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    written = load_run(run_dir)
    assert written.warnings == []
    records = written.records
    rows = {(r.load, r.precision): r for r in records if r.model == "tiny_mlp"}
    for tagger in (r for r in records if r.model == "tagger"):
        assert tagger.status == "ok" and tagger.seq_len == 12, (tagger.load, tagger.reason)
        assert tagger.fidelity.max_abs_error < 1e-5 and tagger.fidelity.top1_agreement == 1.0, tagger.load
    for load in ("compile", "aoti", "openvino"):
        row = rows[load, "fp32"]
        assert row.status == "ok", (load, row.reason)
        assert row.fidelity.cosine_similarity > 0.9999 and row.fidelity.inputs == 4
        assert row.load_s > 0 and row.first_inference_s > 0
    for load in ("aoti", "openvino"):  # neither compiles torch's int8_dynamic layers
        assert rows[load, "int8_dynamic"].status == "unsupported", rows[load, "int8_dynamic"]
    compile_row, aoti_row, ov_row = rows["compile", "fp32"], rows["aoti", "fp32"], rows["openvino", "fp32"]
    assert compile_row.compile_s > 0 and compile_row.compiled.cache == "cold" and compile_row.compiled.graphs == 1
    assert compile_row.compiled.freezing is True and compile_row.peak_rss_kernel_phase_bytes.compile > 0
    assert aoti_row.artifact_format == "aoti_package" and aoti_row.artifact_prepare_s > 0 and aoti_row.compile_s is None
    assert ov_row.runtime == "openvino" and ov_row.artifact_format == "onnx"
    assert ov_row.compiled.inference_precision == "f32" and ov_row.compiled.num_threads == 1
    csv = (run_dir / "results.csv").read_text(encoding="utf-8")
    assert "compile_ms" in csv.splitlines()[0]

    # A user's own AOTInductor package (here the one bench just built) runs as given, with trust_code
    (package,) = (tmp_path / "reports" / ".cache" / "artifacts").glob("*/tiny_mlp-*.aoti.pt2")
    shutil.copy(package, tmp_path / "mine.pt2")
    suite = write_suite(
        """
        name: user_aoti
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix:
          model: [{name: mine, aoti: mine.pt2, trust_code: true, input_shape: [64]}]
          load: [aoti]
        include:  # a package runs as built: no other load mode or precision
          - {model: mine, load: eager}
        """,
        name="user.yaml",
    )
    result = run_cli("run", str(suite), "--no-history", "--reports", "user")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / "user").iterdir() if p.is_dir() and not p.name.startswith(".")]
    rows = {r.load: r for r in load_run(run_dir).records}
    assert rows["aoti"].status == "ok" and rows["aoti"].compiled.compiler == "aot_inductor", rows["aoti"].reason
    assert rows["aoti"].model_source.sha256 == hashlib.sha256(package.read_bytes()).hexdigest()
    assert rows["eager"].status == "unsupported" and "runs only with load: aoti" in rows["eager"].reason
