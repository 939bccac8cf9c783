"""bench's modules import each other at the top only: an import inside a function is how a cycle
hides, so a new one fails here. A module that needs another lazily must say why in ALLOWED; an
importlib.import_module call inside a function counts as one (its target is not known here).

And the light commands stay light: the CLI imports a command's module when that command runs,
so `bench --help` and `bench validate` import none of torch, torchvision, pandas, matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bench
from bench.cli import COMMANDS, main

PACKAGE = Path(bench.__file__).parent

# (module, imported bench module): function-level imports that stay, each for a stated reason.
ALLOWED = {
    # The measuring side, left to its owners: an instance process and the worker import the
    # runtimes and the pipeline only in the child that needs them.
    ("bench/capacity/instance.py", "bench"),
    ("bench/capacity/instance.py", "bench.suite.scenarios"),
    ("bench/measure/worker.py", "bench.checks.pipeline"),
    # bench.cli imports a command's module when the command runs: `bench --help` and `bench validate`
    # took 1.8 s and 6.8 s when every command's imports (pandas, matplotlib, torch) came first.
    ("bench/cli.py", "importlib.import_module"),
    # A suite's factory 'package.module:function' names the user's module.
    ("bench/models/sources.py", "importlib.import_module"),
    # The zygote imports the third-party modules every worker needs once, before it forks them.
    ("bench/measure/zygote.py", "importlib.import_module"),
}
HEAVY = ("torch", "torchvision", "pandas", "matplotlib")


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
                elif isinstance(node, ast.Call) and ast.unparse(node.func) == "importlib.import_module":
                    found.add((name, "importlib.import_module"))
    return found


def test_no_bench_module_is_imported_inside_a_function():
    unexpected = function_level_bench_imports() - ALLOWED
    assert not unexpected, f"import these at the top of the module (or untangle the cycle): {sorted(unexpected)}"


def test_the_allow_list_names_only_imports_that_still_exist():
    assert not ALLOWED - function_level_bench_imports(), "remove the entries that are gone from ALLOWED"


def _heavy_modules_after(code: str) -> list[str]:
    """The HEAVY modules that a new interpreter holds after running `code` (its last output line)."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()[-1].split()


@pytest.mark.parametrize(
    "code",
    [
        "import bench.cli",
        "from bench.cli import build_parser; build_parser(only=set())",  # what `bench --help` builds
        "from bench.cli import main; main(['validate', 'scenarios/quickstart.yaml', 'scenarios/text.yaml'])",
    ],
)
def test_the_light_commands_import_no_heavy_module(code):
    assert _heavy_modules_after(code) == []


def test_help_lists_every_command_and_a_command_gets_its_own_parser(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert all(command.name in listing for command in COMMANDS)
    assert "measure every scenario of a suite" in listing
    with pytest.raises(SystemExit):
        main(["--debug", "run", "--help"])  # a top-level option first: the command is still found
    assert "--resume RUN_DIR" in capsys.readouterr().out
