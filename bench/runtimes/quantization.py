"""Static (calibrated) int8 and weight-only int8: the quantizers, and what they quantized.

- torch `int8_static`: PT2E, torch.ao's successor in torchao (torch 2.14 has no
  torch.ao.quantization.quantize_pt2e any more): `torch.export` (strict: the X86 quantizer finds
  conv/add/relu patterns by the source module of each node, which non-strict export merges when one
  module is called twice, as resnet's ReLU is), `prepare_pt2e` with `X86InductorQuantizer`'s
  default config (per-channel int8 weights, uint8 activations), calibration, `convert_pt2e`. The
  result is a program of fp32 ops between quantize/dequantize pairs: Inductor (load compile, aoti)
  fuses those into int8 oneDNN kernels; eager runs them as they are, in fp32 (slower than fp32 itself).
- ONNX Runtime `int8_static`: `quantize_static` in QDQ format over the same calibration data,
  per-channel weights, 7-bit weights on x86 without VNNI (bench.runtimes.formats.ort_reduce_range).
- OpenVINO `int8_static`: NNCF post-training quantization of the fp32 ONNX file (its ONNX backend
  writes QDQ nodes, which OpenVINO runs with int8 kernels), over the same calibration data.
- `int8_weight_only`: torchao's Int8WeightOnlyConfig on Linear layers: int8 weights with a scale
  per output channel, activations stay fp32 (memory-bound models gain, compute-bound ones do not).
- `int4_weight_only`: torchao's CPU int4 (PrototypeInt4WeightOnlyConfig, Int4OpaqueTensor) on
  Linear layers: asymmetric int4 weights with a scale and zero point per group of input features,
  run by torch's own CPU kernel (aten._weight_int4pack_mm_for_cpu, vectorised for AVX2 and
  AVX-512). The kernel takes groups of 32, 64 or 128 and out_features in multiples of 16: each layer
  gets the largest group that divides its in_features; a layer it cannot take stays fp32 and is
  counted apart (`unquantized_linear`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import Unsupported, first_error_line
from bench.suite import calibration
from bench.suite.calibration import CalibrationSpec

TORCHAO_MISSING = "torchao is not installed: pip install .[quant] (int8_static and the weight-only precisions use it)"
WEIGHT_ONLY = ("int8_weight_only", "int4_weight_only")
TORCHAO_PRECISIONS = ("int8_static", *WEIGHT_ONLY)  # torch rows of these need torchao to load
# The group sizes torch's CPU int4 kernel takes, largest (fewest scales) first.
INT4_GROUP_SIZES = (128, 64, 32)
# Layer kinds counted in the record, by torch op and by ONNX op type.
_TORCH_KINDS = {"conv1d": "conv", "conv2d": "conv", "conv3d": "conv", "linear": "linear"}
_ONNX_KINDS = {"Conv": "conv", "ConvTranspose": "conv", "Gemm": "linear", "MatMul": "linear"}


def import_torchao() -> Any:
    try:
        # torch logs a deprecation warning (register_constant on an Enum) while torchao imports
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        import torchao  # also registers its tensor subclasses with torch.load(weights_only) and its ops

        # a prototype that `import torchao` leaves out: it registers int4_weight_only's Int4OpaqueTensor likewise
        import torchao.prototype.quantization.int4  # noqa: F401
    except ImportError as exc:
        raise Unsupported(f"{TORCHAO_MISSING} ({exc})") from exc
    return torchao


def facts(
    method: str, library: str, layers_by_kind: dict[str, int], spec: CalibrationSpec | None, **extra: Any
) -> dict[str, Any]:
    """The artifact's facts: `quantized_layers` (the total) and the record's `quantization`."""
    if not layers_by_kind:
        raise Unsupported(f"{method} quantized no conv or linear layer of this model")
    return {
        "quantized_layers": sum(layers_by_kind.values()),
        "quantization": {
            "method": method,
            "library": library,
            "library_version": importlib.metadata.version(library),
            "layers_by_kind": dict(sorted(layers_by_kind.items())),
            "calibration_source": spec.source if spec else None,
            "calibration_samples": spec.samples if spec else None,
            "calibration_note": calibration.note(spec) if spec else None,
            **extra,
        },
    }


def torch_layers_by_kind(nodes: Iterable[Any]) -> dict[str, int]:
    """Conv and linear ops of an FX graph whose weight comes through a dequantize: the int8 ones."""
    counts: Counter[str] = Counter()
    for node in nodes:
        kind = _TORCH_KINDS.get(getattr(getattr(node, "target", None), "__name__", "").split(".")[0])
        weight = node.args[1] if kind and len(node.args) > 1 else None
        if kind and "dequantize" in str(getattr(weight, "target", "")):
            counts[kind] += 1
    return dict(counts)


def onnx_layers_by_kind(nodes: Sequence[Any], initializers: set[str]) -> dict[str, int]:
    """Conv, Gemm and MatMul nodes of a QDQ graph whose weight (second input) is a dequantized initializer."""
    dequantized = {n.output[0]: n.input[0] for n in nodes if n.op_type == "DequantizeLinear"}
    counts: Counter[str] = Counter()
    for node in nodes:
        kind = _ONNX_KINDS.get(node.op_type)
        if kind and len(node.input) > 1 and dequantized.get(node.input[1]) in initializers:
            counts[kind] += 1
    return dict(counts)


def pt2e_static(
    model: Any, example: tuple[Any, ...], dynamic_shapes: Any, batches: Sequence[tuple[Any, ...]], spec: CalibrationSpec
) -> tuple[Any, dict[str, Any]]:
    """PT2E static int8 with the X86 Inductor quantizer: the converted program, re-exported with the
    same dynamic shapes (so it saves, loads and compiles like any exported program), and its facts."""
    import torch

    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    with torch.inference_mode(False), torch.no_grad():
        try:
            captured = torch.export.export(model, example, dynamic_shapes=dynamic_shapes, strict=True).module()
        except Exception as exc:
            raise Unsupported(
                f"torch.export (strict, as PT2E needs) cannot export this model: {first_error_line(exc)}"
            ) from exc
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchao warns about its observers' defaults
            prepared = prepare_pt2e(captured, quantizer)
            for batch in batches:
                prepared(*batch)
            converted = convert_pt2e(prepared)
        _drop_unused_attributes(converted)
        layers = torch_layers_by_kind(converted.graph.nodes)
        program = torch.export.export(converted, example, dynamic_shapes=dynamic_shapes)
    return program, facts("pt2e_x86_inductor", "torchao", layers, spec, per_channel=True)


def _drop_unused_attributes(graph_module: Any) -> None:
    """Remove the fp32 weights the converted graph no longer reads (it reads their int8 copies):
    torch.export would save every parameter of the module, used or not, beside the int8 ones."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    unused = [name for name, _ in [*graph_module.named_parameters(), *graph_module.named_buffers()] if name not in used]
    for name in unused:
        owner, _, leaf = name.rpartition(".")
        delattr(graph_module.get_submodule(owner), leaf)


