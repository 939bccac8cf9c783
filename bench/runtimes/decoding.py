"""Generation outside torch: a causal LM exported with its KV cache as inputs and outputs, and the
step models that bench's greedy loop drives (bench.checks.generation.greedy_decode).

The export (`prepare_with_past`: in the parent, fp32, cached like any artifact) wraps the transformers
module so that its cache is plain tensors. Inputs: `input_ids`, `attention_mask` (the past and the new
tokens), `position_ids`, and per layer `past_key_<i>`, `past_value_<i>` ([batch, heads, past, head_dim],
past 0 for the prompt); outputs: `logits` (the last position's only) and `present_key_<i>`,
`present_value_<i>`. It is the TorchScript exporter's trace, as bench's other ONNX files.

- ONNX Runtime runs that file and feeds each present back as the next past (`OrtSteps`).
- OpenVINO reads the same file (as its forward path reads ONNX Runtime's fp32 file) and its
  MakeStateful transformation turns each past/present pair into a state that the compiled model keeps
  between calls (`OpenVINOSteps`): the cache stays inside the plugin, and `reset_state()` starts a new
  prompt. The batch is fixed to the scenario's first, so each state starts as an empty
  [batch, heads, 0, head_dim] tensor.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from bench.errors import Unsupported
from bench.models.artifacts import Artifact, cached_artifact, file_sha256
from bench.runtimes.model import build_fp32, file_stem, model_key
from bench.suite.scenarios import Scenario

STEP_INPUTS = ("input_ids", "attention_mask", "position_ids")
LOGITS = "logits"


def past_names(layers: int) -> list[str]:
    return [f"past_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present_{kind}_{i}" for i in range(layers) for kind in ("key", "value")]


def _flat_cache_module(model: Any) -> Any:
    """The transformers causal LM as a module of plain tensors: the past in, the last logits and the present out."""
    import torch
    from transformers import DynamicCache

    class FlatCache(torch.nn.Module):
        def __init__(self, lm: Any) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(config=self.lm.config)
            for i, layer in enumerate(cache.layers):
                # filled as if updated, so the trace concatenates the given past (an empty cache would start from a
                # 1-D placeholder that OpenVINO's converter refused: "Axis -2 out of the tensor rank range")
                layer.dtype, layer.device = past[2 * i].dtype, past[2 * i].device
                layer.keys, layer.values, layer.is_initialized = past[2 * i], past[2 * i + 1], True
            out = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits[:, -1, :], *present)

    return FlatCache(model).eval()


def write_with_past_onnx(scenario: Scenario, path: Path) -> dict[str, Any]:
    """Export the fp32 causal LM with its past as inputs and outputs (batch, sequence and past axes dynamic)."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    model = build_fp32(scenario)
    if not hasattr(model, "generate"):
        raise Unsupported(f"model {scenario.model} has no transformers generate(): it is not a causal LM to decode")
    kinds = {type(layer).__name__ for layer in DynamicCache(config=model.config).layers}
    if kinds != {DynamicLayer.__name__}:  # a sliding-window or linear-attention layer keeps other state
        raise Unsupported(
            f"the with-past export takes models whose cache layers are all full attention (DynamicLayer); "
            f"{scenario.model} has {', '.join(sorted(kinds))}"
        )
    batch, past = 1, 3
    with torch.inference_mode():  # the cache's shapes per layer, read off a real call
        probe = model(input_ids=torch.zeros(batch, past, dtype=torch.long), use_cache=True).past_key_values
    shapes = [tuple(t.shape) for layer in probe.layers for t in (layer.keys, layer.values)]
    layers = len(shapes) // 2
    example = (
        torch.ones(batch, 1, dtype=torch.long),
        torch.ones(batch, past + 1, dtype=torch.long),
        torch.full((batch, 1), past, dtype=torch.long),
        *(torch.zeros(shape) for shape in shapes),
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in STEP_INPUTS}
    axes |= {name: {0: "batch", 2: "past"} for name in past_names(layers)}
    axes |= {name: {0: "batch", 2: "total"} for name in present_names(layers)}
    axes[LOGITS] = {0: "batch"}
    with warnings.catch_warnings():  # the exporter's deprecation and the trace's Python-value warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _flat_cache_module(model),
            example,
            str(path),
            dynamo=False,
            input_names=[*STEP_INPUTS, *past_names(layers)],
            output_names=[LOGITS, *present_names(layers)],
            dynamic_axes=axes,
        )
    return {"layers": layers}


