"""Backends: how each (precision, load mode) pair is prepared on disk and loaded for inference.

The parent calls `prepare_artifact` (once per model, precision and format; cached).
The worker calls `load_model` inside the timed load phase and gets back a callable that
runs one inference on one batch. A pair that cannot run gets a reason, from
`unsupported_reason` before anything starts or as an `Unsupported` exception when only
trying tells; it becomes an `unsupported` row, never a crash or a gap.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import models
from bench.artifacts import Artifact, cached_artifact, file_sha256
from bench.suite import Scenario

# Layer types torch's dynamic quantization replaces with int8 versions.
DYNAMIC_QUANT_LAYERS = ("Linear", "LSTM", "GRU")
_FORMATS = {
    "eager": "state_dict",
    "mmap": "state_dict",
    "torchscript": "torchscript",
    "export": "exported_program",
    "onnxruntime": "onnx",
}
_SUFFIXES = {"state_dict": ".pt", "torchscript": ".ts.pt", "exported_program": ".pt2", "onnx": ".onnx"}
# Nodes ONNX Runtime's dynamic quantizer puts where it replaced a float MatMul/Conv/Gemm.
_ORT_INT8_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


class Unsupported(Exception):
    """This scenario cannot run as asked; the message says why, for the row's reason."""


def import_libraries(scenario: Scenario) -> None:
    """Import what loading will need, so that `load_s` measures loading, not Python imports
    (torchvision alone takes ~2 s to import, longer than loading resnet18)."""
    if scenario.load == "onnxruntime":
        import onnxruntime  # noqa: F401
    if scenario.model not in models.BUILTIN:
        import torchvision  # noqa: F401


def runtime_of(scenario: Scenario) -> str:
    return "onnxruntime" if scenario.load == "onnxruntime" else "torch"


def artifact_format(scenario: Scenario) -> str:
    return _FORMATS[scenario.load]


def unsupported_reason(scenario: Scenario) -> str | None:
    """Reasons known without trying."""
    if scenario.load == "mmap" and scenario.precision == "int8_dynamic":
        return (
            "mmap cannot load int8_dynamic: dynamically quantized layers keep their weights in "
            "packed int8 objects that are rebuilt on load, so there is no tensor to map from the file"
        )
    if scenario.load == "export" and scenario.precision == "int8_dynamic":
        return (
            "torch.export cannot export int8_dynamic: the packed weights of dynamically quantized "
            "Linear layers are not exportable objects (torch 2.14: LinearPackedParamsBase has no __obj_flatten__)"
        )
    if scenario.load == "onnxruntime" and scenario.precision == "bf16":
        return "ONNX Runtime's CPU execution provider has no bfloat16 kernels for these operators"
    return None


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def quantize_dynamic(model: Any) -> tuple[Any, int]:
    """torch's dynamic int8 quantization, and how many layers it replaced.

    The one call site of the deprecated torch.ao API, so moving to its successor is one change.
    """
    import torch
    from torch import nn

    targets = {getattr(nn, name) for name in DYNAMIC_QUANT_LAYERS}
    with warnings.catch_warnings():
        # Deprecated in favour of torchao, which is not a dependency here; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions", category=UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, targets, dtype=torch.qint8)
    count = sum(1 for m in quantized.modules() if type(m).__module__.startswith("torch.ao.nn.quantized.dynamic"))
    if count == 0:
        raise Unsupported(
            f"int8_dynamic quantizes {'/'.join(DYNAMIC_QUANT_LAYERS)} layers and {type(model).__name__} has none"
        )
    return quantized, count


def convert(model: Any, precision: str) -> tuple[Any, dict[str, Any]]:
    """The fp32 model in `precision`, with facts about the conversion for the record."""
    if precision == "int8_dynamic":
        quantized, count = quantize_dynamic(model)
        return quantized, {"quantized_layers": count}
    if precision in ("fp16", "bf16"):
        return model.to(torch_dtype(precision)), {}
    return model, {}


def make_batch(scenario: Scenario, batch_size: int | None = None) -> Any:
    """The seeded input batch, in the dtype and container the scenario's runtime takes."""
    batch = models.make_input(scenario.input_shape, batch_size or scenario.batch_size, scenario.seed)
    return to_runtime_input(scenario, batch)


def to_runtime_input(scenario: Scenario, batch: Any) -> Any:
    if scenario.precision in ("fp16", "bf16"):
        batch = batch.to(torch_dtype(scenario.precision))
    return batch.numpy() if runtime_of(scenario) == "onnxruntime" else batch


def prepare_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """Write (or reuse) the file this scenario loads. Runs in the parent; imports torch."""
    import torch

    fmt = artifact_format(scenario)
    key = {**model_key(scenario), "precision": scenario.precision, "format": fmt}
    if fmt == "onnx":
        import onnxruntime

        key["onnxruntime"] = onnxruntime.__version__
    elif fmt in ("torchscript", "exported_program"):
        key["input_shape"] = list(scenario.input_shape)  # tracing specialises on the example's shape

    def write(path: Path) -> dict[str, Any]:
        if fmt == "onnx":
            return _write_onnx(scenario, path)
        model, facts = convert(models.build_model(scenario.model, scenario.seed), scenario.precision)
        if fmt == "state_dict":
            torch.save(model.state_dict(), path)
        elif fmt == "exported_program":
            _write_exported_program(model, make_batch(scenario, batch_size=2), path)
        else:
            _write_torchscript(model, make_batch(scenario, batch_size=1), path)
        return facts

    return cached_artifact(cache_dir, key, f"{scenario.model}-{scenario.precision}{_SUFFIXES[fmt]}", write)


