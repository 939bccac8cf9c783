"""The shape of a load mode.

A load mode (`load:` in a suite) is a `Runtime` subclass in its own module of this package,
registered with `@register` (bench.runtimes.registry): its name, the artifact format it loads,
what it cannot run and why (`unsupported`), how its artifact is prepared in the parent
(`prepare`) and loaded in the worker (`load`), the input it takes (`to_input`), and the facts the
rest of bench asks of it (its engine, whether grad and module modes apply, whether and how it
generates (`generation_unsupported`, `prepare_generation`, `decoder`), its profiler, whether it
compiles on its first call). Every "can this pair run, and if not why"
answer comes from the runtimes and precisions (bench.runtimes), never from a `load ==` test
elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.checks import generation
from bench.errors import Unsupported
from bench.runtimes import formats, precisions
from bench.runtimes.registry import RUNTIMES

if TYPE_CHECKING:
    from bench.models.artifacts import Artifact
    from bench.suite.scenarios import Scenario

Infer = Callable[[Any], Any]


def _no_cleanup() -> None:
    return None


class Runtime:
    """One load mode. Subclasses set the class attributes and implement `load`; the defaults are a
    torch runtime that prepares its artifact as bench does for its format (bench.runtimes.formats)."""

    name: ClassVar[str]  # the `load:` value
    artifact_format: ClassVar[str]  # the record's artifact_format (a precision may change it: format_for)
    engine: ClassVar[str] = "torch"  # the record's `runtime`: the library that runs the model
    takes_numpy: ClassVar[bool] = False  # inputs go in as numpy arrays rather than torch tensors
    module_modes: ClassVar[bool] = False  # an nn.Module in Python: grad_mode and module_mode both apply
    generates: ClassVar[bool] = False  # `generate:` can run under it (for some precisions: generation_unsupported)
    compiles_on_first_call: ClassVar[bool] = False  # the worker times the first call apart, as compile_s
    profiler: ClassVar[str | None] = "torch"  # bench.profile.profiler's profiler for it: torch, onnxruntime, or None
    no_profiler: ClassVar[str] = ""  # why there is none, when profiler is None

    def format_for(self, scenario: Scenario) -> str:
        """The format of the artifact this scenario loads."""
        return self.artifact_format

    def unsupported(self, scenario: Scenario) -> str | None:
        """This runtime's own reasons, known without trying, for a model bench builds (None: it may run)."""
        return None

    def file_unsupported(self, scenario: Scenario) -> str | None:
        """This runtime's reasons for a compiled file given as the model source, in its saved precision."""
        return None

    def modes_unsupported(self, scenario: Scenario) -> str | None:
        """Why the scenario's non-default grad_mode or module_mode cannot apply here (called only for those):
        both apply to a module in Python (`module_modes`); any other runtime says why not."""
        if self.module_modes:
            return None
        return (
            f"grad_mode and module_mode apply to torch modules (load eager, mmap, export, torchscript); load "
            f"{scenario.load} runs the model outside torch, with no autograd and no training mode"
        )

    def import_libraries(self, scenario: Scenario) -> None:
        """Import what loading will need, before the timed load (`load_s` measures loading, not imports)."""
        return None

    def prepare(self, scenario: Scenario, cache_dir: Path) -> Artifact:
        """Write (or reuse) the artifact this scenario loads, in the parent, for a model bench builds."""
        return formats.prepare_built(scenario, cache_dir, self.format_for(scenario))

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        """From file to a ready `infer(batch)`, plus facts for the record; the whole call is `load_s`."""
        raise NotImplementedError(f"load mode {self.name} has no load()")

    def to_input(self, scenario: Scenario, batch: Any) -> Any:
        """A torch batch (a tensor, or a dict of named inputs) as this runtime takes it: float tensors in
        the precision's dtype, and numpy arrays for a runtime outside torch."""
        if isinstance(batch, dict):
            return {name: self.tensor_input(scenario, value) for name, value in batch.items()}
        return self.tensor_input(scenario, batch)

    def tensor_input(self, scenario: Scenario, tensor: Any) -> Any:
        """One tensor of the batch as this runtime takes it."""
        if tensor.is_floating_point():
            tensor = precisions.cast(tensor, scenario.precision)
        return tensor.numpy() if self.takes_numpy else tensor

    def set_up_process(self, scenario: Scenario, artifact_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
        """Process settings to make before anything loads, in the worker or the profile child: facts for
        the record, and a cleanup to run when the process ends."""
        return {}, _no_cleanup

    def generation_unsupported(self, scenario: Scenario) -> str | None:
        """Why `generate:` cannot run under this load mode and precision, known without trying (None: it may)."""
        if self.generates:
            return None
        loads = ", ".join(name for name, runtime in RUNTIMES.items() if runtime.generates)
        return f"not measured: load {scenario.load} has no way to generate in bench (loads that do: {loads})"

    def prepare_generation(self, scenario: Scenario, cache_dir: Path) -> Artifact | None:
        """The artifact generation loads when it is not the timed one (a with-past export), in the parent."""
        return None

    def decoder(
        self, scenario: Scenario, infer: Infer, prompt: dict[str, Any], artifact_path: Path | None
    ) -> generation.Decoder:
        """How this runtime generates the scenario's new tokens after `prompt` (torch tensors): by default the
        loaded transformers module's own `generate` with its dynamic KV cache. Raises Unsupported, with why,
        when the loaded model has no generate()."""
        policy = scenario.generate
        assert policy is not None
        module = getattr(infer, "module", None)
        if module is None or not hasattr(module, "generate"):
            raise Unsupported(
                f"not measured: the {scenario.precision} model loaded by load {scenario.load} has no transformers "
                "generate() (a causal LM from a Hugging Face folder has one)"
            )
        decode = generation.hf_decode(module, prompt, policy.new_tokens)
        return generation.Decoder("transformers generate(), dynamic KV cache", decode, module=module)

    def first_call(self, infer: Infer, batch: Any) -> dict[str, Any]:
        """For a runtime that compiles on its first call: run it, return {compile_s, graphs}."""
        raise NotImplementedError(f"load mode {self.name} does not compile on its first call")
