"""`bench export`: a run's rows in a format an existing dashboard reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.analysis.export import FORMATS, WRITERS
from bench.commands.common import output_file, write_output
from bench.results.runfolder import load_run

EPILOG = """\
examples:
  bench export reports/RUN-ID --format github-action-benchmark --output bench.json
      then, in a GitHub workflow: benchmark-action/github-action-benchmark with
      tool: customSmallerIsBetter and output-file-path: bench.json
  bench export reports/RUN-ID --format bencher --output bmf.json
      then: bencher run --adapter json --file bmf.json
  bench export reports/RUN-ID --format openmetrics > bench.prom
      then: push it to a Prometheus pushgateway, or serve the file to a scraper
"""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench export` to the CLI's subcommands."""
    export = commands.add_parser(
        "export",
        parents=[common],
        help=summary,
        description="Write the ok rows of a run folder in a format that an existing dashboard reads: "
        "median and p99 latency, load time, first inference, peak RSS and throughput per scenario. "
        "Failed and unsupported rows carry no figures (OpenMetrics lists them in bench_scenario_ok).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("run", type=Path, metavar="RUN_DIR", help="a run folder written by bench run")
    export.add_argument("--format", choices=FORMATS, required=True, help="the dashboard's format")
    export.add_argument("--output", type=output_file, metavar="FILE", help="write here (default: standard output)")
    export.set_defaults(handler=export_command)


def export_command(args: argparse.Namespace) -> int:
    run = load_run(args.run)
    records = run.records
    for warning in run.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    text = WRITERS[args.format](records)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_output(args.output, text)
        ok = sum(r.status == "ok" for r in records)
        print(f"{args.format}: {ok} of {len(records)} rows with figures -> {args.output}")
    return 0
