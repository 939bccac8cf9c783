"""Sessions: `tests` (the test suite), `bench` (the default suite), `lint`.

All sessions share one virtual environment, .venv: a full torch environment is ~6 GB
and takes minutes to build, so it is built once and reused (pip skips what is there).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
VENV = Path(__file__).parent / ".venv"
BIN = VENV / "bin"


def _install(session: nox.Session, extras: str = "test") -> None:
    if not (BIN / "python").exists():
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "-e", f".[{extras}]", external=True)


def _install_chromium(session: nox.Session) -> None:
    """The report's browser test needs Debian's chromium; CI must run it, so install it here."""
    if shutil.which("chromium"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium", external=True)
    else:
        session.warn("chromium is not installed and cannot be installed here: the browser test will skip")


def _install_cxx(session: nox.Session) -> None:
    """load: compile and aoti build C++ with g++ (Inductor's CPU code); CI must run them, so install it here."""
    if shutil.which("g++"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        session.run("apt-get", "update", "-qq", external=True)
        session.run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "g++", external=True)
    else:
        session.warn("g++ is not installed and cannot be installed here: compile and aoti rows will be unsupported")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Install into .venv (with the tflite extra, so LiteRT is tested too; and Debian's chromium, for the
    report's browser test) and run every test."""
    _install(session, "test,tflite")
    _install_chromium(session)
    _install_cxx(session)
    session.run(str(BIN / "python"), "-m", "pytest", *session.posargs, external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Install into .venv and run the default suite (or the suite given after --)."""
    _install(session)
    suite = session.posargs or ["scenarios/quickstart.yaml"]
    session.run(str(BIN / "bench"), "run", *suite, external=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff over the package, tests and glue."""
    _install(session)
    session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "ruff==0.17.6", external=True)
    session.run(str(BIN / "ruff"), "check", "bench", "tests", "conftest.py", "noxfile.py", external=True)
