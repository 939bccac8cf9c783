"""`load: torchscript`: a traced and frozen TorchScript module (bench's artifact, or the user's file)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.checks import hygiene
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.model import positional_call
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario

_MODES = (
    "bench freezes its TorchScript artifacts: weights become constants (no parameter to require grad) and "
    "BatchNorm is folded into the convolutions in eval mode, so only grad_mode no_grad applies to load torchscript"
)


@register
class TorchScript(Runtime):
    name = "torchscript"
    artifact_format = "torchscript"

    def modes_unsupported(self, scenario: Scenario) -> str | None:
        return _MODES if (scenario.grad_mode, scenario.module_mode) != ("no_grad", "eval") else None

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        import torch

        module = torch.jit.load(str(artifact_path), map_location="cpu")
        # A user's TorchScript file may be in train mode; a factory's model reaches here as bench's
        # frozen artifact, which has no training flag to report.
        user_file = scenario.source is not None and scenario.source.kind == "torchscript"
        given = hygiene.given_facts(scenario, module) if user_file else {}
        module.eval()
        return positional_call(scenario, module), given
