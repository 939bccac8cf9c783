"""Backends: how each (precision, load mode) pair is prepared on disk and loaded for inference.

The parent calls `prepare_artifact` (once per model, precision and format; cached).
The worker calls `load_model` inside the timed load phase and gets back a callable that
runs one inference on one batch. A pair that cannot run gets a reason, from
`unsupported_reason` before anything starts or as an `Unsupported` exception when only
trying tells; it becomes an `unsupported` row, never a crash or a gap.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import calibration, compiled, hf, hygiene, inputs, models, pruning, quantization, sources
from bench.artifacts import Artifact, cached_artifact, file_sha256
from bench.environment import read_cpuinfo
from bench.errors import Unsupported
from bench.fidelity import FIDELITY_INPUTS, TOKEN_FIDELITY_INPUTS
from bench.nospace import write_via_memory
from bench.sources import FORMAT_NAMES, ModelSource, SourceError
from bench.suite import Scenario

# Layer types torch's dynamic quantization replaces with int8 versions.
DYNAMIC_QUANT_LAYERS = ("Linear", "LSTM", "GRU")
_FORMATS = {
    "eager": "state_dict",
    "mmap": "state_dict",
    "torchscript": "torchscript",
    "export": "exported_program",
    "onnxruntime": "onnx",
    "litert": "tflite",
    **compiled.FORMATS,
}
# every other load mode runs in torch
_RUNTIMES = {"onnxruntime": "onnxruntime", "litert": "litert", "openvino": "openvino"}
_SUFFIXES = {"state_dict": ".pt", "torchscript": ".ts.pt", "exported_program": ".pt2", "onnx": ".onnx",
             "aoti_package": compiled.AOTI_SUFFIX}  # fmt: skip
LITERT_MISSING = "LiteRT is not installed: pip install .[tflite] (the ai-edge-litert package)"


def import_libraries(scenario: Scenario) -> None:
    """Import what loading will need, so that `load_s` measures loading, not Python imports
    (torchvision alone takes ~2 s to import, longer than loading resnet18)."""
    if scenario.load == "onnxruntime":
        import onnxruntime  # noqa: F401
    if scenario.load == "litert":
        _litert_interpreter()
    if scenario.precision in quantization.TORCHAO_PRECISIONS and runtime_of(scenario) == "torch":
        quantization.import_torchao()  # PT2E's quantize ops and the weight-only tensor class must exist to load
    compiled.import_libraries(scenario)
    source = scenario.source
    architecture = source.architecture if source else scenario.model
    if source is not None and source.kind == "hf":
        hf.import_transformers()
    elif architecture and sources.is_factory(architecture):
        sources.import_factory_module(source)  # the user's module, and whatever it imports
    elif architecture and architecture not in models.BUILTIN:
        import torchvision  # noqa: F401


def runtime_of(scenario: Scenario) -> str:
    return _RUNTIMES.get(scenario.load, "torch")


def artifact_format(scenario: Scenario) -> str:
    if scenario.precision == "int8_static" and scenario.load in ("eager", "compile"):
        return "exported_program"  # the converted PT2E program: eager runs it as is, compile through Inductor
    return _FORMATS[scenario.load]


def unsupported_reason(scenario: Scenario) -> str | None:
    """Reasons known without trying."""
    if (reason := hygiene.unsupported_reason(scenario)) is not None:
        return reason
    source = scenario.source
    if source is not None and source.kind == "hf" and not hf.available():
        return hf.MISSING
    if source is not None and source.compiled and scenario.variant != pruning.DENSE:
        return (
            f"variant {scenario.variant} prunes the model's weights, and a {FORMAT_NAMES[source.kind]} file "
            "has no module to prune; give the checkpoint and its architecture instead"
        )
    if source is not None and source.compiled:
        return _compiled_file_reason(source, scenario)
    if (reason := _quantized_reason(scenario)) is not None:
        return reason
    if scenario.load in compiled.LOADS:
        return compiled.unsupported_reason(scenario)
    if scenario.load == "litert":
        return (
            "load litert runs .tflite files given as a model source (tflite: FILE); bench does not "
            "convert torch models to TFLite"
        )
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


def _quantized_reason(scenario: Scenario) -> str | None:
    """Load modes the int8_static and weight-only artifacts cannot be loaded with."""
    if scenario.precision == "int8_static" and scenario.load in ("mmap", "torchscript"):
        return (
            f"load {scenario.load} cannot run int8_static: torch's static int8 is a PT2E (torch.export) program, "
            "not a state_dict or TorchScript; it runs under eager, export, compile and aoti (and onnxruntime's QDQ)"
        )
    if scenario.precision in quantization.WEIGHT_ONLY and scenario.load not in ("eager", "compile"):
        bits = "int4" if scenario.precision == "int4_weight_only" else "int8"
        return (
            f"{scenario.precision} is torchao's weight-only {bits} of Linear layers (tensor subclasses in the "
            f"state_dict); bench runs it under eager and compile, not {scenario.load}"
        )
    return None


def _compiled_file_reason(source: ModelSource, scenario: Scenario) -> str | None:
    """A compiled file runs as saved, with its own load mode; ONNX fp32 can also be quantized to int8."""
    what = FORMAT_NAMES[source.kind]
    if scenario.load != source.native_load:
        return (
            f"a {what} file given as a model source runs only with load: {source.native_load} "
            "(bench does not convert it to other formats)"
        )
    onnx_int8 = source.kind == "onnx" and source.saved_precision == "fp32" and scenario.precision == "int8_dynamic"
    if scenario.precision != source.saved_precision and not onnx_int8:
        also = " or, from an fp32 file, int8_dynamic (ONNX Runtime's quantizer)" if source.kind == "onnx" else ""
        return (
            f"a {what} file runs in the precision it was saved in (saved_precision: {source.saved_precision}){also}; "
            f"for {scenario.precision}, give the checkpoint and its architecture instead"
        )
    if scenario.load == "onnxruntime" and scenario.precision == "bf16":
        return "ONNX Runtime's CPU execution provider has no bfloat16 kernels for these operators"
    if scenario.load == "litert":
        if scenario.precision == "bf16":
            return "LiteRT takes numpy input, and numpy has no bfloat16"
        if not sources.spec_available("ai_edge_litert"):
            return LITERT_MISSING
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
    if precision == "int8_weight_only":
        return quantization.weight_only_int8(model)
    if precision == "int4_weight_only":
        return quantization.weight_only_int4(model)
    if precision in ("fp16", "bf16"):
        return model.to(torch_dtype(precision)), {}
    return model, {}


def make_batch(scenario: Scenario, batch_size: int | None = None) -> Any:
    """The seeded input batch, in the dtype and container the scenario's runtime takes."""
    size = batch_size or scenario.batch_size
    if named_inputs(scenario):
        return to_runtime_input(scenario, sample_inputs(scenario, size, scenario.seed, skip=0))
    batch = models.make_input(scenario.input_shape, size, scenario.seed)
    return to_runtime_input(scenario, batch)