def weight_only_int8(model: Any) -> tuple[Any, dict[str, Any]]:
    """torchao's int8 weight-only quantization of the Linear layers, in place; the model and its facts."""
    from torch import nn

    import_torchao()
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    linear = sum(1 for m in model.modules() if isinstance(m, nn.Linear))
    quantize_(model, Int8WeightOnlyConfig())
    return model, facts("int8_weight_only", "torchao", {"linear": linear} if linear else {}, None, per_channel=True)


def int4_group_size(in_features: int, out_features: int) -> int | None:
    """The group size torch's CPU int4 kernel takes for a Linear layer of this shape, or None if it takes none:
    the largest of INT4_GROUP_SIZES that divides in_features, and out_features a multiple of 16 (the kernel's
    packing, `_convert_weight_to_int4pack_cpu`, refuses any other)."""
    if out_features % 16:
        return None
    return next((size for size in INT4_GROUP_SIZES if in_features % size == 0), None)


def weight_only_int4(model: Any) -> tuple[Any, dict[str, Any]]:
    """torchao's CPU int4 weight-only quantization of the Linear layers, in place; the model and its facts."""
    from torch import nn

    import_torchao()
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig
    from torchao.quantization import quantize_

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    group_of = {id(m): int4_group_size(m.in_features, m.out_features) for m in linears}
    groups = Counter(g for g in group_of.values() if g)
    for size in groups:
        # set_inductor_config=False: torchao would otherwise change Inductor's global settings for every
        # later compile in this process; a compile row's settings are its scenario's own.
        config = PrototypeInt4WeightOnlyConfig(group_size=size, set_inductor_config=False)
        quantize_(model, config, filter_fn=lambda m, _fqn, size=size: group_of.get(id(m)) == size)
    quantized = sum(groups.values())
    if linears and not quantized:  # say why, rather than facts()'s bare "quantized no layer"
        raise Unsupported(
            f"int4_weight_only quantized no conv or linear layer of this model: torch's CPU int4 kernel takes "
            f"Linear layers with out_features a multiple of 16 and in_features a multiple of 32, and none of its "
            f"{len(linears)} Linear layer(s) is one"
        )
    return model, facts(
        "int4_weight_only",
        "torchao",
        {"linear": quantized} if quantized else {},
        None,
        per_channel=False,
        group_sizes={str(size): n for size, n in sorted(groups.items())},
        unquantized_linear=len(linears) - quantized,
    )


def ort_static(
    source_path: Path, path: Path, batches: Sequence[dict[str, Any]], spec: CalibrationSpec, reduce_range: bool
) -> dict[str, Any]:
    """ONNX Runtime's static QDQ quantization of an fp32 ONNX file over `batches` (feeds by input name)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(batches)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    quantize_static(
        str(source_path),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    graph = onnx.load(str(path), load_external_data=False).graph
    layers = onnx_layers_by_kind(graph.node, {init.name for init in graph.initializer})
    return facts("ort_qdq_static", "onnxruntime", layers, spec, per_channel=True, reduce_range=reduce_range)


def nncf_version() -> str:
    return importlib.metadata.version("nncf")


def nncf_static(
    source_path: Path, path: Path, feeds: Sequence[dict[str, Any]], spec: CalibrationSpec
) -> dict[str, Any]:
    """NNCF's post-training quantization of an fp32 ONNX file over `feeds` (one calibration batch each)."""
    import nncf
    import onnx

    nncf.set_log_level(logging.ERROR)  # its per-step progress lines would fall between bench's own
    quantized = nncf.quantize(onnx.load(str(source_path)), nncf.Dataset(list(feeds)), subset_size=len(feeds))
    onnx.save(quantized, str(path))
    graph = quantized.graph
    layers = onnx_layers_by_kind(graph.node, {init.name for init in graph.initializer})
    return facts("nncf_ptq", "nncf", layers, spec, per_channel=True)
