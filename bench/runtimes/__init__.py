"""Runtimes: how each (precision, load mode) pair is prepared on disk, loaded for inference, or refused.

One module per load mode (`eager`, `mmap`, `torchscript`, `export`, `onnxruntime`, `compile`,
`aoti`, `openvino`, `litert`, `executorch`), each a `Runtime` (bench.runtimes.base) registered in `RUNTIMES`
(bench.runtimes.registry); one table of precisions (`PRECISIONS`, bench.runtimes.precisions).
The functions here are what the rest of bench asks:

- `unsupported_reason`: why a scenario cannot run, known without trying (None: it may), in a
  fixed order: the grad and module modes, the model source, the precision, the load mode. A pair
  found out only by trying raises `Unsupported`; either way the row is `unsupported`, never a
  crash or a gap.
- `prepare_artifact` (the parent, once per model, precision and format; cached) and `load_model`
  (the worker, inside the timed load phase: a callable that runs one inference on one batch).
- `runtime_of`, `artifact_format` for the record; `make_batch`, `to_runtime_input` for inputs.
- generation (`generate:`): `generation_reason` (why a load mode and precision cannot generate),
  `prepare_generation` (the artifact generation loads when it is not the timed one, in the parent),
  `reference_tokens` (fp32 eager's greedy tokens, in the parent) and `generation_prompts`; the worker
  asks the runtime for its `decoder` (bench.runtimes.base).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.checks import hygiene
from bench.errors import Unsupported
from bench.models import catalog as models
from bench.models import hf, pruning, sources
from bench.models.artifacts import Artifact
from bench.models.sources import FORMAT_NAMES, SourceError
from bench.runtimes import (  # noqa: F401  (importing a runtime's module registers it)
    aoti,
    compile,
    eager,
    executorch,
    export,
    litert,
    mmap,
    onnxruntime,
    openvino,
    torchscript,
)
from bench.runtimes.base import Runtime
from bench.runtimes.formats import (
    compiled_file_reason,
    given_file_artifact,
    ort_reduce_range,
    reference_outputs,
    reference_tokens,
)
from bench.runtimes.model import (
    build_fp32,
    build_variant,
    fidelity_batch,
    fidelity_count,
    generation_prompts,
    inputs_record,
    make_batch,
    run_inputs,
    source_record,
    to_runtime_input,
)
from bench.runtimes.precisions import PRECISIONS
from bench.runtimes.quantization import import_torchao
from bench.runtimes.registry import RUNTIMES, register, runtime_for
from bench.suite.scenarios import Scenario

__all__ = [
    "PRECISIONS",
    "RUNTIMES",
    "Runtime",
    "Unsupported",
    "artifact_format",
    "build_fp32",
    "build_variant",
    "fidelity_batch",
    "fidelity_count",
    "generation_prompts",
    "generation_reason",
    "import_libraries",
    "inputs_record",
    "load_model",
    "make_batch",
    "modes_reason",
    "ort_reduce_range",
    "prepare_artifact",
    "prepare_generation",
    "reference_outputs",
    "reference_tokens",
    "register",
    "run_inputs",
    "runtime_for",
    "runtime_of",
    "source_record",
    "to_runtime_input",
    "unsupported_reason",
]


def runtime_of(scenario: Scenario) -> str:
    """The record's `runtime`: the library that runs the model (torch for every torch load mode)."""
    return runtime_for(scenario).engine


def artifact_format(scenario: Scenario) -> str:
    return runtime_for(scenario).format_for(scenario)


def generation_reason(scenario: Scenario) -> str | None:
    """Why the scenario's load mode and precision cannot generate, known without trying (None: it may)."""
    return runtime_for(scenario).generation_unsupported(scenario)


def prepare_generation(scenario: Scenario, cache_dir: Path) -> Artifact | None:
    """The artifact generation loads when it is not the timed one (None: none, or no `generate:`)."""
    if scenario.generate is None or generation_reason(scenario) is not None:
        return None
    return runtime_for(scenario).prepare_generation(scenario, cache_dir)


def modes_reason(scenario: Scenario) -> str | None:
    """Why a non-default grad_mode or module_mode cannot apply to the scenario's load mode, or None."""
    return None if hygiene.is_default(scenario) else runtime_for(scenario).modes_unsupported(scenario)


def unsupported_reason(scenario: Scenario) -> str | None:
    """Reasons known without trying."""
    if (reason := modes_reason(scenario)) is not None:
        return reason
    source = scenario.source
    if source is not None and source.kind == "hf" and not hf.available():
        return hf.MISSING
    if source is not None and source.compiled and scenario.variant != pruning.DENSE:
        return (
            f"variant {scenario.variant} prunes the model's weights, and a {FORMAT_NAMES[source.kind]} file "
            "has no module to prune; give the checkpoint and its architecture instead"
        )
    if source is not None and source.compiled:
        return compiled_file_reason(source, scenario)
    if (reason := PRECISIONS[scenario.precision].unsupported(scenario)) is not None:
        return reason
    return runtime_for(scenario).unsupported(scenario)


def import_libraries(scenario: Scenario) -> None:
    """Import what loading will need, so that `load_s` measures loading, not Python imports
    (torchvision alone takes ~2 s to import, longer than loading resnet18)."""
    runtime = runtime_for(scenario)
    runtime.import_libraries(scenario)
    if PRECISIONS[scenario.precision].needs_torchao and runtime.engine == "torch":
        import_torchao()  # PT2E's quantize ops and the weight-only tensor class must exist to load
    source = scenario.source
    architecture = source.architecture if source else scenario.model
    if source is not None and source.kind == "hf":
        hf.import_transformers()
    elif architecture and sources.is_factory(architecture):
        sources.import_factory_module(source)  # the user's module, and whatever it imports
    elif architecture and architecture not in models.BUILTIN:
        import torchvision  # noqa: F401


def prepare_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """Write (or reuse) the file this scenario loads. Runs in the parent; imports torch."""
    if scenario.source is not None and scenario.source.compiled:
        return given_file_artifact(scenario, cache_dir)
    return runtime_for(scenario).prepare(scenario, cache_dir)


def load_model(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """From file to a ready `infer(batch)`, plus facts for the record. This whole call is `load_s`."""
    runtime = runtime_for(scenario)
    source = scenario.source
    if source is None or not source.compiled:
        return runtime.load(scenario, artifact_path)
    try:
        return runtime.load(scenario, artifact_path)
    except (Unsupported, SourceError):
        raise
    except Exception as exc:  # a user's file the runtime cannot read: say which file, and what it is
        raise SourceError(
            source,
            f"{runtime.engine} could not load it as a {FORMAT_NAMES[source.kind]} file: "
            f"{type(exc).__name__}: {sources.short(exc)}",
            path=str(artifact_path),
        ) from exc
