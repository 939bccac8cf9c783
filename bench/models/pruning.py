"""Model variants made by pruning, applied to the fp32 model before precision conversion.

Three ways to remove a fraction of the weights, so that a suite shows which of them a
dense CPU kernel turns into speed:
- `pruned-l1-N`: unstructured, the N % smallest weights of every Linear/Conv layer set to
  zero (torch.nn.utils.prune.l1_unstructured, made permanent). The tensors keep their
  shape, so dense kernels do the same work.
- `shrunk-channels-N`: structured, the N % of a layer's output channels with the smallest
  L2 norm removed for real: the layer gets fewer output channels and the layer that consumes
  them fewer inputs, so the matrices are smaller. Done where a layer's output reaches
  exactly one next Linear/Conv through per-channel operations only (activations, pooling,
  batch norm); residual additions and reshapes keep their layers whole. The last layer (the
  model's outputs) is never shrunk.
- `pruned-channels-N`: the very channels that `shrunk-channels-N` removes, zeroed instead
  (the producer's rows and bias, the consumer's matching input columns): the same outputs
  as the shrunk model, with the dense shapes and the dense work. The pair isolates what
  removing the channels buys a dense kernel.

Both channel variants choose their channels once, from the weights as trained, so a chain
of layers loses the same channels either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

DENSE = "dense"
_VARIANT_RE = re.compile(r"^(pruned-l1|pruned-channels|shrunk-channels)-([1-9][0-9]?)$")
VARIANT_HELP = (
    "'dense', 'pruned-l1-N' (unstructured), 'pruned-channels-N' (channels zeroed) or "
    "'shrunk-channels-N' (channels removed), with N the percentage to prune, 1..99"
)


@dataclass(frozen=True)
class Variant:
    kind: str  # dense, pruned-l1, pruned-channels, shrunk-channels
    percent: int = 0

    @property
    def changes_shapes(self) -> bool:
        return self.kind == "shrunk-channels"


def parse_variant(text: Any) -> Variant:
    """A Variant from its suite spelling; ValueError with what is expected otherwise."""
    if text == DENSE:
        return Variant(DENSE)
    match = _VARIANT_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"expected {VARIANT_HELP}, got {text!r}")
    return Variant(match.group(1), int(match.group(2)))


def apply_variant(model: Any, variant: Variant) -> tuple[Any, dict[str, Any]]:
    """The model pruned as `variant` says (in place), and facts for the record."""
    if variant.kind == DENSE:
        return model, {}
    from torch.nn.utils import prune

    amount = variant.percent / 100
    layers = _weight_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer to prune")
    parameters_before = _parameter_count(model)
    if variant.kind == "pruned-l1":
        for module in layers:
            prune.l1_unstructured(module, "weight", amount=amount)
            prune.remove(module, "weight")  # permanent: a plain tensor with zeros, saved like any other
        facts = {"pruned_layers": len(layers)}
    else:
        plan = _channel_plan(model, amount)
        if not plan:
            raise ValueError(
                "no layer of this model can lose channels: every Linear/Conv output reaches a residual "
                "addition, a reshape or the model's output rather than exactly one next layer"
            )
        (_shrink_channels if variant.kind == "shrunk-channels" else _zero_channels)(model, plan)
        facts = {"pruned_layers": len(plan)}
    pruned = _weight_layers(model)  # shrinking replaced some of `layers`
    zeros = sum(int((m.weight == 0).sum()) for m in pruned)
    weights = sum(m.weight.numel() for m in pruned)
    facts.update(
        weight_sparsity=zeros / weights,
        parameters_before=parameters_before,
        parameters_after=_parameter_count(model),
    )
    return model, facts


def fit_to_state_dict(model: Any, state: dict[str, Any]) -> Any:
    """Resize the model's layers to a shrunk state_dict's shapes, so that load_state_dict takes it.

    `state` may be the int8_dynamic model's: its Linear weights are read from the packed params,
    so the fp32 model can be fitted before it is quantized."""
    from torch import nn

    for name, module in list(model.named_modules()):
        prefix = f"{name}." if name else ""
        weight = state.get(f"{prefix}weight")
        packed = state.get(f"{prefix}_packed_params._packed_params")  # a dynamically quantized Linear
        if weight is None and isinstance(packed, tuple):
            weight = packed[0]
        if weight is None or not hasattr(module, "weight") or module.weight.shape == weight.shape:
            continue
        factory = {"device": module.weight.device, "dtype": module.weight.dtype}
        if isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None, **factory)
        elif isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                weight.shape[1] * module.groups,
                weight.shape[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                module.bias is not None,
                module.padding_mode,
                **factory,
            )
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            new = type(module)(weight.shape[0], module.eps, module.momentum, module.affine, **factory)
        else:
            continue
        _set_submodule(model, name, new.train(module.training))  # a new layer starts in training mode
    return model


def _weight_layers(model: Any) -> list[Any]:
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]


def _parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ChannelCut:
    producer: str  # the layer whose output channels go
    per_channel: list[str]  # batch norms between it and the consumer, cut alike
    consumer: str  # the layer that reads those channels
    keep: Any  # sorted indices of the producer's output channels that stay


def _channel_plan(model: Any, amount: float) -> list[ChannelCut]:
    """Per layer that feeds exactly one next layer: its output channels with the largest L2
    norm, 1 - `amount` of them, from the weights before any change."""
    import torch

    plan = []
    for producer, per_channel, consumer in _producer_consumer_pairs(model):
        norms = model.get_submodule(producer).weight.detach().flatten(1).norm(dim=1)
        keep_count = max(1, round(norms.numel() * (1 - amount)))
        keep = torch.sort(torch.topk(norms, keep_count).indices).values
        plan.append(ChannelCut(producer, per_channel, consumer, keep))
    return plan


def _shrink_channels(model: Any, plan: list[ChannelCut]) -> None:
    for cut in plan:  # in a chain a layer is a consumer, then a producer: rows and columns are cut apart
        for name in (cut.producer, *cut.per_channel):
            _slice_outputs(model, name, cut.keep)
        _slice_inputs(model, cut.consumer, cut.keep)


def _zero_channels(model: Any, plan: list[ChannelCut]) -> None:
    import torch

    with torch.no_grad():
        for cut in plan:
            producer, consumer = model.get_submodule(cut.producer), model.get_submodule(cut.consumer)
            dropped = torch.ones(producer.weight.shape[0], dtype=torch.bool)
            dropped[cut.keep] = False
            producer.weight[dropped] = 0
            if producer.bias is not None:
                producer.bias[dropped] = 0
            consumer.weight[:, dropped] = 0  # what a batch norm or bias makes of a zero channel goes no further


def _producer_consumer_pairs(model: Any) -> list[tuple[str, list[str], str]]:
    """(producer, per-channel modules between, consumer) found by tracing the model with torch.fx."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import fx, nn

    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - control flow fx cannot trace: nothing is shrunk, said by the caller
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    per_channel_modules = (
        nn.ReLU,
        nn.ReLU6,
        nn.GELU,
        nn.SiLU,
        nn.Hardswish,
        nn.Dropout,
        nn.Identity,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.BatchNorm1d,
        nn.BatchNorm2d,
    )
    per_channel_functions = {F.relu, F.gelu, F.silu, torch.relu, F.dropout}

    def is_layer(node: Any) -> bool:
        module = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            return module.groups == 1
        return isinstance(module, nn.Linear)

    pairs = []
    for node in graph.nodes:
        if not is_layer(node) or calls[node.target] != 1:
            continue
        between: list[str] = []
        current = node
        while len(current.users) == 1:
            (user,) = current.users
            if user.args[:1] != (current,):
                break
            if is_layer(user):
                kinds = {type(modules[node.target]), type(modules[user.target])}
                if len(kinds) == 1 and calls[user.target] == 1:  # Linear->Linear or Conv->Conv
                    pairs.append((node.target, between, user.target))
                break
            if user.op == "call_module" and isinstance(modules[user.target], per_channel_modules):
                if isinstance(modules[user.target], nn.BatchNorm1d | nn.BatchNorm2d):
                    between.append(user.target)
            elif not (user.op == "call_function" and user.target in per_channel_functions):
                break
            current = user
    return pairs


