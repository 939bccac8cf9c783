"""What several commands share: the --history options, finding a scenario in a suite, and checking
that the reports folder can take a run's files before any work starts."""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
from pathlib import Path

from bench.errors import UserError
from bench.history import DEFAULT_HISTORY, DEFAULT_TIMEOUT_S, HISTORY_ENV, history_location
from bench.suite import Scenario, load_suite


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