def _write_torchscript(model: Any, example: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # Tracing warns about data-dependent Python control flow; classification models have none
        # that changes with the input values, and the worker checks fidelity against fp32 eager.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example)
        frozen = torch.jit.freeze(traced)
    torch.jit.save(frozen, str(path))


def _write_exported_program(model: Any, example: Any, path: Path) -> None:
    """torch.export with a dynamic batch axis (the example has 2 rows so batch is not specialised)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.inference_mode(False), torch.no_grad():
        exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(exported, str(path))


def model_key(scenario: Scenario) -> dict[str, Any]:
    """What decides a model's weights and graph: name, seed, and the code that builds it."""
    import torch

    key = {"model": scenario.model, "seed": scenario.seed, "torch": torch.__version__}
    if scenario.model in models.BUILTIN:
        key["models_source_sha256"] = file_sha256(Path(models.__file__))
    else:
        key["torchvision"] = importlib.metadata.version("torchvision")
    return key


def _write_onnx(scenario: Scenario, path: Path) -> dict[str, Any]:
    """Export fp32 (or fp16) with a dynamic batch axis; int8 is ONNX Runtime's dynamic quantization."""
    import torch

    fp32 = models.build_model(scenario.model, scenario.seed)
    export_precision = "fp16" if scenario.precision == "fp16" else "fp32"
    model, _ = convert(fp32, export_precision)
    example = models.make_input(scenario.input_shape, 1, scenario.seed).to(torch_dtype(export_precision))
    target = path if scenario.precision != "int8_dynamic" else path.with_suffix(".fp32.onnx")
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated but handles every torchvision classifier
        # with a dynamic batch axis; the dynamo exporter needs per-model dynamic shape specs.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (example,),
            str(target),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    if scenario.precision == "int8_dynamic":
        from onnxruntime.quantization import QuantType
        from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

        try:
            ort_quantize_dynamic(str(target), str(path), weight_type=QuantType.QInt8)
        finally:
            target.unlink(missing_ok=True)
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return {"quantized_layers": sum(1 for node in graph.node if node.op_type in _ORT_INT8_OPS)}
    return {}


def load_model(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """From file to a ready `infer(batch)`, plus facts for the record. This whole call is `load_s`."""
    if scenario.load == "onnxruntime":
        return _load_onnxruntime(scenario, artifact_path)
    import torch

    if scenario.load == "torchscript":
        return torch.jit.load(str(artifact_path), map_location="cpu"), {}
    if scenario.load == "export":
        return torch.export.load(str(artifact_path)).module(), {}
    if scenario.load == "mmap":
        # Build on the meta device (no memory, no init) and adopt the mapped tensors as they are.
        model = models.build_model(scenario.model, scenario.seed, device="meta")
        state = torch.load(artifact_path, map_location="cpu", weights_only=True, mmap=True)
        model.load_state_dict(state, assign=True)
        return model.eval(), {}
    model, facts = convert(models.build_model(scenario.model, scenario.seed), scenario.precision)
    state = torch.load(artifact_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model, facts


def _load_onnxruntime(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = scenario.threads
    options.inter_op_num_threads = scenario.interop_threads
    # ORT_ENABLE_ALL adds layout transforms; with fp16 graphs it segfaulted while creating
    # the session (ORT 1.32, small_transformer), so fp16 stops one level below.
    level = "ORT_ENABLE_EXTENDED" if scenario.precision == "fp16" else "ORT_ENABLE_ALL"
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    try:
        session = ort.InferenceSession(str(artifact_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT reports a missing kernel as NOT_IMPLEMENTED at session creation
        if "NOT_IMPLEMENTED" in str(exc) or "Could not find an implementation" in str(exc):
            raise Unsupported(f"ONNX Runtime cannot run this model in {scenario.precision}: {exc}") from exc
        raise
    input_name = session.get_inputs()[0].name

    def infer(batch: Any) -> Any:
        return session.run(None, {input_name: batch})[0]

    return infer, {"ort_graph_optimization_level": level}


def reference_outputs(scenario: Scenario, cache_dir: Path, inputs: int) -> Artifact:
    """fp32 eager outputs on `inputs` seeded samples: what every precision's fidelity is measured against."""
    import torch

    key = {**model_key(scenario), "input_shape": list(scenario.input_shape), "inputs": inputs,
           "kind": "reference_outputs"}  # fmt: skip

    def write(path: Path) -> None:
        model = models.build_model(scenario.model, scenario.seed)
        with torch.inference_mode():
            output = model(fidelity_inputs(scenario.input_shape, scenario.seed, inputs))
        torch.save(output.float(), path)

    return cached_artifact(cache_dir, key, f"{scenario.model}-reference.pt", write)


def fidelity_inputs(shape: tuple[int, ...], seed: int, inputs: int) -> Any:
    """Inputs for fidelity, seeded apart from the timed batch."""
    return models.make_input(shape, inputs, seed + 1000)
