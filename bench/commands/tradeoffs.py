"""`bench tradeoffs`: per model, what each precision and load mode buys and costs (bench.analysis.tradeoffs)."""

from __future__ import annotations

import argparse
import sys

from bench.analysis.tradeoffs import FORMATS, build_groups, render_json, render_markdown, render_table
from bench.commands.common import add_history_option
from bench.errors import UserError
from bench.history.store import resolve


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench tradeoffs` to the CLI's subcommands."""
    parser = commands.add_parser(
        "tradeoffs",
        parents=[common],
        help=summary,
        description="Per model, batch size and threads: each precision and load mode's median and p99 latency, "
        "speed-up over fp32 eager, fidelity, accuracy (with data:), peak RSS and artifact size, with the "
        "Pareto frontier of latency against fidelity marked and one sentence reading it.",
    )
    parser.add_argument("run", metavar="RUN", help="run folder or run id in the history")
    parser.add_argument("--model", metavar="M", help="only this model")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    add_history_option(parser)
    parser.set_defaults(handler=tradeoffs_command)


def tradeoffs_command(args: argparse.Namespace) -> int:
    snapshot = resolve(args.run, args.history, args.history_timeout)
    records = [result.record for result in snapshot.results.values()]
    groups = build_groups(records, snapshot.environment.get("cpu_model"), args.model)
    if not groups:
        models = sorted({r.model for r in records})
        which = f"model {args.model}" if args.model else "any model"
        raise UserError(f"run {snapshot.run_id} has no measured (ok) row of {which}; its models: {', '.join(models)}")
    render = {"table": render_table, "markdown": render_markdown, "json": render_json}[args.format]
    sys.stdout.write(render(groups))
    return 0
