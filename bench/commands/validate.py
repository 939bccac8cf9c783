"""`bench validate`: check suite files and list the scenarios they expand to."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.common import positive_int
from bench.models.sources import factory_modules
from bench.suite.scenarios import load_suite


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench validate` to the CLI's subcommands."""
    validate = commands.add_parser(
        "validate",
        parents=[common],
        help=summary,
        description="Check suite files and list the scenarios they expand to. Exit status 2 on the first problem.",
    )
    validate.add_argument("suites", type=Path, nargs="+", metavar="SUITE")
    validate.add_argument("--max-scenarios", type=positive_int, default=1000, metavar="N")
    validate.set_defaults(handler=validate_command)


def validate_command(args: argparse.Namespace) -> int:
    for path in args.suites:
        suite = load_suite(path, max_scenarios=args.max_scenarios)
        print(f"{path}: suite '{suite.name}' is valid: {len(suite.scenarios)} scenarios")
        for scenario in suite.scenarios:
            print(f"  {scenario.id}")
        # A suite file is code, like a conftest.py: say which code, where the user reads the suite.
        factories = factory_modules(s.source for s in suite.scenarios if s.source is not None)
        if factories:
            print(f"{path}: runs Python code: `bench run` imports these modules and calls these factories:")
            for spec, origin in factories:
                print(f"  {spec}  ({origin})")
    return 0
