"""`load: mmap`: the model built on the meta device, its state_dict's tensors mapped from the file
(torch.load mmap=True) and adopted as they are: no copy of the weights at load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.checks import hygiene
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.model import build_fp32, fit_variant, load_state, named_call
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario


@register
class Mmap(Runtime):
    name = "mmap"
    artifact_format = "state_dict"
    module_modes = True
    generates = True

    def unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision == "int8_dynamic":
            return (
                "mmap cannot load int8_dynamic: dynamically quantized layers keep their weights in "
                "packed int8 objects that are rebuilt on load, so there is no tensor to map from the file"
            )
        return None

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        import torch

        # Build on the meta device (no memory, no init) and adopt the mapped tensors as they are.
        model = build_fp32(scenario, device="meta", with_weights=False, as_given=True)
        given = hygiene.given_facts(scenario, model)
        model.eval()
        state = torch.load(artifact_path, map_location="cpu", weights_only=True, mmap=True)
        load_state(fit_variant(scenario, model, state), state, assign=True)
        return named_call(scenario, model.eval()), given
