"""`load: export`: a torch.export program (bench's artifact, or the user's .pt2), its module() called."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.runtimes.base import Infer, Runtime
from bench.runtimes.model import positional_call
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario

_TRAIN = (
    "an exported program's graph is captured in eval mode (torch.export.load(...).module().train() raises "
    "'not supported'); module_mode train applies to load eager and mmap"
)


@register
class Export(Runtime):
    name = "export"
    artifact_format = "exported_program"

    def unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision == "int8_dynamic":
            return (
                "torch.export cannot export int8_dynamic: the packed weights of dynamically quantized Linear "
                "layers are not exportable objects (torch 2.14: LinearPackedParamsBase has no __obj_flatten__)"
            )
        return None

    def modes_unsupported(self, scenario: Scenario) -> str | None:
        return _TRAIN if scenario.module_mode == "train" else None

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        import torch

        return positional_call(scenario, torch.export.load(str(artifact_path)).module()), {}