def _slice_outputs(model: Any, name: str, keep: Any) -> None:
    from torch import nn

    module = model.get_submodule(name)
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        new = type(module)(len(keep), module.eps, module.momentum, module.affine)
        for attribute in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, attribute).data = getattr(module, attribute).data[keep].clone()
        new.num_batches_tracked = module.num_batches_tracked
    else:
        new = _resized(module, out_channels=len(keep))
        new.weight.data = module.weight.data[keep].clone()
        if module.bias is not None:
            new.bias.data = module.bias.data[keep].clone()
    _set_submodule(model, name, new.eval())


def _slice_inputs(model: Any, name: str, keep: Any) -> None:
    module = model.get_submodule(name)
    new = _resized(module, in_channels=len(keep))
    new.weight.data = module.weight.data[:, keep].clone()
    if module.bias is not None:
        new.bias.data = module.bias.data.clone()
    _set_submodule(model, name, new.eval())


def _resized(module: Any, *, in_channels: int | None = None, out_channels: int | None = None) -> Any:
    from torch import nn

    weight = module.weight
    out_count = out_channels if out_channels is not None else weight.shape[0]
    in_count = in_channels if in_channels is not None else weight.shape[1]
    if isinstance(module, nn.Linear):
        return nn.Linear(in_count, out_count, bias=module.bias is not None)
    return nn.Conv2d(
        in_count,
        out_count,
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        1,
        module.bias is not None,
        module.padding_mode,
    )


def _set_submodule(model: Any, name: str, module: Any) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
