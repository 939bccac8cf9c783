"""The manual cannot drift from the code: its suite examples load, its command examples name real
flags, and the site builds with --strict."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.cli import build_parser
from bench.suite.scenarios import SuiteError, parse_suite

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"\bbench ([a-z]+)((?: +[^\s|`]+)*)")


def suite_examples() -> list[tuple[str, str]]:
    """Fenced yaml blocks that are whole suites (a name and a matrix or include); the rest are fragments."""
    found = []
    for page in PAGES:
        for block in YAML_BLOCK.findall(page.read_text(encoding="utf-8")):
            data = yaml.safe_load(block)
            if isinstance(data, dict) and "name" in data and ("matrix" in data or "include" in data):
                found.append((f"{page.name}:{block.splitlines()[0]}", block))
    return found


@pytest.mark.parametrize(("where", "text"), suite_examples(), ids=lambda v: v.split("\n")[0][:40])
def test_every_suite_example_in_the_docs_is_valid(where, text, tmp_path):
    # Relative paths in an example are the reader's files: the suite is parsed as `bench validate`
    # does, from a folder of the docs, so only the suite's own shape is judged.
    try:
        parse_suite(text, where, file_path=ROOT / "docs" / "example.yaml")
    except SuiteError as exc:
        # The model files an example names (a checkpoint, an ONNX file) are the reader's own: a missing
        # one is expected here; any other problem is a wrong example.
        assert "no such file" in str(exc), exc


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    flags = {s for a in parser._actions for s in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _flags(sub)
    return flags


def test_every_command_example_in_the_docs_names_real_flags():
    verbs = _subparsers(build_parser())
    wrong = []
    for page in PAGES:
        for verb, rest in COMMAND.findall(page.read_text(encoding="utf-8")):
            if verb not in verbs:
                continue  # prose such as "bench measures"
            known = _flags(verbs[verb])
            for flag in re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", rest):
                if flag not in known:
                    wrong.append(f"{page.name}: bench {verb} {flag}")
    assert not wrong, "flags the parser does not have: " + "; ".join(sorted(set(wrong)))


@pytest.mark.slow
def test_the_docs_build_with_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
