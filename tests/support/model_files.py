"""Model files for the model-source tests, made here without a GPU and without TensorFlow.

- `save_as_if_on_cuda`: a torch.save file whose storages claim the `cuda:0` location, as a
  checkpoint saved on a GPU does (torch writes each storage's location tag into the pickle).
- `tflite_linear`: a one-op (FULLY_CONNECTED) .tflite file with a dynamic batch, written
  with the FlatBuffers schema classes that ship with LiteRT (ai_edge_litert).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def save_as_if_on_cuda(obj: Any, path: Path) -> None:
    """torch.save, with every storage's location tag written as 'cuda:0'."""
    import torch
    import torch.serialization

    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(obj, path)
    finally:
        torch.serialization.location_tag = original


def tflite_linear(path: Path, in_features: int = 8, out_features: int = 4, seed: int = 0) -> tuple[Any, Any]:
    """Write y = x @ W.T + b as a .tflite file with input [-1, in_features]; returns (W, b)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_features, in_features)).astype(np.float32)
    bias = rng.standard_normal(out_features).astype(np.float32)

    def buffer(data: Any = None) -> Any:
        made = tfl.BufferT()
        if data is not None:
            made.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
        return made

    def tensor(name: str, shape: tuple[int, ...], buffer_index: int, signature: tuple[int, ...] | None = None) -> Any:
        made = tfl.TensorT()
        made.name, made.shape, made.type, made.buffer = name, list(shape), tfl.TensorType.FLOAT32, buffer_index
        if signature is not None:
            made.shapeSignature = list(signature)  # -1: the batch may be any size
        return made

    code = tfl.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = tfl.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    op = tfl.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = tfl.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = tfl.FullyConnectedOptionsT()
    graph = tfl.SubGraphT()
    graph.tensors = [
        tensor("input", (1, in_features), 1, (-1, in_features)),
        tensor("weight", weight.shape, 2),
        tensor("bias", bias.shape, 3),
        tensor("output", (1, out_features), 4, (-1, out_features)),
    ]
    graph.inputs, graph.outputs, graph.operators, graph.name = [0], [3], [op], "main"
    model = tfl.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.description = 3, [code], [graph], "bench test"
    model.buffers = [buffer(), buffer(), buffer(weight), buffer(bias), buffer()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return weight, bias