def named_inputs(scenario: Scenario) -> tuple[inputs.InputSpec, ...]:
    """The model's named inputs (bench.inputs); empty for a model fed one float tensor."""
    return scenario.source.inputs if scenario.source is not None else ()


def sample_inputs(scenario: Scenario, count: int, seed: int, skip: int) -> dict[str, Any]:
    """`count` samples of named inputs: with `text:`, sentences from the `skip`-th on, tokenized (the
    timed batch starts at the first, fidelity's after it); else drawn with `seed` as the specs say."""
    source = scenario.source
    assert source is not None
    if source.text:
        return hf.tokenize(source, source.inputs, count, scenario.seq_len or 0, skip)
    return inputs.make_inputs(source.inputs, count, scenario.seq_len, seed)


def to_runtime_input(scenario: Scenario, batch: Any) -> Any:
    if isinstance(batch, dict):  # named inputs: only float ones take the precision's dtype
        as_is = runtime_of(scenario) == "torch"
        return {name: to_runtime_input(scenario, value) if value.is_floating_point() else
                (value if as_is else value.numpy()) for name, value in batch.items()}  # fmt: skip
    if scenario.load == "openvino":  # the fp32 ONNX graph's input; the precision is OpenVINO's hint
        return batch.numpy()
    if scenario.precision in ("fp16", "bf16"):
        batch = batch.to(torch_dtype(scenario.precision))
    return batch if runtime_of(scenario) == "torch" else batch.numpy()


def inputs_record(scenario: Scenario) -> dict[str, Any]:
    """The record's seq_len, named_inputs and task (all null for a model fed one float tensor)."""
    specs = named_inputs(scenario)
    source = scenario.source
    return {
        "seq_len": scenario.seq_len,
        "named_inputs": [{"name": s.name, "shape": list(s.sample_shape(scenario.seq_len)), "dtype": s.dtype}
                         for s in specs] or None,  # fmt: skip
        "task": source.task if source else None,
    }


def output_of(scenario: Scenario) -> str | int | None:
    """What the timed call returns: the entry's `output:`, else the task's usual tensor (hf), else the first."""
    source = scenario.source
    if source is None or source.output is not None:
        return source.output if source else None
    return hf.TASK_OUTPUTS[source.task] if source.kind == "hf" and source.task else None


