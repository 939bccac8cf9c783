"""Named, typed model inputs: a model entry's `inputs:` list, the seeded tensors made from it,
and the keyword call that feeds them to a module.

An entry is {name, shape, dtype, range | fill}; shapes are per sample (the batch is added
in front) and the symbol `seq` takes the scenario's `seq_len`. Integer inputs are drawn
from [low, high) with the scenario's seed, `fill` gives a constant. The model is called as
`model(**inputs)`; `output:` picks what the call returns (an attribute, a key or an index;
default: the first tensor). torch is imported lazily so that reading a suite stays fast.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any

from bench.schema import from_json

SEQ = "seq"  # the one shape symbol: the scenario's seq_len
DTYPES = ("float32", "int64", "int32")
KEYS = ("name", "shape", "dtype", "range", "fill")
# In text models these index an embedding table (token ids, token types, positions): integers only;
# torch's embedding refuses a float tensor when the model runs.
TOKEN_INDEX_INPUTS = ("input_ids", "token_type_ids", "position_ids")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


@dataclass(frozen=True)
class InputSpec:
    """One named input of a model, per sample."""

    name: str
    shape: tuple[int | str, ...]  # sizes, or SEQ
    dtype: str = "float32"
    range: tuple[int, int] | None = None  # integers: drawn from [low, high)
    fill: float | None = None  # a constant instead of random values

    @property
    def integer(self) -> bool:
        return self.dtype != "float32"

    def sample_shape(self, seq_len: int | None) -> tuple[int, ...]:
        if SEQ in self.shape and seq_len is None:
            raise ValueError(f"input '{self.name}' has a '{SEQ}' dimension and the scenario sets no seq_len")
        return tuple(seq_len if d == SEQ else d for d in self.shape)  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "range": list(self.range) if self.range else None,
            "fill": self.fill,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return from_json(cls, data)


class InputsError(ValueError):
    """A bad `inputs:` list; `where` is the path inside it (index, key) for the suite's message."""

    def __init__(self, where: tuple[Any, ...], message: str):
        super().__init__(message)
        self.where = where


