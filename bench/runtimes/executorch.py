"""`load: executorch`: ExecuTorch, the deploy path PyTorch ships for edge and mobile CPUs, with its
XNNPACK delegate (`pip install .[executorch]`).

In the parent, the fp32 model is exported (torch.export), lowered with `to_edge_transform_and_lower`
and the XNNPACK partitioner (the operators XNNPACK takes run in its kernels, any other in
ExecuTorch's portable ones) and written as a `.pte` program: its time is `artifact_prepare_s`.
ExecuTorch plans every tensor's memory ahead for the largest shape, so the batch axis is dynamic
only up to `max_batch` (the largest of the scenario's batch, fidelity's samples and a `capacity:`
block's batches) and a named input's seq axis is fixed at the scenario's `seq_len` (a capacity
request mix of other lengths is unsupported); both are in the artifact's cache key.
In the worker, ExecuTorch's runtime loads the program and its `forward` method (`load_s`), its
thread pool reset to the scenario's threads (`compiled.num_threads` records what it has).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from bench.errors import CompileFailed, Unsupported, first_error_line
from bench.models import pruning, sources
from bench.models.artifacts import Artifact, cached_artifact
from bench.results.nospace import write_via_memory
from bench.runtimes import model
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.registry import register
from bench.suite import inputs
from bench.suite.scenarios import Scenario

EXECUTORCH_MISSING = "ExecuTorch is not installed: pip install .[executorch] (the executorch package)"
COMPILER = "executorch_xnnpack"


def _portable_lib() -> Any:
    """ExecuTorch's runtime bindings; Unsupported (not a failure) when the optional extra is missing."""
    try:
        from executorch.extension.pybindings import portable_lib
    except ImportError as exc:
        raise Unsupported(f"{EXECUTORCH_MISSING} ({exc})") from exc
    return portable_lib


def max_batch(scenario: Scenario) -> int:
    """The largest batch the program takes: the timed batch, fidelity's samples in one call, and a
    `capacity:` block's offline batch and dynamically batched server calls (its instances load this
    same program: a tiny_mlp capacity run bounded at fidelity's 4 failed its offline batch of 16 in
    set_inputs, error 0x10)."""
    batches = [scenario.batch_size, model.fidelity_count(scenario)]
    if scenario.capacity is not None:
        batches.append(scenario.capacity.offline_batch_size)
        if scenario.capacity.batching is not None:
            batches.append(scenario.capacity.batching.max_batch * scenario.batch_size)
    return max(batches)


def _write_program(scenario: Scenario, path: Path) -> dict[str, Any]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    module, facts = model.build_variant(scenario)
    batch = torch.export.Dim("batch", min=1, max=max_batch(scenario))
    example = model.make_batch(scenario, batch_size=2)  # 2 rows: the batch axis is not specialised
    if isinstance(example, dict):  # exported as inputs.positional: the tensors in the inputs' order
        module = inputs.positional(module, model.named_inputs(scenario), model.output_of(scenario))
        args, dynamic = tuple(example.values()), (tuple({0: batch} for _ in example),)
    else:
        args, dynamic = (example,), ({0: batch},)
    with torch.inference_mode(False), torch.no_grad():
        exported = torch.export.export(module, args, dynamic_shapes=dynamic)
        try:
            program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
        except Exception as exc:
            raise CompileFailed(f"ExecuTorch could not lower the model to XNNPACK: {first_error_line(exc)}") from exc
    write_via_memory(path, lambda f: f.write(program.buffer))
    return facts


@register
class ExecuTorch(Runtime):
    name = "executorch"
    artifact_format = "executorch_program"
    engine = "executorch"
    profiler = None
    no_profiler = "bench does not read ExecuTorch's ETDump profiles yet"

    def unsupported(self, scenario: Scenario) -> str | None:
        if scenario.precision != "fp32":
            return (
                f"bench lowers fp32 programs to ExecuTorch's XNNPACK delegate; {scenario.precision} "
                "(XNNPACK's own quantizer, or half precision) is not prepared for it"
            )
        mix = scenario.capacity.seq_len_mix if scenario.capacity is not None else None
        if mix is not None and set(mix.choices) != {scenario.seq_len}:
            return (
                f"capacity.request_mix draws seq_len {', '.join(map(str, mix.choices))}; bench's ExecuTorch "
                f"program fixes the seq axis at the scenario's seq_len ({scenario.seq_len}), as ExecuTorch "
                "plans memory ahead"
            )
        if not sources.spec_available("executorch"):
            return EXECUTORCH_MISSING
        return None

    def import_libraries(self, scenario: Scenario) -> None:
        _portable_lib()
        import executorch.runtime  # noqa: F401

    def prepare(self, scenario: Scenario, cache_dir: Path) -> Artifact:
        key = {
            **model.model_key(scenario),
            "precision": scenario.precision,
            "format": self.artifact_format,
            "executorch": importlib.metadata.version("executorch"),
            "input_shape": list(scenario.input_shape),
            "max_batch": max_batch(scenario),
        }
        if model.named_inputs(scenario):
            key.update(
                inputs=[spec.to_dict() for spec in model.named_inputs(scenario)],
                output=model.output_of(scenario),
                seq_len=scenario.seq_len,
            )
        variant = "" if scenario.variant == pruning.DENSE else f"-{scenario.variant}"
        filename = f"{model.file_stem(scenario)}{variant}-{scenario.precision}.pte"
        return cached_artifact(cache_dir, key, filename, lambda path: _write_program(scenario, path))

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        from executorch.runtime import Runtime as ExecuTorchRuntime

        portable_lib = _portable_lib()
        portable_lib._unsafe_reset_threadpool(scenario.threads)  # the one thread-count setting it has (1.5.1)
        method = ExecuTorchRuntime.get().load_program(artifact_path).load_method("forward")

        def infer(batch: Any) -> Any:
            return method.execute(list(batch.values()) if isinstance(batch, dict) else [batch])[0]

        facts = {
            "compiler": COMPILER,
            "version": importlib.metadata.version("executorch"),
            "num_threads": portable_lib._threadpool_get_thread_count(),
        }
        return infer, {"compiled": facts}