def build_fp32(scenario: Scenario, device: Any = None, *, with_weights: bool = True, as_given: bool = False) -> Any:
    """The scenario's model in fp32 eval mode (`as_given`: in the mode its factory gave it): seeded random
    weights, then the source's own if it has any."""
    source = scenario.source
    if source is not None and source.kind == "hf":
        model = hf.build(source, scenario.seed, device, with_weights=with_weights)
    else:
        model = sources.build_module(
            scenario.model, source, scenario.seed, device, with_weights=with_weights, as_given=as_given
        )
    if source is not None and source.inputs:
        problem = inputs.unaccepted(model, source.inputs, named_only=source.kind == "hf")
        if problem:
            raise SourceError(source, problem, field="inputs")
    return model


def build_variant(scenario: Scenario) -> tuple[Any, dict[str, Any]]:
    """The fp32 model pruned as the scenario's variant says, and the pruning facts for the record."""
    model = build_fp32(scenario)
    if scenario.variant == pruning.DENSE:
        return model, {}
    try:
        model, facts = pruning.apply_variant(model, pruning.parse_variant(scenario.variant))
    except ValueError as exc:
        raise Unsupported(f"variant {scenario.variant}: {exc}") from None
    return model.eval(), {"pruning": facts}


def _fit_variant(scenario: Scenario, model: Any, state: dict[str, Any]) -> Any:
    """A shrunk variant's layers are smaller than the architecture's: resize them to the file's."""
    if pruning.parse_variant(scenario.variant).changes_shapes:
        return pruning.fit_to_state_dict(model, state)
    return model


def source_record(scenario: Scenario) -> dict[str, Any] | None:
    """The record's `model_source`: kind, path, size, sha256 and architecture; None for a model name.

    A file that has vanished since the suite was read gives its path with null size and hash
    (the row's reason says what went wrong)."""
    source = scenario.source
    if source is None:
        return None
    info = {"kind": source.kind, "path": source.path, "bytes": None, "sha256": None,
            "architecture": source.architecture}  # fmt: skip
    try:
        facts = sources.source_facts(source)
    except SourceError:
        return info
    return {**info, "path": facts.path, "bytes": facts.bytes, "sha256": facts.sha256}


def prepare_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """Write (or reuse) the file this scenario loads. Runs in the parent; imports torch."""
    import torch

    if scenario.source is not None and scenario.source.compiled:
        return _given_file_artifact(scenario, cache_dir)
    if scenario.load == "openvino" and scenario.precision == "int8_static":
        return _nncf_artifact(scenario, cache_dir)
    if scenario.load == "openvino":  # OpenVINO reads the fp32 ONNX file and runs it in the precision asked
        scenario = dataclasses.replace(scenario, load="onnxruntime", precision="fp32")
    fmt = artifact_format(scenario)
    key = {**model_key(scenario), "precision": scenario.precision, "format": fmt}
    if fmt == "onnx":
        import onnxruntime

        key["onnxruntime"] = onnxruntime.__version__
        if scenario.precision in ("int8_dynamic", "int8_static"):
            key["ort_reduce_range"] = ort_reduce_range()
    if scenario.precision == "int8_static":
        key["calibration"] = calibration.cache_key(calibration_spec(scenario), scenario.data, scenario.source)
        key["quantization_code_sha256"] = file_sha256(Path(quantization.__file__))
    if fmt in ("onnx", "torchscript", "exported_program", "aoti_package"):
        # the export fixes every dimension but the batch; tracing specialises on the example's shape
        key["input_shape"] = list(scenario.input_shape)
        if named_inputs(scenario):
            key["inputs"] = [spec.to_dict() for spec in named_inputs(scenario)]
            key["output"] = output_of(scenario)

    def write(path: Path) -> dict[str, Any]:
        if fmt == "onnx":
            return _write_onnx(scenario, path)
        pruned, pruning_facts = build_variant(scenario)
        if scenario.precision == "int8_static":
            return {**_write_pt2e_static(scenario, pruned, fmt, path), **pruning_facts}
        model, facts = convert(pruned, scenario.precision)
        facts.update(pruning_facts)
        if fmt == "state_dict":
            write_via_memory(path, lambda f: torch.save(state_with_buffers(model), f))
        elif named_inputs(scenario):
            module = inputs.positional(model, named_inputs(scenario), output_of(scenario))
            example = tuple(make_batch(scenario, batch_size=2).values())  # 2 rows: batch is not specialised
            if fmt == "exported_program":
                _save_exported(_export(module, example, _seq_axes(scenario)), path)
            elif fmt == "aoti_package":
                facts.update(compiled.write_aoti_package(_export(module, example, _seq_axes(scenario)), path))
            else:
                _write_torchscript(module, example, path)
        elif fmt == "exported_program":
            _save_exported(_export(model, make_batch(scenario, batch_size=2)), path)
        elif fmt == "aoti_package":
            facts.update(compiled.write_aoti_package(_export(model, make_batch(scenario, batch_size=2)), path))
        else:
            _write_torchscript(model, make_batch(scenario, batch_size=1), path)
        return facts

    variant = "" if scenario.variant == pruning.DENSE else f"-{scenario.variant}"
    filename = f"{_file_stem(scenario)}{variant}-{scenario.precision}{_SUFFIXES[fmt]}"
    return cached_artifact(cache_dir, key, filename, write)


