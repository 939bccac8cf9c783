"""bench's modules import each other at the top only: an import inside a function is how a cycle
hides, so a new one fails here. A module that needs another lazily must say why in ALLOWED."""

from __future__ import annotations

import ast
from pathlib import Path

import bench

PACKAGE = Path(bench.__file__).parent

# (module, imported bench module): function-level imports that stay, each for a stated reason.
ALLOWED = {
    # The measuring side, left to its owners: an instance process and the worker import the
    # backends and the pipeline only in the child that needs them.
    ("bench/instance.py", "bench"),
    ("bench/instance.py", "bench.suite"),
    ("bench/instance.py", "bench.worker"),
    ("bench/worker.py", "bench.pipeline"),
}


def _is_bench(module: str | None) -> bool:
    return (module or "").split(".")[0] == "bench"


def function_level_bench_imports() -> set[tuple[str, str]]:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE.parent).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and _is_bench(node.module):
                    found.add((name, str(node.module)))
                elif isinstance(node, ast.Import):
                    found |= {(name, alias.name) for alias in node.names if _is_bench(alias.name)}
    return found


def test_no_bench_module_is_imported_inside_a_function():
    unexpected = function_level_bench_imports() - ALLOWED
    assert not unexpected, f"import these at the top of the module (or untangle the cycle): {sorted(unexpected)}"


def test_the_allow_list_names_only_imports_that_still_exist():
    assert not ALLOWED - function_level_bench_imports(), "remove the entries that are gone from ALLOWED"
