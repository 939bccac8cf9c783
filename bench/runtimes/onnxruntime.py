"""`load: onnxruntime`: an ONNX file (bench's export, or the user's) in ONNX Runtime's CPU execution
provider, with the scenario's intra- and inter-op threads. bench exports fp32 and fp16 from torch;
its int8 files are ONNX Runtime's own quantization of the fp32 export (bench.runtimes.formats).

Generation runs the with-past fp32 export of a causal LM (bench.runtimes.decoding) in a session of its
own, bench's greedy loop feeding each step's present KV cache back as the next step's past."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.checks import generation
from bench.errors import Unsupported
from bench.models import sources
from bench.models.artifacts import Artifact
from bench.runtimes import decoding
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario

NO_BF16 = "ONNX Runtime's CPU execution provider has no bfloat16 kernels for these operators"


@register
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    artifact_format = "onnx"
    engine = "onnxruntime"
    takes_numpy = True
    profiler = "onnxruntime"  # the session's own profiler (bench.profile.profiler)
    generates = True

    def unsupported(self, scenario: Scenario) -> str | None:
        return NO_BF16 if scenario.precision == "bf16" else None

    def file_unsupported(self, scenario: Scenario) -> str | None:
        return self.unsupported(scenario)

    def import_libraries(self, scenario: Scenario) -> None:
        import onnxruntime  # noqa: F401

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        session, level = _session(scenario, artifact_path)
        first = session.get_inputs()[0]

        def infer(batch: Any) -> Any:
            return session.run(None, batch if isinstance(batch, dict) else {first.name: batch})[0]

        return infer, {"ort_graph_optimization_level": level, "fixed_batch": sources.fixed_batch(first.shape)}

    def generation_unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision != "fp32":
            return (
                f"not measured: bench exports the with-past decoder (KV cache as inputs and outputs) in fp32 only; "
                f"ONNX Runtime's {scenario.precision} file is the one-call export"
            )
        return None

    def prepare_generation(self, scenario: Scenario, cache_dir: Path) -> Artifact:
        return decoding.prepare_with_past(scenario, cache_dir)

    def decoder(
        self, scenario: Scenario, infer: Infer, prompt: dict[str, Any], artifact_path: Path | None
    ) -> generation.Decoder:
        assert artifact_path is not None  # prepare_generation's
        session, _ = _session(scenario, artifact_path)
        steps = decoding.OrtSteps(session, scenario.batch_size)
        arrays = {name: value.numpy() for name, value in prompt.items()}
        decode = generation.greedy_decode(steps, arrays, scenario.generate.new_tokens)  # type: ignore[union-attr]
        method = "bench greedy loop, ONNX Runtime, KV cache as inputs and outputs"
        weights = decoding.step_weight_bytes(artifact_path)
        return generation.Decoder(method, decode, weight_bytes=weights)


def _session(scenario: Scenario, path: Path) -> tuple[Any, str]:
    """An InferenceSession on the CPU with the scenario's threads, and its graph optimization level."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = scenario.threads
    options.inter_op_num_threads = scenario.interop_threads
    # ORT_ENABLE_ALL adds layout transforms; with fp16 graphs it segfaulted while creating
    # the session (ORT 1.32, small_transformer), so fp16 stops one level below.
    level = "ORT_ENABLE_EXTENDED" if scenario.precision == "fp16" else "ORT_ENABLE_ALL"
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT reports a missing kernel as NOT_IMPLEMENTED at session creation
        if "NOT_IMPLEMENTED" in str(exc) or "Could not find an implementation" in str(exc):
            raise Unsupported(f"ONNX Runtime cannot run this model in {scenario.precision}: {exc}") from exc
        raise
    return session, level