def calibration_spec(scenario: Scenario) -> calibration.CalibrationSpec:
    return scenario.calibration or calibration.CalibrationSpec()


def _calibration_batches(scenario: Scenario) -> list[Any]:
    """The scenario's calibration inputs, fp32 batches as the torch model takes them."""
    spec = calibration_spec(scenario)
    return calibration.calibration_batches(
        spec, scenario.input_shape, scenario.data, scenario.source, scenario.seq_len, scenario.seed
    )


def _calibration_feeds(scenario: Scenario) -> list[dict[str, Any]]:
    """The calibration inputs as an ONNX model takes them: numpy arrays by input name."""
    batches = [to_runtime_input(scenario, b) for b in _calibration_batches(scenario)]
    return [b if isinstance(b, dict) else {"input": b} for b in batches]


def _nncf_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """OpenVINO's int8_static: NNCF post-training quantization of the fp32 ONNX file (QDQ, which
    OpenVINO runs with int8 kernels), over the scenario's calibration inputs."""
    fp32 = prepare_artifact(dataclasses.replace(scenario, load="onnxruntime", precision="fp32"), cache_dir)
    key = {"source_sha256": fp32.sha256, "kind": "nncf_int8_static", "nncf": quantization.nncf_version(),
           "calibration": calibration.cache_key(calibration_spec(scenario), scenario.data, scenario.source),
           "quantization_code_sha256": file_sha256(Path(quantization.__file__))}  # fmt: skip
    filename = f"{_file_stem(scenario)}-int8_static-nncf.onnx"

    def write(path: Path) -> dict[str, Any]:
        return quantization.nncf_static(fp32.path, path, _calibration_feeds(scenario), calibration_spec(scenario))

    artifact = cached_artifact(cache_dir, key, filename, write)
    return dataclasses.replace(artifact, prepare_s=artifact.prepare_s + fp32.prepare_s)


def _write_pt2e_static(scenario: Scenario, model: Any, fmt: str, path: Path) -> dict[str, Any]:
    """PT2E static int8 of the fp32 model, saved as an exported program or compiled by AOTInductor."""
    if named_inputs(scenario):  # exported as inputs.positional, called with the tensors in the inputs' order
        model = inputs.positional(model, named_inputs(scenario), output_of(scenario))
        args, dynamic = _export_args(tuple(make_batch(scenario, batch_size=2).values()), _seq_axes(scenario))
        batches = [tuple(b.values()) for b in _calibration_batches(scenario)]
    else:
        args, dynamic = _export_args(make_batch(scenario, batch_size=2))
        batches = [(b,) for b in _calibration_batches(scenario)]
    program, facts = quantization.pt2e_static(model, args, dynamic, batches, calibration_spec(scenario))
    if fmt == "aoti_package":
        facts.update(compiled.write_aoti_package(program, path))
    else:
        _save_exported(program, path)
    return facts


def _file_stem(scenario: Scenario) -> str:
    """An artifact's file name: the model's name, or a source's content (its cache entry is found by content)."""
    source = scenario.source
    return f"{source.kind}-{sources.source_facts(source).sha256[:16]}" if source else scenario.model


_BUFFERS = "__bench_buffers__."  # non-persistent buffers, kept in the state file under this prefix


def state_with_buffers(model: Any) -> dict[str, Any]:
    """The state_dict plus the buffers it leaves out (persistent=False, e.g. transformers' position
    ids): a model built on the meta device for mmap has no other way to get them."""
    state = model.state_dict()  # itself: its _metadata tells quantized layers how to load
    for name, buffer in model.named_buffers():
        if name not in state and buffer is not None:
            state[_BUFFERS + name] = buffer
    return state


def _load_state(model: Any, state: dict[str, Any], *, assign: bool = False) -> None:
    """load_state_dict, then the non-persistent buffers `state_with_buffers` kept."""
    buffers = {k[len(_BUFFERS) :]: state.pop(k) for k in [k for k in state if k.startswith(_BUFFERS)]}
    model.load_state_dict(state, assign=assign)
    for name, value in buffers.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        owner.register_buffer(leaf, value, persistent=False)


