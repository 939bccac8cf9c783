"""`load: litert`: a .tflite file given as the model source, in LiteRT's interpreter (the optional
`tflite` extra) with the scenario's threads; bench does not convert torch models to TFLite."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import Unsupported
from bench.models import sources
from bench.models.sources import SourceError
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario

LITERT_MISSING = "LiteRT is not installed: pip install .[tflite] (the ai-edge-litert package)"


def litert_interpreter() -> Any:
    """LiteRT's Interpreter class; Unsupported (not a failure) when the optional extra is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise Unsupported(f"{LITERT_MISSING} ({exc})") from exc
    return Interpreter


@register
class LiteRT(Runtime):
    name = "litert"
    artifact_format = "tflite"
    engine = "litert"
    takes_numpy = True
    profiler = None
    no_profiler = "bench has no operator profiler for LiteRT"

    def unsupported(self, scenario: Scenario) -> str | None:
        return (
            "load litert runs .tflite files given as a model source (tflite: FILE); bench does not "
            "convert torch models to TFLite"
        )

    def file_unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision == "bf16":
            return "LiteRT takes numpy input, and numpy has no bfloat16"
        if not sources.spec_available("ai_edge_litert"):
            return LITERT_MISSING
        return None

    def import_libraries(self, scenario: Scenario) -> None:
        litert_interpreter()

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        """A .tflite file in LiteRT's interpreter with the scenario's threads, its input sized to the batch."""
        """A .tflite file in LiteRT's interpreter with the scenario's threads, its input sized to the batch."""
        source = scenario.source
        assert source is not None
        interpreter = litert_interpreter()(model_path=str(artifact_path), num_threads=scenario.threads)
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise SourceError(source, f"has {len(inputs)} inputs; bench feeds the model one tensor")
        first = inputs[0]
        accepts = [int(d) for d in (first["shape_signature"] if len(first["shape_signature"]) else first["shape"])]
        fed = [scenario.batch_size, *scenario.input_shape]
        if len(accepts) != len(fed) or any(a > 0 and a != f for a, f in zip(accepts, fed, strict=False)):
            raise SourceError(
                source,
                f"input '{first['name']}' has shape {accepts} (-1: any size), but the scenario feeds "
                f"{fed} (batch_size {scenario.batch_size}, input_shape {list(scenario.input_shape)})",
                field="input_shape",
            )
        import numpy as np

        dtype = np.dtype(np.float16 if scenario.precision == "fp16" else np.float32)  # what make_batch feeds
        if first["dtype"] != dtype:
            raise SourceError(
                source,
                f"input '{first['name']}' takes {first['dtype'].__name__}, but saved_precision "
                f"{source.saved_precision} feeds {dtype}",
                field="saved_precision",
            )
        index, output = first["index"], interpreter.get_output_details()[0]["index"]
        shape = [tuple(int(d) for d in first["shape"])]

        def resize(wanted: tuple[int, ...]) -> None:
            if wanted != shape[0]:  # only dimensions the file leaves open (checked above) ever change
                interpreter.resize_tensor_input(index, list(wanted))
            interpreter.allocate_tensors()
            shape[0] = wanted

        resize(tuple(fed))  # sized for the scenario's batch while loading, so the first call runs as is

        def infer(batch: Any) -> Any:
            if batch.shape != shape[0]:  # fidelity's inputs; the timed batch keeps the loaded shape
                resize(batch.shape)
            interpreter.set_tensor(index, batch)
            interpreter.invoke()
            return interpreter.get_tensor(output)

        return infer, {"fixed_batch": sources.fixed_batch(accepts)}
