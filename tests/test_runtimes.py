"""The runtime registry (bench.runtimes): every load mode and precision the suite admits is registered,
answers what it cannot run, and nothing outside bench/runtimes/ decides by testing a load mode's name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import bench
from bench import runtimes
from bench.runtimes import openvino
from bench.suite import scenarios as suite
from bench.suite.scenarios import Scenario

PACKAGE = Path(bench.__file__).parent
FORMATS = {"state_dict", "torchscript", "exported_program", "onnx", "aoti_package", "tflite", "executorch_program"}
# `scenario.load == "x"`, `load in ("x", ...)`, `.load in {...}`, `load != "x"`, `load not in (...)`.
LOAD_TEST = re.compile(r"\bload\s*(==|!=)|\bload\s+(not\s+)?in\s*[({]|\.load\s+(not\s+)?in\s")


def _scenario(**changes) -> Scenario:
    return dataclasses.replace(Scenario("tiny_mlp", 1, 1, 1, "fp32", "eager", (64,)), **changes)


def test_the_registry_holds_exactly_the_load_modes_and_precisions_a_suite_admits():
    assert set(runtimes.RUNTIMES) == set(suite.LOADS)
    assert set(runtimes.PRECISIONS) == set(suite.PRECISIONS)
    assert all(runtime.name == name for name, runtime in runtimes.RUNTIMES.items())


@pytest.mark.parametrize("load", suite.LOADS)
@pytest.mark.parametrize("precision", suite.PRECISIONS)
def test_every_runtime_answers_whether_a_pair_runs(load, precision):
    scenario = _scenario(load=load, precision=precision)
    runtime = runtimes.RUNTIMES[load]
    for answer in (runtime.unsupported(scenario), runtimes.unsupported_reason(scenario)):
        assert answer is None or (isinstance(answer, str) and answer)
    assert runtimes.runtime_of(scenario) == runtime.engine
    assert runtimes.artifact_format(scenario) in FORMATS
    assert (runtime.profiler is None) == bool(runtime.no_profiler)


def test_the_precision_is_asked_before_the_load_mode():
    reason = runtimes.unsupported_reason(_scenario(load="mmap", precision="int4_weight_only"))
    assert reason is not None and "bench runs it under eager and compile, not mmap" in reason
    reason = runtimes.unsupported_reason(_scenario(load="export", precision="int8_dynamic"))
    assert reason is not None and reason.startswith("torch.export cannot export int8_dynamic")
    assert runtimes.unsupported_reason(_scenario(load="eager", precision="int8_dynamic")) is None


def test_facts_the_worker_and_profiler_ask_come_from_the_registry():
    generating = sorted(n for n, r in runtimes.RUNTIMES.items() if r.generates)
    assert generating == ["compile", "eager", "mmap", "onnxruntime", "openvino"]
    reason = runtimes.generation_reason(_scenario(load="torchscript"))
    assert reason is not None and "loads that do: eager, compile, mmap, onnxruntime, openvino" in reason
    reason = runtimes.generation_reason(_scenario(load="compile", precision="int8_static"))
    assert reason is not None and "PT2E" in reason
    assert runtimes.generation_reason(_scenario(load="eager", precision="int4_weight_only")) is None
    assert [n for n, r in runtimes.RUNTIMES.items() if r.compiles_on_first_call] == ["compile"]
    assert runtimes.RUNTIMES["onnxruntime"].profiler == "onnxruntime"
    assert runtimes.artifact_format(_scenario(precision="int8_static")) == "exported_program"
    assert runtimes.artifact_format(_scenario(load="compile", precision="int8_static")) == "exported_program"
    assert runtimes.artifact_format(_scenario(load="mmap")) == "state_dict"


def test_openvino_prepares_from_onnx_runtimes_fp32_artifact(monkeypatch, tmp_path):
    asked = []
    onnx = runtimes.RUNTIMES["onnxruntime"]
    monkeypatch.setattr(type(onnx), "prepare", lambda self, scenario, cache_dir: asked.append(scenario) or "artifact")
    scenario = _scenario(load="openvino", precision="bf16")
    assert runtimes.prepare_artifact(scenario, tmp_path) == "artifact"
    assert [(s.load, s.precision) for s in asked] == [openvino.PREPARED_FROM] == [("onnxruntime", "fp32")]
    # its inputs are that file's: fp32 numpy, whatever precision OpenVINO is told to run in
    batch = runtimes.make_batch(scenario)
    assert type(batch).__name__ == "ndarray" and str(batch.dtype) == "float32"


def test_no_module_outside_bench_runtimes_tests_a_load_modes_name():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if "runtimes" not in path.relative_to(PACKAGE).parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LOAD_TEST.search(line)
    ]
    assert not found, "ask bench.runtimes (the registry) instead of testing the load mode:\n" + "\n".join(found)


def test_the_load_test_pattern_finds_what_it_should():
    tests = (
        'if scenario.load == "compile":',
        'x = load in ("eager", "mmap")',
        "if s.load in {'a'}:",
        'if self.scenario.load != "compile":',
        'if load not in ("eager",):',
    )
    for line in tests:
        assert LOAD_TEST.search(line), line
    for line in ("loaded == 1", "overload = 2", "payload in x", "runtime.load(scenario, path)"):
        assert not LOAD_TEST.search(line), line
