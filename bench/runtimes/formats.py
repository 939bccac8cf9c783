"""Artifact formats: how bench writes the file a load mode loads, from the torch model it builds,
and how a compiled file given as the model source is checked and used as it is.

`prepare_built` writes (or reuses, bench.models.artifacts) one artifact per model, precision and format:
a `state_dict` (eager, mmap, compile), a frozen `torchscript` module, an `exported_program`
(torch.export; also int8_static's PT2E program for eager and compile), an `aoti_package`
(AOTInductor), or an `onnx` file (ONNX Runtime's quantizer makes its int8 ones). It runs in the
parent and imports torch. Which format a scenario loads is its runtime's `format_for`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from bench.checks import generation
from bench.environment import read_cpuinfo
from bench.errors import CompileFailed, Unsupported, first_error_line
from bench.models import catalog as models
from bench.models import pruning, sources
from bench.models.artifacts import Artifact, cached_artifact, file_sha256
from bench.models.sources import FORMAT_NAMES, ModelSource
from bench.results.nospace import write_via_memory
from bench.runtimes import quantization
from bench.runtimes.model import (
    build_fp32,
    build_variant,
    calibration_batches,
    calibration_feeds,
    calibration_spec,
    fidelity_batch,
    file_stem,
    generation_prompts,
    make_batch,
    model_key,
    named_call,
    named_inputs,
    output_of,
    run_inputs,
    sample_inputs,
    state_with_buffers,
    to_runtime_input,
)
from bench.runtimes.precisions import PRECISIONS, cast, convert, torch_dtype
from bench.runtimes.registry import RUNTIMES, runtime_for
from bench.suite import calibration, inputs
from bench.suite.scenarios import Scenario

SUFFIXES = {
    "state_dict": ".pt",
    "torchscript": ".ts.pt",
    "exported_program": ".pt2",
    "onnx": ".onnx",
    "aoti_package": ".aoti.pt2",
}


def prepare_built(scenario: Scenario, cache_dir: Path, fmt: str) -> Artifact:
    """Write (or reuse) the `fmt` artifact of the model bench builds for this scenario."""
    import torch

    key = {**model_key(scenario), "precision": scenario.precision, "format": fmt}
    if fmt == "onnx":
        import onnxruntime

        key["onnxruntime"] = onnxruntime.__version__
        if scenario.precision in ("int8_dynamic", "int8_static"):
            key["ort_reduce_range"] = ort_reduce_range()
    if PRECISIONS[scenario.precision].calibrated:
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
        if PRECISIONS[scenario.precision].calibrated:  # PT2E: quantized as it is exported
            return {**write_pt2e_static(scenario, pruned, fmt, path), **pruning_facts}
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
                facts.update(write_aoti_package(_export(module, example, _seq_axes(scenario)), path))
            else:
                _write_torchscript(module, example, path)
        elif fmt == "exported_program":
            _save_exported(_export(model, make_batch(scenario, batch_size=2)), path)
        elif fmt == "aoti_package":
            facts.update(write_aoti_package(_export(model, make_batch(scenario, batch_size=2)), path))
        else:
            _write_torchscript(model, make_batch(scenario, batch_size=1), path)
        return facts

    variant = "" if scenario.variant == pruning.DENSE else f"-{scenario.variant}"
    filename = f"{file_stem(scenario)}{variant}-{scenario.precision}{SUFFIXES[fmt]}"
    return cached_artifact(cache_dir, key, filename, write)


def write_pt2e_static(scenario: Scenario, model: Any, fmt: str, path: Path) -> dict[str, Any]:
    """PT2E static int8 of the fp32 model, saved as an exported program or compiled by AOTInductor."""
    if named_inputs(scenario):  # exported as inputs.positional, called with the tensors in the inputs' order
        model = inputs.positional(model, named_inputs(scenario), output_of(scenario))
        args, dynamic = _export_args(tuple(make_batch(scenario, batch_size=2).values()), _seq_axes(scenario))
        batches = [tuple(b.values()) for b in calibration_batches(scenario)]
    else:
        args, dynamic = _export_args(make_batch(scenario, batch_size=2))
        batches = [(b,) for b in calibration_batches(scenario)]
    program, facts = quantization.pt2e_static(model, args, dynamic, batches, calibration_spec(scenario))
    if fmt == "aoti_package":
        facts.update(write_aoti_package(program, path))
    else:
        _save_exported(program, path)
    return facts


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


def given_file_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """A compiled file given as the source is loaded where it is, once checked; only ONNX fp32 to
    int8_dynamic makes a new file, cached by the given file's sha256 (not its path)."""
    source = scenario.source
    assert source is not None
    reason = compiled_file_reason(source, scenario)
    if reason is not None:
        raise Unsupported(reason)
    started = time.perf_counter()
    facts = sources.check_file(source)
    if source.kind == "exported_program":
        sources.check_exported_program(source)
    found: dict[str, Any] = {}
    if source.kind == "onnx":
        info = check_onnx(scenario, facts.sha256)
        found["quantized_layers"] = info.int8_nodes or None
    if scenario.precision == source.saved_precision:
        return Artifact(Path(facts.path), facts.sha256, facts.bytes, time.perf_counter() - started, False, found)
    import onnxruntime

    key = {
        "source_sha256": facts.sha256,
        "kind": "onnx",
        "precision": scenario.precision,
        "onnxruntime": onnxruntime.__version__,
        "ort_reduce_range": ort_reduce_range(),
    }
    filename = f"{file_stem(scenario)}-{scenario.precision}.onnx"
    return cached_artifact(cache_dir, key, filename, lambda path: ort_quantize(Path(facts.path), path))


