"""`bench selfcheck`: check the harness's own accuracy and overhead."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.commands.common import find_scenario, output_folder
from bench.errors import UserError
from bench.measure.runner import DEFAULT_WORKER_KIND
from bench.measure.selfcheck import print_selfcheck, run_selfcheck


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench selfcheck` to the CLI's subcommands."""
    selfcheck = commands.add_parser(
        "selfcheck",
        parents=[common],
        help=summary,
        description="Run one small scenario and check the tool itself: (a) harness median against "
        "torch.utils.benchmark.Timer, interleaved in one process; (b) sampled peak RSS against the "
        "kernel's high-water mark; (c) the RSS sampler's cost on latency (sampler toggled on and off); "
        "(d) run-to-run coefficient of variation over new worker processes (forked or fresh, as --worker says).",
    )
    selfcheck.add_argument("--model", default="resnet18", help="model to time (default: resnet18)")
    selfcheck.add_argument("--threads", type=int, help="threads (default: all usable cores, the hardest case)")
    selfcheck.add_argument("--batch-size", type=int, default=1)
    selfcheck.add_argument("--runs", type=int, default=3, help="worker processes for the run-to-run CV (default 3)")
    selfcheck.add_argument(
        "--block-time", type=float, default=0.5, metavar="SECONDS", help="time per interleaved block (default 0.5)"
    )
    selfcheck.add_argument("--reports", type=output_folder, default=Path("reports"))
    selfcheck.add_argument(
        "--scenario",
        metavar="SCENARIO_ID",
        help="check on this scenario of --suite instead of --model (e.g. a text "
        "model from scenarios/text.yaml); --threads overrides its threads",
    )
    selfcheck.add_argument("--suite", type=Path, help="the suite file that has --scenario")
    selfcheck.add_argument("--worker", choices=("fork", "fresh"), help="as bench run --worker")
    selfcheck.set_defaults(handler=selfcheck_command)


def selfcheck_command(args: argparse.Namespace) -> int:
    scenario = None
    if (args.scenario is None) != (args.suite is None):
        raise UserError("--scenario and --suite go together: a scenario id and the suite file that has it")
    if args.scenario is not None:
        scenario = find_scenario(args.suite, args.scenario)
    result = run_selfcheck(
        scenario=scenario,
        model=args.model,
        threads=args.threads,
        batch_size=args.batch_size,
        runs=args.runs,
        block_time_s=args.block_time,
        reports_dir=args.reports,
        worker_kind=args.worker or DEFAULT_WORKER_KIND,
    )
    print_selfcheck(result)
    return 0 if result.passed else 1
