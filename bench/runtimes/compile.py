"""`load: compile`: the eager model from its state_dict (bench.runtimes.eager), wrapped by
`torch.compile` with Inductor and inference freezing.

Inductor compiles on the first call: the worker times that call alone as `compile_s`
(`first_call`), then the first inference as for any mode. Generation (`decoder`) is transformers'
static-cache recipe: `generate` with `cache_implementation="static"` and a `CompileConfig`, which
runs the prefill eagerly and compiles the one-token decode step with torch.compile (fixed shapes:
the cache is allocated at prompt + new tokens); that compile happens in the first generate call,
which runs apart and gives `generation.compile_s`. Inductor's cache is a fresh folder per
scenario (cold) unless the suite's `compile.cache` says warm: a folder next to the artifact, keyed
by the artifact and the compile settings (`set_up_process`, before anything compiles).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.checks import generation
from bench.errors import CompileFailed, Unsupported, first_error_line
from bench.runtimes.base import Infer, Runtime
from bench.runtimes.eager import load_module, load_program, loads_program, program_generation_reason
from bench.runtimes.model import named_call
from bench.runtimes.registry import register
from bench.suite.scenarios import CompilePolicy, Scenario

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor would build with, or None (it tries $CXX, then g++ and clang++)."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++"]
    return next((found for name in candidates if (found := shutil.which(name))), None)


def no_compiler_reason(scenario: Scenario) -> str | None:
    """Inductor (compile and aoti) needs a C++ compiler on PATH."""
    if cxx_compiler():
        return None
    return (
        f"load {scenario.load} needs a C++ compiler: Inductor writes C++ kernels for the CPU and "
        "builds them with g++ (or the compiler in $CXX); none is on PATH (Debian: apt-get install g++)"
    )


def frozen_modes_reason(scenario: Scenario) -> str:
    """Why grad_mode and module_mode do not apply to a graph Inductor compiled (compile and aoti)."""
    return (
        f"load {scenario.load} compiles a frozen inference graph (Inductor freezing: weights become "
        "constants), so there is no autograd graph or training mode to measure; use load eager or mmap"
    )


def import_inductor() -> None:
    """Import the compiler before the timed load: `load_s` and `compile_s` measure loading and
    compiling, not Python imports (torch._inductor takes seconds)."""
    import torch._dynamo  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    import torch._inductor.package  # noqa: F401


def policy_of(scenario: Scenario) -> CompilePolicy:
    return scenario.compile or CompilePolicy()


def warm_cache_dir(scenario: Scenario, artifact_path: Path) -> Path:
    """The persistent Inductor cache of `compile.cache: warm`: beside the artifact (whose folder
    is keyed by model, precision and torch version), one per compile mode and shape setting."""
    policy = policy_of(scenario)
    key = json.dumps({"mode": policy.mode, "dynamic": policy.dynamic, "threads": scenario.threads}, sort_keys=True)
    return artifact_path.parent / f"inductor-cache-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def set_up_inductor_cache(scenario: Scenario, artifact_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
    """Point Inductor's caches at this scenario's folder before anything compiles (the process
    environment: Inductor reads it on first use). Returns facts for the record and a cleanup."""
    policy = policy_of(scenario)
    if policy.cache == "warm":
        folder = warm_cache_dir(scenario, artifact_path)
        state = "warm" if folder.is_dir() and any(folder.iterdir()) else "cold"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[CACHE_ENV] = str(folder)
        return {"cache": state}, lambda: None
    folder = Path(tempfile.mkdtemp(prefix="bench-inductor-"))
    os.environ[CACHE_ENV] = str(folder)
    return {"cache": "cold"}, lambda: shutil.rmtree(folder, ignore_errors=True)


def torch_compile(scenario: Scenario, model: Any) -> tuple[Infer, dict[str, Any]]:
    """`torch.compile` with Inductor and freezing; nothing compiles until the first call."""
    import torch
    from torch._inductor import config

    policy = policy_of(scenario)
    # Freezing folds the weights into the graph as constants (and prepacks them for oneDNN);
    # it applies to inference only, which is what the worker runs (under inference_mode).
    config.freezing = True
    compiled = torch.compile(model, backend="inductor", mode=policy.mode, dynamic=policy.dynamic)
    facts = {
        "compiler": "inductor",
        "version": torch.__version__,
        "mode": policy.mode,
        "dynamic": policy.dynamic,
        "freezing": True,
    }
    return compiled, facts


def first_compiled_call(infer: Infer, batch: Any) -> dict[str, Any]:
    """Run the first call (Dynamo traces, Inductor compiles): `compile_s`, and how many graphs
    Dynamo compiled. A model Dynamo leaves wholly to eager is said so, not timed as compiled."""
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    try:
        infer(batch)
    except Exception as exc:
        raise CompileFailed(
            f"torch.compile failed: {first_error_line(exc)} (hint: the full error is in the worker's stderr.log; "
            "eager, export or onnxruntime may still run this model)"
        ) from exc
    compile_s = time.perf_counter() - started
    graphs = counters["stats"]["unique_graphs"] - graphs_before
    if graphs == 0:
        raise Unsupported(
            "torch.compile compiled no graph for this model: Dynamo left every call to eager "
            "(for int8_dynamic, its quantized layers run as opaque packed-weight ops)"
        )
    return {"compile_s": compile_s, "graphs": graphs}


@register
class Compile(Runtime):
    name = "compile"
    artifact_format = "state_dict"
    compiles_on_first_call = True
    generates = True

    def format_for(self, scenario: Scenario) -> str:
        return "exported_program" if loads_program(scenario) else self.artifact_format

    def unsupported(self, scenario: Scenario) -> str | None:
        return no_compiler_reason(scenario)

    def modes_unsupported(self, scenario: Scenario) -> str | None:
        return frozen_modes_reason(scenario)

    def import_libraries(self, scenario: Scenario) -> None:
        import_inductor()

    def set_up_process(self, scenario: Scenario, artifact_path: Path) -> tuple[dict[str, Any], Callable[[], None]]:
        facts, cleanup = set_up_inductor_cache(scenario, artifact_path)
        return {"compile_cache": facts["cache"]}, cleanup

    def load(self, scenario: Scenario, artifact_path: Path) -> tuple[Infer, dict[str, Any]]:
        if loads_program(scenario):  # int8_static's PT2E program: Inductor fuses its q/dq pairs into int8 kernels
            infer, compile_facts = torch_compile(scenario, load_program(scenario, artifact_path))
            return infer, {"compiled": compile_facts}
        model, facts = load_module(scenario, artifact_path)
        compiled_model, compile_facts = torch_compile(scenario, model)
        return named_call(scenario, compiled_model), {**facts, "compiled": compile_facts}

    def first_call(self, infer: Infer, batch: Any) -> dict[str, Any]:
        return first_compiled_call(infer, batch)

    def generation_unsupported(self, scenario: Scenario) -> str | None:
        return program_generation_reason(scenario)

    def decoder(
        self, scenario: Scenario, infer: Infer, prompt: dict[str, Any], artifact_path: Path | None
    ) -> generation.Decoder:
        """transformers' static cache and compiled decode step, on the module under the timed torch.compile
        wrapper (that one compiled the whole forward at the prompt's shape; generation compiles its own step)."""
        from transformers.generation.configuration_utils import CompileConfig

        policy, new_tokens = policy_of(scenario), scenario.generate.new_tokens  # type: ignore[union-attr]
        module = getattr(getattr(infer, "module", None), "_orig_mod", None)
        if module is None or not hasattr(module, "generate"):
            return super().decoder(scenario, infer, prompt, artifact_path)  # says why not
        config = CompileConfig(fullgraph=True, dynamic=False, backend="inductor", mode=policy.mode)
        # transformers compiles the decode step on accelerators only unless told to on every device
        config._compile_all_devices = True
        generate = generation.hf_decode(
            module, prompt, new_tokens, cache_implementation="static", compile_config=config
        )

        def decode(stamps_s: generation.Stamps) -> generation.Generated:
            from torch._inductor import config as inductor

            # Without freezing: with it (the timed forward's setting) the compiled decode step of a 2-layer GPT-2
            # failed in its first call, "index out of bounds: 0 <= tmp9 < 16" in a fused attention kernel
            # (torch 2.14.1, transformers 5.23). The decode step compiles in the first generate call.
            with inductor.patch(freezing=False):
                return generate(stamps_s)

        method = (
            f"transformers generate(), static KV cache, decode step compiled by torch.compile (Inductor, {policy.mode})"
        )
        return generation.Decoder(method, decode, compiles=True, module=module)