def prepare_with_past(scenario: Scenario, cache_dir: Path) -> Artifact:
    """The fp32 with-past ONNX file of the scenario's causal LM (cached by model and by this module's code)."""
    import onnxruntime

    key = {
        **model_key(scenario),
        "kind": "with_past_onnx",
        "onnxruntime": onnxruntime.__version__,
        "decoding_code_sha256": file_sha256(Path(__file__)),
    }
    return cached_artifact(
        cache_dir, key, f"{file_stem(scenario)}-with-past.onnx", lambda path: write_with_past_onnx(scenario, path)
    )


def step_weight_bytes(path: Path) -> int:
    """The weights one decode step of the with-past file reads: every initializer's bytes but those of tables
    only gathered from (an embedding gives one row per token). The file itself is larger than the weights a
    step reads: GPT-2's tied lm_head is its token embedding once in torch, twice in the export (652 MB
    against 498 MB for GPT-2-small), and the embedding copy is only gathered from."""
    import numpy as np
    import onnx
    from onnx import helper

    graph = onnx.load(str(path)).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return sum(
        int(np.prod(init.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        for init in graph.initializer
        if consumers.get(init.name) != {"Gather"}
    )


class OrtSteps:
    """ONNX Runtime's session over the with-past file: each step's present is the next step's past."""

    def __init__(self, session: Any, batch_size: int) -> None:
        import numpy as np

        self.session = session
        self.past_names = [i.name for i in session.get_inputs() if i.name.startswith("past_")]
        self.outputs = [LOGITS, *(name.replace("past_", "present_", 1) for name in self.past_names)]
        self.empty = {
            i.name: np.zeros((batch_size, i.shape[1], 0, i.shape[3]), dtype=np.float32)
            for i in session.get_inputs()
            if i.name in self.past_names
        }
        self.past = dict(self.empty)

    def reset(self) -> None:
        self.past = dict(self.empty)

    def step(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, **self.past}
        logits, *present = self.session.run(self.outputs, feeds)
        self.past = dict(zip(self.past_names, present, strict=True))
        return logits

    def kv_cache_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.past.values())


def make_stateful(model: Any, batch_size: int) -> None:
    """Fix the batch, then make every past/present pair a state of the model (OpenVINO's MakeStateful)."""
    from openvino.passes import MakeStateful, Manager

    shapes = {}
    for port in model.inputs:
        shape = port.get_partial_shape()
        shape[0] = batch_size
        shapes[port.any_name] = shape
    model.reshape(shapes)
    parameters = {p.output(0).any_name: p for p in model.get_parameters()}
    results = {port.any_name: result for port, result in zip(model.outputs, model.get_results(), strict=True)}
    pairs = [
        (parameters[name], results[name.replace("past_", "present_", 1)])
        for name in parameters
        if name.startswith("past_")
    ]
    manager = Manager()
    manager.register_pass(MakeStateful(pairs))
    manager.run_passes(model)


class OpenVINOSteps:
    """OpenVINO's stateful model: the cache lives in the infer request's states between steps."""

    def __init__(self, request: Any) -> None:
        self.request = request

    def reset(self) -> None:
        self.request.reset_state()

    def step(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        return self.request.infer(feeds, share_outputs=False)[LOGITS]

    def kv_cache_bytes(self) -> int:
        return sum(int(state.state.byte_size) for state in self.request.query_state())
