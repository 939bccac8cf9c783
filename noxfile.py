"""Sessions: `tests` (the test suite), `bench` (the default suite), `lint`, `docs` (the manual).

All sessions share one virtual environment, .venv: a full torch environment is ~6 GB
and takes minutes to build, so it is built once and reused (pip skips what is there).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
# The exact versions CI and the README's commands install (pyproject.toml states ranges). Made with
# `python3 -m nox -s lock` from a working .venv; see that session.
LOCK = ROOT / "requirements-lock.txt"


def _pip_install(python: Path) -> list[str]:
    """uv's pip when uv is installed (the README's commands install it: it fetches and unpacks the 6 GB
    in parallel), else pip. The venv itself is made by `venv`, so it has pip for later installs.

    --compile-bytecode: uv, unlike pip, leaves the .pyc files to the first import, and where
    PYTHONDONTWRITEBYTECODE is set (containers, CI images) none is ever written: every interpreter
    then compiles torch from source, 11 s instead of 5 s for `import torch, torchvision, onnxruntime,
    pytest` on a 2-core VM, and bench starts several interpreters per run."""
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", "install", "--compile-bytecode", "--python", str(python)]
    return [str(python), "-m", "pip", "install"]


def _install(session: nox.Session, extras: str = "test") -> None:
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    session.run(*_pip_install(BIN / "python"), "-q", "-c", str(LOCK), "-e", f".[{extras}]", external=True)


def _apt_install(session: nox.Session, command: str, package: str, without: str) -> None:
    """Debian's `package` when `command` is missing (apt-get as root), else a warning saying what `without` means.
    CI must run the tests that need these, so the test command installs them. `command` may be a path pattern,
    for a program Debian keeps off PATH."""
    if shutil.which(command) or glob.glob(command):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", package, external=True)
    else:
        session.warn(f"{command} is not installed and cannot be installed here: {without}")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Install into .venv (with the tflite extra, so LiteRT is tested too; Debian's chromium, for the report's
    browser test; and Debian's postgresql, whose server the PostgreSQL history tests start) and run every test:
    those marked `serial` alone, after the others. `nox -s tests -- ARGS` runs one plain `pytest ARGS`."""
    _install(session, "test,tflite")
    _apt_install(session, "chromium", "chromium", "the report's browser test will skip")
    # load: compile and aoti build Inductor's C++ kernels with g++
    _apt_install(session, "g++", "g++", "compile and aoti rows will be unsupported")
    # the server binaries are in /usr/lib/postgresql/<version>/bin, not on PATH
    _apt_install(session, "/usr/lib/postgresql/*/bin/initdb", "postgresql", "the PostgreSQL history tests will skip")
    pytest = [str(BIN / "python"), "-m", "pytest"]
    if session.posargs:
        session.run(*pytest, *session.posargs, external=True)
        return
    # Most tests check structure, not speed: they run one per core (pytest-xdist; a module's tests
    # stay on one worker for its module fixtures). The `serial` ones time or size something, or
    # judge contention, so they run afterwards with the CPU to themselves.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    session.run(*pytest, "-m", "not serial", "-n", str(cores), "--dist", "loadscope", external=True)
    session.run(*pytest, "-m", "serial", external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Install into .venv and run the default suite (or the suite given after --)."""
    _install(session)
    suite = session.posargs or ["scenarios/quickstart.yaml"]
    session.run(str(BIN / "bench"), "run", *suite, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and glue: the lint rules, and the formatting (`ruff format --check`).
    tests/test_style.py runs the same two checks, so the test command (and CI) enforces them too."""
    _install(session)
    paths = ["bench", "tests", "benchmarks", "conftest.py", "noxfile.py"]
    session.run(str(BIN / "ruff"), "check", *paths, external=True)
    session.run(str(BIN / "ruff"), "format", "--check", *paths, external=True)


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Build the manual (docs/, mkdocs.yml) into site/ with --strict: a broken link or page fails."""
    _install(session, "docs")
    session.run(str(BIN / "python"), "-m", "mkdocs", "build", "--strict", *session.posargs, external=True)


@nox.session(name="tests-latest", venv_backend="none")
def tests_latest(session: nox.Session) -> None:
    """The fast tests (not `slow`) against the newest torch, torchvision, ONNX Runtime and numpy that PyPI
    serves, in .venv-latest, without the lock: does the next upgrade break us?"""
    venv = ROOT / ".venv-latest"
    python = str(venv / "bin" / "python")
    if not (venv / "bin" / "python").exists():
        session.run(sys.executable, "-m", "venv", str(venv), external=True)
    # An empty constraint file replaces any site-wide pip constraint that caps these packages.
    empty = venv / "no-constraints.txt"
    empty.write_text("")
    newest = ["torch", "torchvision", "onnxruntime", "onnx", "numpy"]
    env = {"PIP_CONSTRAINT": str(empty)}
    session.run(*_pip_install(Path(python)), "-q", "--upgrade", "-e", ".[test]", *newest, external=True, env=env)
    session.run(python, "-m", "pip", "list", external=True)
    session.run(python, "-m", "pytest", "-m", "not slow", *session.posargs, external=True)


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Rewrite requirements-lock.txt from .venv (after `pip install -e .[test,tflite,...]` there with new versions)."""
    # `pip list --format=freeze` says name==version even for a package installed from a local file
    listing = [str(BIN / "python"), "-m", "pip", "list", "--format=freeze", "--exclude-editable"]
    frozen = session.run(*listing, external=True, silent=True)
    tooling = ("ruff==", "pip==", "setuptools==")  # the lint tool and the venv's own installers
    pins = [line for line in frozen.splitlines() if "==" in line and not line.startswith(tooling)]
    header = "# Exact versions for CI and the README's commands; made by `python3 -m nox -s lock`.\n"
    LOCK.write_text(header + "\n".join(sorted(pins, key=str.lower)) + "\n")
