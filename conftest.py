"""pytest glue shared by the tests: the CLI runner and small suite files.

The worker harness (bench/harness.py) is started with --noconftest, so nothing here
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


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run the real `bench` command (python -m bench) in a fresh process, from tmp_path."""

    def run(*args: str, timeout_s: float = 600) -> CliResult:
        done = subprocess.run(
            [sys.executable, "-m", "bench", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def write_suite(tmp_path: Path):
    """Write a suite file from an indented YAML string; returns its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write