def _seq_axes(scenario: Scenario) -> list[int | None]:
    """Per named input, the axis (batch included) that is its `seq` dimension, or None."""
    return [spec.shape.index(inputs.SEQ) + 1 if inputs.SEQ in spec.shape else None for spec in named_inputs(scenario)]


def _write_torchscript(model: Any, example: Any, path: Path) -> None:
    import torch

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # Tracing warns about data-dependent Python control flow; classification models have none
        # that changes with the input values, and the worker checks fidelity against fp32 eager.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # A model with named inputs is traced as inputs.positional: its forward(*tensors) calls the
        # model with them as keywords, so the example is those tensors in the inputs' order.
        traced = torch.jit.trace(model, example if isinstance(example, tuple) else (example,))
        frozen = torch.jit.freeze(traced)
    write_via_memory(path, lambda f: torch.jit.save(frozen, f))  # torch's file writer aborts on a full disk


def _save_exported(exported: Any, path: Path) -> None:
    import torch

    write_via_memory(path, lambda f: torch.export.save(exported, f))  # torch's file writer aborts on a full disk


def _export(model: Any, example: Any, seq_axes: list[int | None] | None = None) -> Any:
    """torch.export with a dynamic batch axis (the example has 2 rows so batch is not specialised);
    named inputs (a tuple example) also get their seq axis dynamic where the model allows it."""
    import torch

    args, dynamic = _export_args(example, seq_axes)
    with torch.inference_mode(False), torch.no_grad():
        return torch.export.export(model, args, dynamic_shapes=dynamic)


def _export_args(example: Any, seq_axes: list[int | None] | None = None) -> tuple[tuple[Any, ...], Any]:
    """torch.export's args and dynamic shapes for `example`: the batch axis dynamic, and named
    inputs' seq axes too where the model allows it."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=65536)
    if isinstance(example, tuple):  # inputs.positional's forward(*tensors): one argument holding them all
        shapes = tuple({0: batch, **({axis: torch.export.Dim.AUTO} if axis else {})} for axis in seq_axes or ())
        return example, (shapes,)
    return (example,), ({0: batch},)


def _given_file_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """A compiled file given as the source is loaded where it is, once checked; only ONNX fp32 to
    int8_dynamic makes a new file, cached by the given file's sha256 (not its path)."""
    source = scenario.source
    assert source is not None
    reason = _compiled_file_reason(source, scenario)
    if reason is not None:
        raise Unsupported(reason)
    started = time.perf_counter()
    facts = sources.check_file(source)
    if source.kind == "exported_program":
        sources.check_exported_program(source)
    found: dict[str, Any] = {}
    if source.kind == "onnx":
        info = _check_onnx(scenario, facts.sha256)
        found["quantized_layers"] = info.int8_nodes or None
    if scenario.precision == source.saved_precision:
        return Artifact(Path(facts.path), facts.sha256, facts.bytes, time.perf_counter() - started, False, found)
    import onnxruntime

    key = {"source_sha256": facts.sha256, "kind": "onnx", "precision": scenario.precision,
           "onnxruntime": onnxruntime.__version__, "ort_reduce_range": ort_reduce_range()}  # fmt: skip
    filename = f"{_file_stem(scenario)}-{scenario.precision}.onnx"
    return cached_artifact(cache_dir, key, filename, lambda path: _ort_quantize(Path(facts.path), path))


def _check_onnx(scenario: Scenario, sha256: str) -> sources.OnnxInput:
    """A given ONNX file's input(s) against what the scenario feeds; its first input."""
    source = scenario.source
    assert source is not None
    if source.inputs:
        return sources.check_onnx_named_inputs(source, sha256, scenario.batch_size, scenario.seq_len)
    return sources.check_onnx_input(source, sha256, scenario.batch_size, scenario.input_shape)


def model_key(scenario: Scenario) -> dict[str, Any]:
    """What decides a model's weights and graph: name (or the source's content), seed, and the code that builds it."""
    import torch

    source = scenario.source
    architecture = source.architecture if source else scenario.model
    key: dict[str, Any] = {"model": scenario.model, "seed": scenario.seed, "torch": torch.__version__}
    if source is not None:  # by content, never by name or path: a renamed or moved file is the same model
        key = {"source": source.kind, "architecture": architecture, "kwargs": source.kwargs,
               "seed": scenario.seed, "torch": torch.__version__,
               "sources_code_sha256": file_sha256(Path(sources.__file__)),
               "source_sha256": sources.source_facts(source).sha256}  # fmt: skip
        if architecture and sources.is_factory(architecture):
            key["factory_module_sha256"] = sources.factory_file(source).sha256
        if source.kind == "hf":
            key.update(task=source.task, random_weights=source.random_weights,
                       hf_code_sha256=file_sha256(Path(hf.__file__)),
                       transformers=importlib.metadata.version("transformers"))  # fmt: skip
    if scenario.variant != pruning.DENSE:
        key["variant"] = scenario.variant
        key["pruning_code_sha256"] = file_sha256(Path(pruning.__file__))
    if architecture in models.BUILTIN:
        key["models_source_sha256"] = file_sha256(Path(models.__file__))
    elif architecture and not sources.is_factory(architecture):
        key["torchvision"] = importlib.metadata.version("torchvision")
    return key


