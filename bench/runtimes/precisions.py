"""Precisions: one table, `PRECISIONS`, of what each `precision:` value means to a torch model.

Each `Precision` says the dtype its float inputs take, how bench converts an fp32 torch model to
it (`convert`: the model and facts for the record), whether loading it needs torchao, and its own
reasons not to run under a load mode (`unsupported`), asked before the load mode's own. How a
runtime outside torch gets there (ONNX Runtime's quantizer, NNCF, OpenVINO's precision hint) is
that runtime's business (bench.runtimes.onnxruntime, .openvino, .formats).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.errors import Unsupported
from bench.runtimes import quantization

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario

# Layer types torch's dynamic quantization replaces with int8 versions.
DYNAMIC_QUANT_LAYERS = ("Linear", "LSTM", "GRU")

Conversion = Callable[[Any], tuple[Any, dict[str, Any]]]


def _as_is(model: Any) -> tuple[Any, dict[str, Any]]:
    return model, {}


def _to_dtype(dtype: str) -> Conversion:
    def convert(model: Any) -> tuple[Any, dict[str, Any]]:
        import torch

        return model.to(getattr(torch, dtype)), {}

    return convert


def quantize_dynamic(model: Any) -> tuple[Any, dict[str, Any]]:
    """torch's dynamic int8 quantization, and the record's `quantized_layers`.

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
    return quantized, {"quantized_layers": count}


def _static_unsupported(scenario: Scenario) -> str | None:
    if scenario.load in ("mmap", "torchscript"):
        return (
            f"load {scenario.load} cannot run int8_static: torch's static int8 is a PT2E (torch.export) program, "
            "not a state_dict or TorchScript; it runs under eager, export, compile and aoti (and onnxruntime's QDQ)"
        )
    return None


def _weight_only_unsupported(scenario: Scenario) -> str | None:
    if scenario.load not in ("eager", "compile"):
        bits = "int4" if scenario.precision == "int4_weight_only" else "int8"
        return (
            f"{scenario.precision} is torchao's weight-only {bits} of Linear layers (tensor subclasses in the "
            f"state_dict); bench runs it under eager and compile, not {scenario.load}"
        )
    return None


def _no_rule(scenario: Scenario) -> str | None:
    return None


@dataclass(frozen=True)
class Precision:
    name: str
    input_dtype: str | None  # torch dtype name float inputs are cast to; None: they stay fp32
    convert: Conversion  # the fp32 torch model in this precision, and facts for the record
    unsupported: Callable[[Scenario], str | None] = _no_rule  # its own reasons, before the load mode's
    needs_torchao: bool = False  # torch rows load torchao's ops and tensor subclasses
    calibrated: bool = False  # quantized over calibration inputs (bench.suite.calibration), in the parent


PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp32", None, _as_is),
        Precision("int8_dynamic", None, quantize_dynamic),
        Precision("fp16", "float16", _to_dtype("float16")),
        Precision("bf16", "bfloat16", _to_dtype("bfloat16")),
        # The model is built fp32 and quantized while the artifact is written (bench.runtimes.formats):
        # converting a loaded model is not how it runs, so `convert` leaves it as it is.
        Precision("int8_static", None, _as_is, _static_unsupported, needs_torchao=True, calibrated=True),
        Precision(
            "int8_weight_only", None, quantization.weight_only_int8, _weight_only_unsupported, needs_torchao=True
        ),
        Precision(
            "int4_weight_only", None, quantization.weight_only_int4, _weight_only_unsupported, needs_torchao=True
        ),
    )
}


def torch_dtype(precision: str) -> Any:
    """The torch dtype of the precision's float inputs (fp32 for the integer precisions)."""
    import torch

    return getattr(torch, PRECISIONS[precision].input_dtype or "float32")


def cast(tensor: Any, precision: str) -> Any:
    """A float tensor in the precision's input dtype."""
    return tensor.to(torch_dtype(precision)) if PRECISIONS[precision].input_dtype else tensor


def convert(model: Any, precision: str) -> tuple[Any, dict[str, Any]]:
    """The fp32 model in `precision`, with facts about the conversion for the record."""
    return PRECISIONS[precision].convert(model)