def compiled_file_reason(source: ModelSource, scenario: Scenario) -> str | None:
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
    return runtime_for(scenario).file_unsupported(scenario)


def check_onnx(scenario: Scenario, sha256: str) -> sources.OnnxInput:
    """A given ONNX file's input(s) against what the scenario feeds; its first input."""
    source = scenario.source
    assert source is not None
    if source.inputs:
        return sources.check_onnx_named_inputs(source, sha256, scenario.batch_size, scenario.seq_len)
    return sources.check_onnx_input(source, sha256, scenario.batch_size, scenario.input_shape)


def _write_onnx(scenario: Scenario, path: Path) -> dict[str, Any]:
    """Export fp32 (or fp16) with a dynamic batch axis; int8 is ONNX Runtime's dynamic quantization."""
    import torch

    fp32, facts = build_variant(scenario)
    export_precision = "fp16" if scenario.precision == "fp16" else "fp32"
    model, _ = convert(fp32, export_precision)
    if named_inputs(scenario):  # one ONNX input per named input, batch and seq axes dynamic
        names = [spec.name for spec in named_inputs(scenario)]
        model = inputs.positional(model, named_inputs(scenario), output_of(scenario))
        samples = sample_inputs(scenario, 2, scenario.seed, skip=0)  # torch tensors, float ones in the export's dtype
        example = tuple(cast(v, export_precision) if v.is_floating_point() else v for v in samples.values())
        axes = {
            name: {0: "batch", **({axis: "seq"} if axis else {})}
            for name, axis in zip(names, _seq_axes(scenario), strict=True)
        }
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
            feeds = calibration_feeds(scenario)
        try:
            return {**facts, **ort_quantize(target, path, feeds, calibration_spec(scenario))}
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