def _write_onnx(scenario: Scenario, path: Path) -> dict[str, Any]:
    """Export fp32 (or fp16) with a dynamic batch axis; int8 is ONNX Runtime's dynamic quantization."""
    import torch

    fp32, facts = build_variant(scenario)
    export_precision = "fp16" if scenario.precision == "fp16" else "fp32"
    model, _ = convert(fp32, export_precision)
    if named_inputs(scenario):  # one ONNX input per named input, batch and seq axes dynamic
        names = [spec.name for spec in named_inputs(scenario)]
        model = inputs.positional(model, named_inputs(scenario), output_of(scenario))
        as_exported = dataclasses.replace(scenario, precision=export_precision, load="eager")  # torch tensors
        example = tuple(to_runtime_input(as_exported, sample_inputs(scenario, 2, scenario.seed, skip=0)).values())
        axes = {name: {0: "batch", **({axis: "seq"} if axis else {})}
                for name, axis in zip(names, _seq_axes(scenario), strict=True)}  # fmt: skip
    else:
        names = ["input"]
        example = (models.make_input(scenario.input_shape, 1, scenario.seed).to(torch_dtype(export_precision)),)
        axes = {"input": {0: "batch"}}
    int8 = scenario.precision in ("int8_dynamic", "int8_static")
    target = path.with_suffix(".fp32.onnx") if int8 else path
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated but handles every torchvision classifier
        # with a dynamic batch axis; the dynamo exporter needs per-model dynamic shape specs.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            example,
            str(target),
            dynamo=False,
            input_names=names,
            output_names=["output"],
            dynamic_axes={**axes, "output": {0: "batch"}},
        )
    if int8:
        feeds = None
        if scenario.precision == "int8_static":  # the same calibration inputs as torch's, fed by input name
            feeds = _calibration_feeds(scenario)
        try:
            return {**facts, **_ort_quantize(target, path, feeds, calibration_spec(scenario))}
        finally:
            target.unlink(missing_ok=True)
    return facts


