"""The tree shows the pipeline, and imports follow it: the reader side (the run model, the history,
analysis, the report) never imports the measuring side (the runtimes, the measuring process), so a
report or a compare never pays for torch and never depends on how a row was measured."""

from __future__ import annotations

import ast
from pathlib import Path

import bench

PACKAGE = Path(bench.__file__).parent
READER_SIDE = ("results", "history", "analysis", "report")
MEASURING_SIDE = ("bench.runtimes", "bench.measure")
# at most ~10 modules directly in bench/: the rest live in their stage's sub-package
MAX_TOP_LEVEL_MODULES = 10


def _bench_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("bench"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("bench")}
    return found


def test_the_reader_side_never_imports_the_measuring_side():
    crossing = sorted(
        (path.relative_to(PACKAGE.parent).as_posix(), name)
        for stage in READER_SIDE
        for path in (PACKAGE / stage).rglob("*.py")
        for name in _bench_imports(path)
        if name.startswith(MEASURING_SIDE)
    )
    assert not crossing, f"the reader side imports the measuring side: {crossing}"


def test_modules_live_in_their_stage():
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top_level) <= MAX_TOP_LEVEL_MODULES, f"put these in a stage's sub-package: {top_level}"
