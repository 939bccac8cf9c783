"""The code is ruff-clean and ruff-formatted: the same two checks as `nox -s lint`, here so that the
test command (and so CI) enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = ["bench", "tests", "benchmarks", "conftest.py", "noxfile.py"]
# the environment's own ruff (the pinned one), else one on PATH
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")

pytestmark = pytest.mark.skipif(RUFF is None, reason="ruff is not installed (the test extra installs it)")


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(check: list[str]):
    done = subprocess.run([RUFF, *check, *PATHS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
