"""Inference hygiene: a torch model called in the scenario's grad mode and module mode, and what that changes.

The right way to run a torch model for inference is eval() under torch.inference_mode(), and
every scenario runs so by default. `grad_mode` (no_grad, enabled) and `module_mode` (train)
measure what forgetting it costs: with grad enabled, autograd records a graph on every call and
keeps the tensors it saves for backward alive until the output is dropped (memory and time);
in training mode Dropout is active and BatchNorm normalises with the batch's own statistics
(and updates its running ones on every call), so outputs change.

The worker runs its whole life (load, first call, warmup, timed calls, fidelity) inside
`grad_context`: a model loaded under inference_mode holds inference tensors that autograd
refuses to use afterwards, and one mode for everything keeps the phases comparable.
torch is imported lazily, as elsewhere.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

from bench.checks.fidelity import compare
from bench.models import sources
from bench.suite.scenarios import GRAD_MODES, MODULE_MODES, Scenario

DEFAULT_GRAD_MODE, DEFAULT_MODULE_MODE = GRAD_MODES[0], MODULE_MODES[0]


def is_default(scenario: Scenario) -> bool:
    return (scenario.grad_mode, scenario.module_mode) == (DEFAULT_GRAD_MODE, DEFAULT_MODULE_MODE)


def grad_context(grad_mode: str) -> contextlib.AbstractContextManager[Any]:
    """The context every call of a scenario runs in."""
    import torch

    if grad_mode == "inference_mode":
        return torch.inference_mode()
    if grad_mode == "no_grad":
        return torch.no_grad()
    return torch.enable_grad()  # `enabled`: a plain call, as in code that forgot both


def _requiring_grad(module: Any) -> int:
    return sum(1 for p in module.parameters() if p.requires_grad)


def given_facts(scenario: Scenario, module: Any) -> dict[str, Any]:
    """The user's module as their factory or TorchScript file gave it, before bench puts it in eval():
    {"hygiene": {given_training, given_parameters_requiring_grad}}; {} for models bench builds itself."""
    source = scenario.source
    if source is None or not (source.kind == "torchscript" or sources.is_factory(source.architecture or "")):
        return {}
    given = {"given_training": bool(module.training), "given_parameters_requiring_grad": _requiring_grad(module)}
    return {"hygiene": given}


def _module(infer: Any) -> Any:
    """The torch module behind `infer`: a model fed named inputs is called through a wrapper
    (bench.suite.inputs.KeywordCall / PositionalRun) that holds it as `.module`."""
    return getattr(infer, "module", infer)


def prepare(scenario: Scenario, infer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Put the loaded (eval-mode) model in the scenario's module mode.

    Returns a copy of its buffers when it goes into training mode (BatchNorm's running
    statistics move with every call; `check` restores them for the default outputs), and
    facts for the record."""
    import torch

    module = _module(infer)
    if not isinstance(module, torch.nn.Module):
        return {}, {}
    saved: dict[str, Any] = {}
    if scenario.module_mode == "train":
        saved = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
        module.train()
    return saved, {"parameters_requiring_grad": _requiring_grad(module)}


def autograd_saved_bytes(module: Any, call: Callable[[], Any]) -> tuple[int | None, int]:
    """Bytes of the distinct storages autograd saved for backward during `call()`, and how many.

    Storages of the module's own parameters and buffers are left out: the model holds them
    anyway; what remains (activations, mostly) lives only because of the graph. None when a
    saved tensor has no storage to measure (an opaque or quantized tensor)."""
    import torch

    owned = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
    seen: dict[int, int] = {}
    opaque = False

    def pack(tensor: Any) -> Any:
        nonlocal opaque
        try:
            storage = tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):
            opaque = True
            return tensor
        if storage.data_ptr() not in owned:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = call()
    del output  # the graph (and what it saved) goes with it
    return (None if opaque else sum(seen.values())), len(seen)


@contextlib.contextmanager
def default_mode(scenario: Scenario, module: Any) -> Iterator[None]:
    """The model in eval() under inference_mode for a while, then back in the scenario's modes."""
    import torch

    # Only a module in training mode moves (only load modes with Runtime.module_modes admit it,
    # bench.runtimes); every other, an exported or TorchScript one included, stays as loaded (eval).
    switch = scenario.module_mode == "train"
    if switch:
        module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if switch:
            module.train(scenario.module_mode == "train")


def _as_tensor(output: Any) -> Any:
    import torch

    return torch.as_tensor(output).detach().float()


def check(scenario: Scenario, infer: Any, inputs: Any, batch: Any, saved_buffers: dict[str, Any]) -> dict[str, Any]:
    """After the timed calls, in the scenario's modes: do outputs repeat over two calls on the same
    inputs; for grad_mode enabled, what one call on the timed batch saved for backward; and for a
    non-default row, its outputs against the same model in eval() under inference_mode."""
    import torch

    first, second = _as_tensor(infer(inputs)), _as_tensor(infer(inputs))
    difference = float((first - second).abs().max()) if first.numel() else 0.0
    facts: dict[str, Any] = {
        "outputs_repeat": bool(torch.equal(first, second)),
        "repeat_max_abs_diff": difference if math.isfinite(difference) else None,
    }
    module = _module(infer)
    if scenario.grad_mode == "enabled" and isinstance(module, torch.nn.Module):
        saved_bytes, tensors = autograd_saved_bytes(module, lambda: infer(batch))
        facts.update(autograd_saved_bytes=saved_bytes, autograd_saved_tensors=tensors)
    if is_default(scenario) or not isinstance(module, torch.nn.Module):
        return facts
    if saved_buffers:  # eval() after the train-mode calls, with the running statistics they left
        with default_mode(scenario, module):
            after_train = _as_tensor(infer(inputs))
        with torch.no_grad():
            for name, buffer in module.named_buffers():
                buffer.copy_(saved_buffers[name])
    with default_mode(scenario, module):
        default = _as_tensor(infer(inputs))
    facts["vs_default"] = compare(first, default)
    if saved_buffers:
        facts["eval_after_train_vs_default"] = compare(after_train, default)
    return facts