def ort_quantize(
    source_path: Path,
    path: Path,
    feeds: list[dict[str, Any]] | None = None,
    spec: calibration.CalibrationSpec | None = None,
) -> dict[str, Any]:
    """ONNX Runtime's dynamic quantization (QInt8 weights) of an fp32 ONNX file, and its integer nodes;
    with calibration `feeds`, its static QDQ quantization instead (bench.runtimes.quantization.ort_static).

    The file first goes through ORT's quantization pre-processing (shape inference and graph
    optimisation), as ORT's quantization guide asks; weights use 7 bits on x86 without VNNI
    (`ort_reduce_range`)."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source_path, path = source_path.resolve(), path.resolve()
    prepared = path.with_name(path.name + ".pre.onnx")
    try:
        # When ORT's symbolic shape inference gives up it saves sym_shape_infer_temp.onnx and its external
        # data into the working directory (onnxruntime/tools/symbolic_shape_infer.py): the user's folder,
        # where `bench advise` on tiny_bert left them. It runs in a scratch folder instead.
        with tempfile.TemporaryDirectory(prefix="bench-ort-shapes-") as scratch, contextlib.chdir(scratch):
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
        info = check_onnx(scenario, facts.sha256)
        batch = sources.fixed_batch(info.dims)
        if batch not in (None, 1):
            return None  # the 4 fidelity inputs fit neither one call nor one call each
        import onnxruntime

        key = {
            "source_sha256": facts.sha256,
            "onnxruntime": onnxruntime.__version__,
            "kind": "reference_outputs",
            "input_shape": list(scenario.input_shape),
            "inputs": inputs,
            "seed": scenario.seed,
        }
        if source.inputs:
            key["named_inputs"] = [spec.to_dict() for spec in source.inputs]
        reference = dataclasses.replace(scenario, load="onnxruntime", precision="fp32", threads=1, interop_threads=1)

        def write_onnx(path: Path) -> None:
            infer, _ = RUNTIMES["onnxruntime"].load(reference, Path(facts.path))
            batch_inputs = to_runtime_input(reference, fidelity_batch(scenario, inputs))
            outputs = torch.as_tensor(run_inputs(infer, batch_inputs, batch)).float()
            write_via_memory(path, lambda f: torch.save(outputs, f))

        return cached_artifact(cache_dir, key, f"{file_stem(scenario)}-reference.pt", write_onnx)

    key = {
        **model_key(scenario),
        "input_shape": list(scenario.input_shape),
        "inputs": inputs,
        "kind": "reference_outputs",
    }
    if named_inputs(scenario):
        key.update(
            named_inputs=[spec.to_dict() for spec in named_inputs(scenario)],
            output=output_of(scenario),
            text=file_sha256(Path(source.text)) if source and source.text else None,
        )

    def write(path: Path) -> None:
        model = named_call(scenario, build_fp32(scenario))
        with torch.inference_mode():
            output = model(fidelity_batch(scenario, inputs))
        write_via_memory(path, lambda f: torch.save(output.float(), f))

    return cached_artifact(cache_dir, key, f"{file_stem(scenario)}-reference.pt", write)


def reference_tokens(scenario: Scenario, cache_dir: Path) -> Artifact | None:
    """fp32 eager's greedy tokens after the scenario's prompts (`generate:`): what every runtime's and
    precision's generated tokens are compared with. A JSON `ReferenceTokens` (bench.checks.generation),
    made once per model, prompts and new-token count; None without `generate:`."""
    import torch

    if scenario.generate is None or (scenario.source is not None and scenario.source.compiled):
        return None
    new_tokens = scenario.generate.new_tokens
    key = {
        **model_key(scenario),
        "kind": "reference_tokens",
        "batch_size": scenario.batch_size,
        "input_shape": list(scenario.input_shape),
        "named_inputs": [spec.to_dict() for spec in named_inputs(scenario)],
        "text": file_sha256(Path(scenario.source.text)) if scenario.source and scenario.source.text else None,
        "new_tokens": new_tokens,
        "generation_code_sha256": file_sha256(Path(generation.__file__)),
    }

    def write(path: Path) -> None:
        prompt = generation_prompts(scenario)
        model = build_fp32(scenario)
        with torch.inference_mode():
            generated = generation.hf_decode(model, prompt, new_tokens)([])
        reference = generation.ReferenceTokens(prompt["input_ids"].tolist(), generated.tokens)
        path.write_text(json.dumps(dataclasses.asdict(reference)), encoding="utf-8")

    return cached_artifact(cache_dir, key, f"{file_stem(scenario)}-reference-tokens.json", write)


def write_aoti_package(exported: Any, path: Path) -> dict[str, Any]:
    """Compile a torch.export program with AOTInductor into a .pt2 package (in the parent)."""
    import torch

    # Building the package imports torch.utils.cpp_extension, which warns "No CUDA runtime is found"
    # on every CPU-only machine, in the middle of the run's progress lines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
    except Exception as exc:
        raise CompileFailed(f"AOTInductor failed: {first_error_line(exc)}") from exc
    return {}
