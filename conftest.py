"""pytest glue shared by the tests: the CLI runner and small suite files.

The worker harness (bench/measure/harness.py) is started with --noconftest, so nothing here
leaks into a measurement.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).parent


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def _run_bench(cwd: Path, *args: str, timeout_s: float = 600) -> CliResult:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run the real `bench` command (python -m bench) in a fresh process, from tmp_path."""

    def run(*args: str, timeout_s: float = 600) -> CliResult:
        return _run_bench(tmp_path, *args, timeout_s=timeout_s)

    return run


@pytest.fixture(scope="session")
def bench_in():
    """bench_in(folder, *args): run_cli from a folder of the caller's choosing, for a module-scoped
    fixture whose run several tests read (run_cli's folder, tmp_path, is per test)."""
    return _run_bench


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite file from an indented YAML string; returns its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write