@functools.cache
def ort_reduce_range() -> bool:
    """Whether ONNX Runtime's int8 weights should use 7 bits here: on an x86 CPU without VNNI.

    Without VNNI, ORT's x86 u8s8 kernels (pmaddubsw) add pairs of products in 16 bits, which
    saturate with full 8-bit weights; ORT's quantization guide advises reduce_range there. On
    an AVX2-only AMD EPYC, tiny_mlp's int8 outputs had cosine 0.91 to fp32 with 8-bit weights
    and 0.9996 with 7-bit ones."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    isa = read_cpuinfo()["isa"]
    return not any(isa.get(flag) for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _ort_quantize(source_path: Path, path: Path, feeds: list[dict[str, Any]] | None = None,
                  spec: calibration.CalibrationSpec | None = None) -> dict[str, Any]:  # fmt: skip
    """ONNX Runtime's dynamic quantization (QInt8 weights) of an fp32 ONNX file, and its integer nodes;
    with calibration `feeds`, its static QDQ quantization instead (bench.quantization.ort_static).

    The file first goes through ORT's quantization pre-processing (shape inference and graph
    optimisation), as ORT's quantization guide asks; weights use 7 bits on x86 without VNNI
    (`ort_reduce_range`)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(path.name + ".pre.onnx")
    try:
        quant_pre_process(str(source_path), str(prepared))
        to_quantize = prepared
    except Exception:  # symbolic shape inference gives up on some graphs; ORT then warns that it was skipped
        to_quantize = source_path
    try:
        if feeds is not None and spec is not None:
            return quantization.ort_static(to_quantize, path, feeds, spec, ort_reduce_range())
        ort_quantize_dynamic(str(to_quantize), str(path), weight_type=QuantType.QInt8, reduce_range=ort_reduce_range())
    finally:
        prepared.unlink(missing_ok=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    return {
        "quantized_layers": sum(1 for node in graph.node if node.op_type in sources.ORT_INT8_OPS),
        "ort_reduce_range": ort_reduce_range(),
    }


def load_model(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """From file to a ready `infer(batch)`, plus facts for the record. This whole call is `load_s`."""
    source = scenario.source
    if source is None or not source.compiled:
        return _load(scenario, artifact_path)
    try:
        return _load(scenario, artifact_path)
    except (Unsupported, SourceError):
        raise
    except Exception as exc:  # a user's file the runtime cannot read: say which file, and what it is
        raise SourceError(
            source, f"{runtime_of(scenario)} could not load it as a {FORMAT_NAMES[source.kind]} file: "
            f"{type(exc).__name__}: {sources.short(exc)}",
            path=str(artifact_path),
        ) from exc  # fmt: skip


def _load(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    if scenario.load == "onnxruntime":
        return _load_onnxruntime(scenario, artifact_path)
    if scenario.load == "litert":
        return _load_litert(scenario, artifact_path)
    if scenario.load == "openvino":
        infer, facts = compiled.load_openvino(scenario, artifact_path)
        return infer, {"compiled": facts}
    names = tuple(spec.name for spec in named_inputs(scenario))
    if scenario.load == "aoti":  # the package was exported from inputs.positional: inputs in order
        runner, facts = compiled.load_aoti(artifact_path)
        return (inputs.PositionalRun(runner, names) if names else runner), {"compiled": facts}
    import torch

    if scenario.load == "torchscript":
        module = torch.jit.load(str(artifact_path), map_location="cpu")
        # A user's TorchScript file may be in train mode; a factory's model reaches here as bench's
        # frozen artifact, which has no training flag to report.
        user_file = scenario.source is not None and scenario.source.kind == "torchscript"
        given = hygiene.given_facts(scenario, module) if user_file else {}
        module.eval()
        return (inputs.PositionalRun(module, names) if names else module), given
    if scenario.load == "export":
        module = torch.export.load(str(artifact_path)).module()
        return (inputs.PositionalRun(module, names) if names else module), {}
    if scenario.load == "mmap":
        # Build on the meta device (no memory, no init) and adopt the mapped tensors as they are.
        model = build_fp32(scenario, device="meta", with_weights=False, as_given=True)
        given = hygiene.given_facts(scenario, model)
        model.eval()
        state = torch.load(artifact_path, map_location="cpu", weights_only=True, mmap=True)
        _load_state(_fit_variant(scenario, model, state), state, assign=True)
        return _named_call(scenario, model.eval()), given
    if scenario.precision == "int8_static":  # a PT2E program (eager, compile): see bench.quantization
        program = torch.export.load(str(artifact_path)).module()
        run = inputs.PositionalRun(program, names) if names else program
        if scenario.load == "compile":
            infer, compile_facts = compiled.torch_compile(scenario, run)
            return infer, {"compiled": compile_facts}
        return run, {}
    state = torch.load(artifact_path, map_location="cpu", weights_only=True)
    model = build_fp32(scenario, with_weights=False, as_given=True)
    given = hygiene.given_facts(scenario, model)
    model.eval()
    model, facts = convert(_fit_variant(scenario, model, state), scenario.precision)
    _load_state(model, state)
    facts = {**facts, **given}
    if scenario.load == "compile":  # compiles on its first call, timed apart as compile_s (bench.worker)
        compiled_model, compile_facts = compiled.torch_compile(scenario, model.eval())
        return _named_call(scenario, compiled_model), {**facts, "compiled": compile_facts}
    return _named_call(scenario, model.eval()), facts


def _named_call(scenario: Scenario, model: Any) -> Any:
    """A module fed named inputs is called with keywords (inputs.KeywordCall); others as they are."""
    return inputs.KeywordCall(model, output_of(scenario)) if named_inputs(scenario) else model


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
    first = session.get_inputs()[0]

    def infer(batch: Any) -> Any:
        return session.run(None, batch if isinstance(batch, dict) else {first.name: batch})[0]

    return infer, {"ort_graph_optimization_level": level, "fixed_batch": sources.fixed_batch(first.shape)}


def _litert_interpreter() -> Any:
    """LiteRT's Interpreter class; Unsupported (not a failure) when the optional extra is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise Unsupported(f"{LITERT_MISSING} ({exc})") from exc
    return Interpreter


def _load_litert(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """A .tflite file in LiteRT's interpreter with the scenario's threads, its input sized to the batch."""
    source = scenario.source
    assert source is not None
    interpreter = _litert_interpreter()(model_path=str(artifact_path), num_threads=scenario.threads)
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise SourceError(source, f"has {len(inputs)} inputs; bench feeds the model one tensor")
    first = inputs[0]
    accepts = [int(d) for d in (first["shape_signature"] if len(first["shape_signature"]) else first["shape"])]
    fed = [scenario.batch_size, *scenario.input_shape]
    if len(accepts) != len(fed) or any(a > 0 and a != f for a, f in zip(accepts, fed, strict=False)):
        raise SourceError(
            source, f"input '{first['name']}' has shape {accepts} (-1: any size), but the scenario feeds "
            f"{fed} (batch_size {scenario.batch_size}, input_shape {list(scenario.input_shape)})", field="input_shape",
        )  # fmt: skip
    import numpy as np

    dtype = np.dtype(np.float16 if scenario.precision == "fp16" else np.float32)  # what make_batch feeds
    if first["dtype"] != dtype:
        raise SourceError(
            source, f"input '{first['name']}' takes {first['dtype'].__name__}, but saved_precision "
            f"{source.saved_precision} feeds {dtype}", field="saved_precision",
        )  # fmt: skip
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


def reference_outputs(scenario: Scenario, cache_dir: Path, inputs: int) -> Artifact | None:
    """fp32 outputs on `inputs` seeded samples: what every precision's fidelity is measured against.

    The fp32 eager model for a model name or module source; the file itself in ONNX Runtime for
    an fp32 ONNX file (its int8_dynamic rows are measured against it). None for other compiled
    files: they run only as saved, so there is nothing to compare with.
    """
    import torch

    source = scenario.source
    if source is not None and source.compiled:
        if source.kind != "onnx" or source.saved_precision != "fp32":
            return None
        facts = sources.check_file(source)
        info = _check_onnx(scenario, facts.sha256)
        batch = sources.fixed_batch(info.dims)
        if batch not in (None, 1):
            return None  # the 4 fidelity inputs fit neither one call nor one call each
        import onnxruntime

        key = {"source_sha256": facts.sha256, "onnxruntime": onnxruntime.__version__, "kind": "reference_outputs",
               "input_shape": list(scenario.input_shape), "inputs": inputs, "seed": scenario.seed}  # fmt: skip
        if source.inputs:
            key["named_inputs"] = [spec.to_dict() for spec in source.inputs]
        reference = dataclasses.replace(scenario, load="onnxruntime", precision="fp32", threads=1, interop_threads=1)

        def write_onnx(path: Path) -> None:
            infer, _ = _load_onnxruntime(reference, Path(facts.path))
            batch_inputs = to_runtime_input(reference, fidelity_batch(scenario, inputs))
            outputs = torch.as_tensor(run_inputs(infer, batch_inputs, batch)).float()
            write_via_memory(path, lambda f: torch.save(outputs, f))

        return cached_artifact(cache_dir, key, f"{_file_stem(scenario)}-reference.pt", write_onnx)

    key = {**model_key(scenario), "input_shape": list(scenario.input_shape), "inputs": inputs,
           "kind": "reference_outputs"}  # fmt: skip
    if named_inputs(scenario):
        key.update(named_inputs=[spec.to_dict() for spec in named_inputs(scenario)], output=output_of(scenario),
                   text=file_sha256(Path(source.text)) if source and source.text else None)

    def write(path: Path) -> None:
        model = _named_call(scenario, build_fp32(scenario))
        with torch.inference_mode():
            output = model(fidelity_batch(scenario, inputs))
        write_via_memory(path, lambda f: torch.save(output.float(), f))

    return cached_artifact(cache_dir, key, f"{_file_stem(scenario)}-reference.pt", write)


def run_inputs(infer: Callable[[Any], Any], batch: Any, fixed_batch: int | None) -> Any:
    """Outputs for a batch of inputs: one call, or one call per input for a model fixed at batch 1."""
    count = inputs.batch_len(batch)
    if fixed_batch != 1 or count == 1:
        return infer(batch)
    import numpy as np

    return np.concatenate([np.asarray(infer(inputs.rows(batch, i, i + 1))) for i in range(count)])


def fidelity_inputs(shape: tuple[int, ...], seed: int, inputs: int) -> Any:
    """Inputs for fidelity, seeded apart from the timed batch."""
    return models.make_input(shape, inputs, seed + 1000)


def fidelity_count(scenario: Scenario) -> int:
    """How many samples fidelity compares: more for text tasks, whose nearest-neighbour agreement
    needs a few neighbours to mean anything."""
    source = scenario.source
    return TOKEN_FIDELITY_INPUTS if source is not None and source.task else FIDELITY_INPUTS


def fidelity_batch(scenario: Scenario, count: int) -> Any:
    """Fidelity's fp32 inputs (a tensor, or a dict of named inputs), seeded apart from the timed batch."""
    if named_inputs(scenario):
        return sample_inputs(scenario, count, scenario.seed + 1000, skip=scenario.batch_size)
    return fidelity_inputs(scenario.input_shape, scenario.seed, count)
