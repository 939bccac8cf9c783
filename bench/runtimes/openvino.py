"""`load: openvino`: OpenVINO Runtime reads an ONNX file and compiles it for the CPU with the
scenario's threads, a latency hint and an explicit inference precision.

Its artifact is prepared from ONNX Runtime's: the fp32 ONNX export (`load: onnxruntime`,
`precision: fp32`), which OpenVINO runs in the precision asked through its precision hint, so its
inputs are that file's fp32 numpy arrays. int8_static is NNCF's post-training quantization of that
fp32 file (QDQ nodes, which OpenVINO runs with int8 kernels), over the scenario's calibration inputs.

Generation reads the with-past ONNX export of the causal LM (bench.runtimes.decoding, shared with ONNX
Runtime) and makes it stateful: the KV cache is the compiled model's state, and bench's greedy loop
feeds it one token per step. It runs in the precision hint as the forward does (fp32, bf16, fp16).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path
from typing import Any

from bench.checks import generation
from bench.errors import Unsupported
from bench.models import sources
from bench.models.artifacts import Artifact, cached_artifact, file_sha256
from bench.runtimes import decoding, quantization
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.model import calibration_feeds, calibration_spec, file_stem
from bench.runtimes.registry import RUNTIMES, register
from bench.suite import calibration
from bench.suite.scenarios import Scenario

OPENVINO_MISSING = "OpenVINO is not installed: pip install .[openvino] (the openvino package)"
NNCF_MISSING = "NNCF is not installed: pip install .[openvino] (OpenVINO's int8_static is NNCF's quantization)"
# The load mode and precision whose artifact OpenVINO reads (the fp32 ONNX export).
PREPARED_FROM = ("onnxruntime", "fp32")
# OpenVINO's names for the precisions it is told to run in, and the CPU capability each needs.
# int8_static: NNCF's QDQ nodes run in int8, the float parts in f32.
_PRECISIONS = {
    "fp32": ("f32", "FP32"),
    "bf16": ("bf16", "BF16"),
    "fp16": ("f16", "FP16"),
    "int8_static": ("f32", "INT8"),
}


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise Unsupported(f"{OPENVINO_MISSING} ({exc})") from exc
    return openvino


def onnx_source(scenario: Scenario) -> Scenario:
    """The scenario whose artifact OpenVINO reads: the same model as an fp32 ONNX export."""
    load, precision = PREPARED_FROM
    return dataclasses.replace(scenario, load=load, precision=precision)


def _nncf_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """OpenVINO's int8_static: NNCF post-training quantization of the fp32 ONNX file (QDQ, which
    OpenVINO runs with int8 kernels), over the scenario's calibration inputs."""
    fp32 = RUNTIMES[PREPARED_FROM[0]].prepare(onnx_source(scenario), cache_dir)
    key = {
        "source_sha256": fp32.sha256,
        "kind": "nncf_int8_static",
        "nncf": quantization.nncf_version(),
        "calibration": calibration.cache_key(calibration_spec(scenario), scenario.data, scenario.source),
        "quantization_code_sha256": file_sha256(Path(quantization.__file__)),
    }
    filename = f"{file_stem(scenario)}-int8_static-nncf.onnx"

    def write(path: Path) -> dict[str, Any]:
        return quantization.nncf_static(fp32.path, path, calibration_feeds(scenario), calibration_spec(scenario))

    artifact = cached_artifact(cache_dir, key, filename, write)
    return dataclasses.replace(artifact, prepare_s=artifact.prepare_s + fp32.prepare_s)


@register
class OpenVINO(Runtime):
    name = "openvino"
    artifact_format = "onnx"
    engine = "openvino"
    takes_numpy = True
    generates = True
    profiler = None
    no_profiler = "bench does not read OpenVINO's per-layer performance counters (PERF_COUNT) yet"

    def unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision == "int8_dynamic":
            return (
                "OpenVINO's int8 comes from NNCF post-training quantization (with calibration data): "
                "precision int8_static; torch's int8_dynamic layers have no ONNX/OpenVINO equivalent"
            )
        if scenario.precision == "int8_static" and not sources.spec_available("nncf"):
            return NNCF_MISSING
        if not sources.spec_available("openvino"):
            return OPENVINO_MISSING
        return None

    def import_libraries(self, scenario: Scenario) -> None:
        _openvino()

    def prepare(self, scenario: Scenario, cache_dir: Path) -> Artifact:
        if scenario.precision == "int8_static":
            return _nncf_artifact(scenario, cache_dir)
        return RUNTIMES[PREPARED_FROM[0]].prepare(onnx_source(scenario), cache_dir)

    def tensor_input(self, scenario: Scenario, tensor: Any) -> Any:
        return tensor.numpy()  # the fp32 ONNX graph's input; the precision is OpenVINO's hint

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        """The ONNX file read and compiled by OpenVINO for the CPU; the record says what OpenVINO ran."""
        core = _openvino().Core()
        compiled = _compile(core, core.read_model(str(artifact_path)), scenario)
        request = compiled.create_infer_request()
        output = compiled.output(0)

        def infer(batch: Any) -> Any:  # named inputs come as a dict by the ONNX file's input names
            return request.infer(batch if isinstance(batch, dict) else {0: batch}, share_outputs=False)[output]

        facts = {
            "compiler": "openvino",
            "version": importlib.metadata.version("openvino"),
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")),
        }
        return infer, {"compiled": facts}

    def generation_unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision == "int8_static":
            return (
                "not measured: OpenVINO's int8_static is NNCF's quantization of the one-call ONNX file over "
                "calibration inputs; bench does not quantize the with-past decoder that generation runs"
            )
        return None

    def prepare_generation(self, scenario: Scenario, cache_dir: Path) -> Artifact:
        return decoding.prepare_with_past(scenario, cache_dir)

    def decoder(
        self, scenario: Scenario, infer: Infer, prompt: dict[str, Any], artifact_path: Path | None
    ) -> generation.Decoder:
        assert artifact_path is not None  # prepare_generation's
        core = _openvino().Core()
        model = core.read_model(str(artifact_path))
        decoding.make_stateful(model, scenario.batch_size)
        request = _compile(core, model, scenario).create_infer_request()
        arrays = {name: value.numpy() for name, value in prompt.items()}
        decode = generation.greedy_decode(decoding.OpenVINOSteps(request), arrays, scenario.generate.new_tokens)  # type: ignore[union-attr]
        method = "bench greedy loop, OpenVINO stateful model (KV cache as its state)"
        # fp32: a decode step reads the file's fp32 weights; under a bf16 or f16 hint the plugin may keep them in
        # half the bytes, which bench cannot see, so the roofline leaves those rows out
        weights = decoding.step_weight_bytes(artifact_path) if scenario.precision == "fp32" else None
        return generation.Decoder(method, decode, weight_bytes=weights)


def _compile(core: Any, model: Any, scenario: Scenario) -> Any:
    """The model compiled for the CPU with the scenario's threads, a latency hint (one stream) and the
    precision set explicitly; Unsupported when the CPU cannot run that precision."""
    hint, capability = _PRECISIONS[scenario.precision]
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if capability not in capabilities:
        raise Unsupported(
            f"OpenVINO's CPU plugin cannot run {scenario.precision} on this CPU: its optimization "
            f"capabilities are {', '.join(capabilities)} (no {capability})"
        )
    config = {
        "INFERENCE_NUM_THREADS": scenario.threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": hint,
    }
    return core.compile_model(model, "CPU", config)
