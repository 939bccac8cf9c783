"""Compiled load modes: torch.compile (Inductor), AOTInductor packages and OpenVINO.

- `compile`: the eager model from its state_dict (backends), wrapped by `torch.compile` with
  Inductor and inference freezing. Inductor compiles on the first call: the worker times that
  call alone as `compile_s` (bench.worker), then the first inference as for any mode.
  Inductor's cache is a fresh folder per scenario (cold) unless the suite's `compile.cache`
  says warm: a folder next to the artifact, keyed by the artifact and the compile settings.
- `aoti`: `torch._inductor.aoti_compile_and_package` in the parent (an artifact: its compile
  time is `artifact_prepare_s`), `aoti_load_package` in the worker (`load_s`).
- `openvino`: OpenVINO Runtime reads the ONNX artifact and compiles it for the CPU with the
  scenario's threads, a latency hint and an explicit inference precision.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import sources
from bench.errors import Unsupported
from bench.suite import CompilePolicy, Scenario

LOADS = ("compile", "aoti", "openvino")
FORMATS = {"compile": "state_dict", "aoti": "aoti_package", "openvino": "onnx"}
AOTI_SUFFIX = ".aoti.pt2"
OPENVINO_MISSING = "OpenVINO is not installed: pip install .[openvino] (the openvino package)"
NNCF_MISSING = "NNCF is not installed: pip install .[openvino] (OpenVINO's int8_static is NNCF's quantization)"
# OpenVINO's names for the precisions it is told to run in, and the CPU capability each needs.
# int8_static: NNCF's QDQ nodes run in int8, the float parts in f32.
_OPENVINO_PRECISIONS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16"),
                        "int8_static": ("f32", "INT8")}  # fmt: skip
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


class CompileFailed(Exception):
    """The compiler refused the model; the message is its first meaningful line and a hint."""


def unsupported_reason(scenario: Scenario) -> str | None:
    """Reasons known without trying, for the three compiled load modes (None for the others)."""
    if scenario.load in ("compile", "aoti") and not cxx_compiler():
        return (
            f"load {scenario.load} needs a C++ compiler: Inductor writes C++ kernels for the CPU and "
            "builds them with g++ (or the compiler in $CXX); none is on PATH (Debian: apt-get install g++)"
        )
    if scenario.load == "aoti" and scenario.precision == "int8_dynamic":
        return (
            "AOTInductor compiles a torch.export program, and torch.export cannot export int8_dynamic: "
            "the packed weights of dynamically quantized Linear layers are not exportable objects"
        )
    if scenario.load == "openvino":
        if scenario.precision == "int8_dynamic":
            return (
                "OpenVINO's int8 comes from NNCF post-training quantization (with calibration data): "
                "precision int8_static; torch's int8_dynamic layers have no ONNX/OpenVINO equivalent"
            )
        if scenario.precision == "int8_static" and not sources.spec_available("nncf"):
            return NNCF_MISSING
        if not sources.spec_available("openvino"):
            return OPENVINO_MISSING
    return None


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor would build with, or None (it tries $CXX, then g++ and clang++)."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "clang++"]
    return next((found for name in candidates if (found := shutil.which(name))), None)


def first_error_line(exc: BaseException) -> str:
    """The compiler's first meaningful line: Dynamo and Inductor wrap the real error in pages of
    context (the user stack, 'Set TORCHDYNAMO_VERBOSE=1' advice); keep its first non-boilerplate line."""
    skip = ("Traceback", "File ", "Set TORCH", "You can suppress", "from user code", "To log", "Explanation")
    for line in str(exc).splitlines():
        text = line.strip()
        if text and not text.startswith(skip):
            return text if len(text) <= 300 else text[:297] + "..."
    return type(exc).__name__


# --- torch.compile -----------------------------------------------------------------------------


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


def torch_compile(scenario: Scenario, model: Any) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """`torch.compile` with Inductor and freezing; nothing compiles until the first call."""
    import torch
    from torch._inductor import config

    policy = policy_of(scenario)
    # Freezing folds the weights into the graph as constants (and prepacks them for oneDNN);
    # it applies to inference only, which is what the worker runs (under inference_mode).
    config.freezing = True
    compiled = torch.compile(model, backend="inductor", mode=policy.mode, dynamic=policy.dynamic)
    facts = {"compiler": "inductor", "version": torch.__version__, "mode": policy.mode,
             "dynamic": policy.dynamic, "freezing": True}  # fmt: skip
    return compiled, facts


def first_compiled_call(infer: Callable[[Any], Any], batch: Any) -> dict[str, Any]:
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


# --- AOTInductor ---------------------------------------------------------------------------------


def write_aoti_package(exported: Any, path: Path) -> dict[str, Any]:
    """Compile a torch.export program with AOTInductor into a .pt2 package (in the parent)."""
    import torch

    # Building the package imports torch.utils.cpp_extension, which warns "No CUDA runtime is found"
    # on every CPU-only machine, in the middle of the run's progress lines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
    except Exception as exc:
        raise CompileFailed(f"AOTInductor failed: {first_error_line(exc)}") from exc
    return {}


def load_aoti(artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    import torch

    runner = torch._inductor.aoti_load_package(str(artifact_path))
    facts = {"compiler": "aot_inductor", "version": torch.__version__}
    return runner, facts


# --- OpenVINO ------------------------------------------------------------------------------------


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise Unsupported(f"{OPENVINO_MISSING} ({exc})") from exc
    return openvino


def import_libraries(scenario: Scenario) -> None:
    """Import the compiler before the timed load, as bench does for every runtime: `load_s` and
    `compile_s` measure loading and compiling, not Python imports (torch._inductor takes seconds)."""
    if scenario.load == "openvino":
        _openvino()
    elif scenario.load in ("compile", "aoti"):
        import torch._dynamo  # noqa: F401
        import torch._inductor.compile_fx  # noqa: F401
        import torch._inductor.package  # noqa: F401


def load_openvino(scenario: Scenario, artifact_path: Path) -> tuple[Callable[[Any], Any], dict[str, Any]]:
    """The ONNX file read and compiled by OpenVINO for the CPU: the scenario's threads, a latency
    hint (one stream) and the precision set explicitly; the record says what OpenVINO ran."""
    ov = _openvino()
    core = ov.Core()
    hint, capability = _OPENVINO_PRECISIONS[scenario.precision]
    capabilities = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if capability not in capabilities:
        raise Unsupported(
            f"OpenVINO's CPU plugin cannot run {scenario.precision} on this CPU: its optimization "
            f"capabilities are {', '.join(capabilities)} (no {capability})"
        )
    model = core.read_model(str(artifact_path))
    config = {
        "INFERENCE_NUM_THREADS": scenario.threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": hint,
    }
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def infer(batch: Any) -> Any:  # named inputs come as a dict by the ONNX file's input names
        return request.infer(batch if isinstance(batch, dict) else {0: batch}, share_outputs=False)[output]

    facts = {
        "compiler": "openvino",
        "version": importlib.metadata.version("openvino"),
        "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
        "num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "num_streams": int(compiled.get_property("NUM_STREAMS")),
    }
    return infer, facts
