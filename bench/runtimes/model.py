"""The model side every runtime shares: building the scenario's torch model (a name, a source, a
pruned variant), its seeded inputs as the runtime takes them, its state file, the key that decides
its artifacts, calibration inputs and fidelity's inputs.

Everything here is the same for every load mode; what differs per load mode is asked of its
runtime (bench.runtimes.registry): `to_input` for the container and dtype a runtime takes.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.checks.fidelity import FIDELITY_INPUTS, TOKEN_FIDELITY_INPUTS
from bench.errors import Unsupported
from bench.models import catalog as models
from bench.models import hf, pruning, sources
from bench.models.artifacts import file_sha256
from bench.models.sources import SourceError
from bench.runtimes.registry import runtime_for
from bench.suite import calibration, inputs
from bench.suite.scenarios import Scenario


def to_runtime_input(scenario: Scenario, batch: Any) -> Any:
    """A torch batch as the scenario's runtime takes it (Runtime.to_input)."""
    return runtime_for(scenario).to_input(scenario, batch)


def make_batch(scenario: Scenario, batch_size: int | None = None) -> Any:
    """The seeded input batch, in the dtype and container the scenario's runtime takes."""
    size = batch_size or scenario.batch_size
    if named_inputs(scenario):
        return to_runtime_input(scenario, sample_inputs(scenario, size, scenario.seed, skip=0))
    batch = models.make_input(scenario.input_shape, size, scenario.seed)
    return to_runtime_input(scenario, batch)


def generation_prompts(scenario: Scenario) -> dict[str, Any]:
    """The prompts `generate:` continues: the timed batch's named inputs as torch tensors (int64 token ids and
    mask), the same in the worker and for fp32 eager's reference tokens in the parent."""
    return sample_inputs(scenario, scenario.batch_size, scenario.seed, skip=0)


def named_inputs(scenario: Scenario) -> tuple[inputs.InputSpec, ...]:
    """The model's named inputs (bench.suite.inputs); empty for a model fed one float tensor."""
    return scenario.source.inputs if scenario.source is not None else ()


def sample_inputs(scenario: Scenario, count: int, seed: int, skip: int) -> dict[str, Any]:
    """`count` samples of named inputs: with `text:`, sentences from the `skip`-th on, tokenized (the
    timed batch starts at the first, fidelity's after it); else drawn with `seed` as the specs say."""
    source = scenario.source
    assert source is not None
    if source.text:
        return hf.tokenize(source, source.inputs, count, scenario.seq_len or 0, skip)
    return inputs.make_inputs(source.inputs, count, scenario.seq_len, seed)


def inputs_record(scenario: Scenario) -> dict[str, Any]:
    """The record's seq_len, named_inputs and task (all null for a model fed one float tensor)."""
    specs = named_inputs(scenario)
    source = scenario.source
    return {
        "seq_len": scenario.seq_len,
        "named_inputs": [
            {"name": s.name, "shape": list(s.sample_shape(scenario.seq_len)), "dtype": s.dtype} for s in specs
        ]
        or None,
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


def fit_variant(scenario: Scenario, model: Any, state: dict[str, Any]) -> Any:
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
    info = {
        "kind": source.kind,
        "path": source.path,
        "bytes": None,
        "sha256": None,
        "architecture": source.architecture,
    }
    try:
        facts = sources.source_facts(source)
    except SourceError:
        return info
    return {**info, "path": facts.path, "bytes": facts.bytes, "sha256": facts.sha256}


_BUFFERS = "__bench_buffers__."  # non-persistent buffers, kept in the state file under this prefix


def state_with_buffers(model: Any) -> dict[str, Any]:
    """The state_dict plus the buffers it leaves out (persistent=False, e.g. transformers' position
    ids): a model built on the meta device for mmap has no other way to get them."""
    state = model.state_dict()  # itself: its _metadata tells quantized layers how to load
    for name, buffer in model.named_buffers():
        if name not in state and buffer is not None:
            state[_BUFFERS + name] = buffer
    return state


def load_state(model: Any, state: dict[str, Any], *, assign: bool = False) -> None:
    """load_state_dict, then the non-persistent buffers `state_with_buffers` kept."""
    buffers = {k[len(_BUFFERS) :]: state.pop(k) for k in [k for k in state if k.startswith(_BUFFERS)]}
    model.load_state_dict(state, assign=assign)
    for name, value in buffers.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        owner.register_buffer(leaf, value, persistent=False)


def positional_call(scenario: Scenario, module: Any) -> Any:
    """A program exported or traced from inputs.positional is called with named inputs in their order."""
    names = tuple(spec.name for spec in named_inputs(scenario))
    return inputs.PositionalRun(module, names) if names else module


def named_call(scenario: Scenario, model: Any) -> Any:
    """A module fed named inputs is called with keywords (inputs.KeywordCall); others as they are."""
    return inputs.KeywordCall(model, output_of(scenario)) if named_inputs(scenario) else model


def file_stem(scenario: Scenario) -> str:
    """An artifact's file name: the model's name, or a source's content (its cache entry is found by content)."""
    source = scenario.source
    return f"{source.kind}-{sources.source_facts(source).sha256[:16]}" if source else scenario.model


def model_key(scenario: Scenario) -> dict[str, Any]:
    """What decides a model's weights and graph: name (or the source's content), seed, and the code that builds it."""
    import torch

    source = scenario.source
    architecture = source.architecture if source else scenario.model
    key: dict[str, Any] = {"model": scenario.model, "seed": scenario.seed, "torch": torch.__version__}
    if source is not None:  # by content, never by name or path: a renamed or moved file is the same model
        key = {
            "source": source.kind,
            "architecture": architecture,
            "kwargs": source.kwargs,
            "seed": scenario.seed,
            "torch": torch.__version__,
            "sources_code_sha256": file_sha256(Path(sources.__file__)),
            "source_sha256": sources.source_facts(source).sha256,
        }
        if architecture and sources.is_factory(architecture):
            key["factory_module_sha256"] = sources.factory_file(source).sha256
        if source.kind == "hf":
            key.update(
                task=source.task,
                random_weights=source.random_weights,
                hf_code_sha256=file_sha256(Path(hf.__file__)),
                transformers=importlib.metadata.version("transformers"),
            )
    if scenario.variant != pruning.DENSE:
        key["variant"] = scenario.variant
        key["pruning_code_sha256"] = file_sha256(Path(pruning.__file__))
    if architecture in models.BUILTIN:
        key["models_source_sha256"] = file_sha256(Path(models.__file__))
    elif architecture and not sources.is_factory(architecture):
        key["torchvision"] = importlib.metadata.version("torchvision")
    return key


def calibration_spec(scenario: Scenario) -> calibration.CalibrationSpec:
    return scenario.calibration or calibration.CalibrationSpec()


def calibration_batches(scenario: Scenario) -> list[Any]:
    """The scenario's calibration inputs, fp32 batches as the torch model takes them."""
    spec = calibration_spec(scenario)
    return calibration.calibration_batches(
        spec, scenario.input_shape, scenario.data, scenario.source, scenario.seq_len, scenario.seed
    )


def calibration_feeds(scenario: Scenario) -> list[dict[str, Any]]:
    """The calibration inputs as an ONNX model takes them: numpy arrays by input name."""
    batches = [to_runtime_input(scenario, b) for b in calibration_batches(scenario)]
    return [b if isinstance(b, dict) else {"input": b} for b in batches]


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
