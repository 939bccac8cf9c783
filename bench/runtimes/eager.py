"""`load: eager`: the model built in Python, its weights loaded from a state_dict, in the precision's
conversion (bench.runtimes.precisions); int8_static runs its PT2E program (bench.runtimes.quantization)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.checks import hygiene
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.model import build_fp32, fit_variant, load_state, named_call, positional_call
from bench.runtimes.precisions import PRECISIONS, convert
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario


def loads_program(scenario: Scenario) -> bool:
    """Whether the artifact is a PT2E program (int8_static) rather than a state_dict."""
    return PRECISIONS[scenario.precision].calibrated


def program_generation_reason(scenario: Scenario) -> str | None:
    """Why a PT2E program (int8_static) cannot generate, or None for a module (eager and compile)."""
    if not loads_program(scenario):
        return None
    return (
        f"not measured: {scenario.precision} under load {scenario.load} runs a PT2E (torch.export) program of "
        "one forward call with fixed inputs: it has no KV cache and no generate(); int8_weight_only generates"
    )


def load_program(scenario: Scenario, artifact_path: Path) -> Any:
    """The converted PT2E program, run as it is (its quantize/dequantize pairs in fp32 ops)."""
    import torch

    return positional_call(scenario, torch.export.load(str(artifact_path)).module())


def load_module(scenario: Scenario, artifact_path: Path) -> tuple[Any, dict[str, Any]]:
    """The architecture built without weights, put in the precision, its state_dict loaded; in eval()."""
    import torch

    state = torch.load(artifact_path, map_location="cpu", weights_only=True)
    model = build_fp32(scenario, with_weights=False, as_given=True)
    given = hygiene.given_facts(scenario, model)
    model.eval()
    model, facts = convert(fit_variant(scenario, model, state), scenario.precision)
    load_state(model, state)
    return model.eval(), {**facts, **given}


@register
class Eager(Runtime):
    name = "eager"
    artifact_format = "state_dict"
    module_modes = True
    generates = True

    def format_for(self, scenario: Scenario) -> str:
        return "exported_program" if loads_program(scenario) else self.artifact_format

    def generation_unsupported(self, scenario: Scenario) -> str | None:
        return program_generation_reason(scenario)

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        if loads_program(scenario):
            return load_program(scenario, artifact_path), {}
        model, facts = load_module(scenario, artifact_path)
        return named_call(scenario, model), facts
