"""What several commands share: the --history options, finding a scenario in a suite, positive
counts, and where output goes.

Outputs follow one rule, checked when the command line is read (argparse `type`s, so a bad one
exits 2 before any work): a file output (`--output FILE`, `bench history --html FILE`,
`bench history export FILE.csv`) is a file path, never an existing folder; a folder output
(`--reports`, `--out`) is a folder, never an existing file; folders missing on the way to
either are created when it is written. A path that runs through a file, or whose nearest
existing folder is not writable, is refused naming that folder."""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
from pathlib import Path

from bench.errors import UserError
from bench.history.store import DEFAULT_HISTORY, DEFAULT_TIMEOUT_S, HISTORY_ENV, history_location
from bench.suite.scenarios import Scenario, load_suite


def add_history_option(parser: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """--history and --history-timeout (on subcommands with SUPPRESS, so the parent's value stands).
    $BENCH_HISTORY is the default: argparse checks a string default with `type`, so a bad one exits 2."""
    parser.add_argument(
        "--history",
        type=history_location,
        metavar="PATH|URL",
        default=argparse.SUPPRESS if sub else os.environ.get(HISTORY_ENV) or DEFAULT_HISTORY,
        help=f"the history: an SQLite file or a postgresql:// URL (default: ${HISTORY_ENV}, else {DEFAULT_HISTORY})",
    )
    parser.add_argument(
        "--history-timeout",
        type=float,
        metavar="SECONDS",
        default=argparse.SUPPRESS if sub else DEFAULT_TIMEOUT_S,
        help=f"how long to wait for another process writing the history (default {DEFAULT_TIMEOUT_S:g})",
    )


def positive_int(text: str) -> int:
    """A count or a limit that must be at least 1 (an argparse `type`)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def output_problem(path: Path, *, folder: bool) -> str | None:
    """Why `path` cannot be written as a file (folder=False) or a folder, under the rule above; None if it can."""
    if folder and path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder; give a folder (it is created when missing)"
    if not folder and path.is_dir():
        return f"{path} is a folder, not a file; give the path of the file to write (missing folders are created)"
    nearest = path if path.is_dir() else next(p for p in path.parents if p.exists() or p == p.parent)
    if nearest.exists() and not nearest.is_dir():
        return f"{path} cannot be created: {nearest} is a file, not a folder"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"{path} cannot be created: the folder {nearest} is not writable"
    return None


def output_file(text: str) -> Path:
    """A file output's path, checked (an argparse `type`)."""
    if problem := output_problem(Path(text), folder=False):
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def output_folder(text: str) -> Path:
    """A folder output's path, checked (an argparse `type`)."""
    if problem := output_problem(Path(text), folder=True):
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def write_output(path: Path, text: str) -> None:
    """Write a file output, creating missing folders on the way; a UserError naming it if the disk says no."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None


def find_scenario(suite_path: Path, scenario_id: str) -> Scenario:
    """The suite's scenario with this id; a UserError with close ids when there is none."""
    suite = load_suite(suite_path, max_scenarios=10**9)
    by_id = {s.id: s for s in suite.scenarios}
    if scenario_id not in by_id:
        hint = difflib.get_close_matches(scenario_id, list(by_id), n=3)
        raise UserError(
            f"{suite_path} has no scenario '{scenario_id}'"
            + (f"; did you mean {', '.join(hint)}?" if hint else "; 'bench validate' lists its scenario ids")
        )
    return by_id[scenario_id]


MIN_FREE_DISK_BYTES = 256 * 2**20  # a run writes raw rounds, RSS samples and model artifacts


def check_writable(reports: Path) -> None:
    """Fail at the start, not an hour in, when results could not be written."""
    if problem := output_problem(reports, folder=True):
        raise UserError(f"the reports folder: {problem}")
    try:
        reports.mkdir(parents=True, exist_ok=True)
        probe = reports / ".write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"the reports folder {reports} is not writable: {exc.strerror or exc}") from None
    free = shutil.disk_usage(reports).free
    if free < MIN_FREE_DISK_BYTES:
        raise UserError(
            f"the reports folder {reports} has only {free >> 20} MiB free; a run needs at least "
            f"{MIN_FREE_DISK_BYTES >> 20} MiB for its results and model artifacts"
        )
