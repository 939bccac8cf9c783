"""The machine and software a run measured on, and a fingerprint of what matters.

Two runs are comparable only when their fingerprints match: same CPU model and
instruction sets, same core count, same library versions, same kernel.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from bench import __version__
from bench.measure.memory import cpu_count

# Instruction sets that decide which kernels torch and ONNX Runtime can use.
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)
LIBRARIES = (
    "torch",
    "torchvision",
    "onnxruntime",
    "numpy",
    "pytest",
    "pytest-benchmark",
    "psutil",
    "pandas",
    "matplotlib",
    "PyYAML",
)
_ENV_PREFIXES = ("OMP_", "KMP_", "MKL_", "GOMP_", "MALLOC_", "OPENBLAS_", "ONEDNN_", "DNNL_", "TORCH_", "ORT_")
_ENV_NAMES = ("LD_PRELOAD",)
# What makes two runs comparable (thread counts are per scenario, in each record).
_FINGERPRINT_KEYS = ("cpu_model", "isa", "logical_cores", "usable_cores", "kernel", "python", "libraries")


def read_cpuinfo() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "cpu_flags": sorted(flags), "isa": {f: f in flags for f in ISA_FLAGS}}


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def allocator() -> str:
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return name
    libc, version = platform.libc_ver()
    return f"{libc or 'libc'} {version} malloc".strip()


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return {"sha": None, "branch": None, "dirty": None}
    return {"sha": sha, "branch": git("rev-parse", "--abbrev-ref", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def torch_build_info() -> dict[str, Any]:
    """What torch itself reports about its CPU backends (imports torch)."""
    import torch

    parallel = torch.__config__.parallel_info()
    backend = re.search(r"ATen parallel backend: (.+)", parallel)
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkl_available": torch.backends.mkl.is_available(),
        "parallel_backend": backend.group(1).strip() if backend else None,
        "default_num_threads": torch.get_num_threads(),
        "cuda_build": torch.version.cuda,
    }


def collect_environment(with_torch: bool = True) -> dict[str, Any]:
    uname = platform.uname()
    env: dict[str, Any] = {
        "bench_version": __version__,
        **read_cpuinfo(),
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "cpu_governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_max_mhz": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"),
        "os": platform.platform(),
        "kernel": uname.release,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "libraries": library_versions(),
        "allocator": allocator(),
        "env_vars": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES},
        "git": git_info(),
    }
    if env["cpu_max_mhz"] is not None:
        env["cpu_max_mhz"] = int(env["cpu_max_mhz"]) / 1000
    if with_torch:
        env["torch"] = torch_build_info()
    env["fingerprint"] = fingerprint(env)
    return env


def fingerprint(env: dict[str, Any]) -> str:
    subset = {k: env.get(k) for k in _FINGERPRINT_KEYS}
    digest = hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()
    return digest[:16]
