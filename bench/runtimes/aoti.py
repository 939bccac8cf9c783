"""`load: aoti`: `torch._inductor.aoti_compile_and_package` of the torch.export program in the parent
(the artifact: its compile time is `artifact_prepare_s`, bench.runtimes.formats), `aoti_load_package`
in the worker (`load_s`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.runtimes.base import Infer, Runtime
from bench.runtimes.compile import frozen_modes_reason, import_inductor, no_compiler_reason
from bench.runtimes.model import positional_call
from bench.runtimes.registry import register

if TYPE_CHECKING:
    from bench.suite.scenarios import Scenario


@register
class AOTInductor(Runtime):
    name = "aoti"
    artifact_format = "aoti_package"

    def unsupported(self, scenario: Scenario) -> str | None:
        if (reason := no_compiler_reason(scenario)) is not None:
            return reason
        if scenario.precision == "int8_dynamic":
            return (
                "AOTInductor compiles a torch.export program, and torch.export cannot export int8_dynamic: "
                "the packed weights of dynamically quantized Linear layers are not exportable objects"
            )
        return None

    def modes_unsupported(self, scenario: Scenario) -> str | None:
        return frozen_modes_reason(scenario)

    def import_libraries(self, scenario: Scenario) -> None:
        import_inductor()

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        import torch

        runner = torch._inductor.aoti_load_package(str(artifact_path))
        # the package was exported from inputs.positional: named inputs go in their order
        return positional_call(scenario, runner), {
            "compiled": {"compiler": "aot_inductor", "version": torch.__version__}
        }
