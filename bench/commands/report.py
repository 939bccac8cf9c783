"""`bench report`: write report.html, report.md and results.csv for run folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.commands.common import output_folder
from bench.report import write_report


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench report` to the CLI's subcommands."""
    report = commands.add_parser(
        "report",
        parents=[common],
        help=summary,
        description="Write report.html (one self-contained page: tables and figures), report.md, results.csv "
        "and figures/*.png for a run folder; given several run folders, put them side by side in --out. "
        "'bench run' already does this at the end of every run.",
    )
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run folder(s) under reports/")
    report.add_argument(
        "--out", type=output_folder, help="output folder (default: the run folder; required for several runs)"
    )
    report.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace) -> int:
    result = write_report(args.runs, args.out)
    for warning in result.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    print(f"report: {result.html}\nmarkdown: {result.markdown}\ntable: {result.csv}")
    return 0