def parse_inputs(value: Any) -> tuple[InputSpec, ...]:
    """A suite's `inputs:` list, checked; raises InputsError."""
    example = "e.g. [{name: input_ids, shape: [seq], dtype: int64, range: [0, 30522]}]"
    if not isinstance(value, list) or not value:
        raise InputsError((), f"expected a non-empty list of inputs, {example}")
    specs: list[InputSpec] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InputsError((i,), f"expected a mapping {{name, shape, dtype, range or fill}}, got {item!r}")
        unknown = sorted(set(item) - set(KEYS))
        if unknown:
            raise InputsError((i, unknown[0]), f"unknown key; expected {', '.join(KEYS)}")
        name = item.get("name")
        if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS or name[0].isdigit():
            raise InputsError((i, "name"), f"expected the keyword the model's forward takes, got {name!r}")
        if name in (s.name for s in specs):
            raise InputsError((i, "name"), f"'{name}' is listed twice")
        shape = item.get("shape")
        if not isinstance(shape, list) or not all(
            d == SEQ or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape
        ):
            raise InputsError(
                (i, "shape"),
                f"expected one sample's sizes (positive integers or '{SEQ}'), "
                f"without the batch, e.g. [{SEQ}], got {shape!r}",
            )
        dtype = item.get("dtype", "float32")
        if dtype not in DTYPES:
            raise InputsError((i, "dtype"), f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
        fill, bounds = item.get("fill"), item.get("range")
        if fill is not None and bounds is not None:
            raise InputsError((i, "fill"), "give range or fill, not both")
        if fill is not None and (
            not isinstance(fill, (int, float))
            or isinstance(fill, bool)
            or not math.isfinite(fill)
            or (dtype != "float32" and not float(fill).is_integer())
        ):
            raise InputsError(
                (i, "fill"), f"expected a {'number' if dtype == 'float32' else 'whole number'}, got {fill!r}"
            )
        if bounds is not None:
            if dtype == "float32":
                raise InputsError((i, "range"), "applies to integer inputs (float inputs are standard normal)")
            if (
                not isinstance(bounds, list)
                or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
                or bounds[0] >= bounds[1]
            ):
                raise InputsError(
                    (i, "range"), f"expected [low, high) with low < high, e.g. [0, 30522], got {bounds!r}"
                )
        if dtype != "float32" and fill is None and bounds is None:
            raise InputsError((i,), f"integer input '{name}' needs range: [low, high) or fill: N")
        constant = None if fill is None else (float(fill) if dtype == "float32" else int(fill))
        specs.append(InputSpec(name, tuple(shape), dtype, tuple(bounds) if bounds else None, constant))
    return tuple(specs)


def uses_seq(specs: tuple[InputSpec, ...]) -> bool:
    return any(SEQ in spec.shape for spec in specs)


def make_inputs(specs: tuple[InputSpec, ...], batch_size: int, seq_len: int | None, seed: int) -> dict[str, Any]:
    """Seeded tensors, one per input, in the listed order; the same for every load mode and precision."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    batch: dict[str, Any] = {}
    for spec in specs:
        shape = (batch_size, *spec.sample_shape(seq_len))
        dtype = getattr(torch, spec.dtype)
        if spec.fill is not None:
            batch[spec.name] = torch.full(shape, spec.fill, dtype=dtype)
        elif spec.integer:
            low, high = spec.range  # type: ignore[misc]
            batch[spec.name] = torch.randint(low, high, shape, generator=generator, dtype=dtype)
        else:
            batch[spec.name] = torch.randn(shape, generator=generator)
    return batch


def unaccepted(module: Any, specs: tuple[InputSpec, ...], *, named_only: bool = False) -> str | None:
    """Why `module(**inputs)` cannot take these names (listing the ones its forward accepts), or None.

    `named_only`: names must be forward's own parameters even if it also takes **kwargs
    (transformers models pass those on as attention options, not as inputs)."""
    parameters = inspect.signature(module.forward).parameters
    var_keyword = [n for n, p in parameters.items() if p.kind is inspect.Parameter.VAR_KEYWORD]
    if var_keyword and not named_only:
        return None  # forward(**kwargs) takes any name
    accepted = [n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    unknown = [spec.name for spec in specs if spec.name not in accepted]
    if not unknown:
        return None
    return f"{type(module).__name__}.forward takes no {', '.join(unknown)}; it accepts {', '.join(accepted)}"


def select_output(output: Any, which: str | int | None) -> Any:
    """The tensor `output:` names in a model's return value (an attribute, a key or an index);
    by default the first tensor (a ModelOutput's first field, a tuple's first item)."""
    import torch

    if which is None:
        while not isinstance(output, torch.Tensor):
            if isinstance(output, dict):  # transformers' ModelOutput is an OrderedDict of its non-None fields
                output = next(iter(output.values()))
            elif isinstance(output, (tuple, list)) and output:
                output = output[0]
            else:
                raise TypeError(f"the model returned {type(output).__name__}; name the tensor to time with output:")
        return output
    if isinstance(which, int):
        return output[which]
    if isinstance(output, dict) and which in output:
        return output[which]
    if hasattr(output, which) and not isinstance(output, dict):
        return getattr(output, which)
    found = list(output) if isinstance(output, dict) else [a for a in dir(output) if not a.startswith("_")]
    raise KeyError(f"output '{which}' is not in what the model returned ({type(output).__name__}: {found[:12]})")


@functools.cache
def _positional_class() -> type:
    from torch import nn

    class PositionalCall(nn.Module):
        """A keyword-input model as `forward(*tensors)` in the inputs' order, returning the selected
        tensor: the form TorchScript tracing, torch.export and the ONNX exporter take."""

        def __init__(self, module: Any, names: tuple[str, ...], output: str | int | None):
            super().__init__()
            self.module = module
            self.names = names
            self.output = output

        def forward(self, *tensors: Any) -> Any:
            return select_output(self.module(**dict(zip(self.names, tensors, strict=True))), self.output)

    return PositionalCall


def positional(module: Any, specs: tuple[InputSpec, ...], output: str | int | None) -> Any:
    return _positional_class()(module, tuple(s.name for s in specs), output).eval()


class KeywordCall:
    """`infer(batch)` for a module fed a dict of named inputs: `model(**batch)`, then `output:`."""

    def __init__(self, module: Any, output: str | int | None):
        self.module = module
        self.output = output

    def __call__(self, batch: dict[str, Any]) -> Any:
        return select_output(self.module(**batch), self.output)


class PositionalRun:
    """`infer(batch)` for a traced or exported module that takes the inputs positionally, in order."""

    def __init__(self, module: Any, names: tuple[str, ...]):
        self.module = module
        self.names = names

    def __call__(self, batch: dict[str, Any]) -> Any:
        return self.module(*(batch[name] for name in self.names))


def rows(batch: Any, start: int, stop: int) -> Any:
    """Samples start..stop of a batch (a tensor, an array, or a dict of them)."""
    if isinstance(batch, dict):
        return {name: value[start:stop] for name, value in batch.items()}
    return batch[start:stop]


def batch_len(batch: Any) -> int:
    return len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)
