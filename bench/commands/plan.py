"""`bench plan`: how many hosts a target load needs, from a run's measured capacity. The command turns
its flags into a PlanRequest per host (group) and prints bench.analysis.plan's answer."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from bench.analysis.plan import DEFAULT_HEADROOM, GIB, Host, PlanRequest, make_plan, render_json, render_markdown
from bench.commands.common import add_history_option, output_file, write_output
from bench.errors import UserError
from bench.history.store import resolve
from bench.results.record import ResultRecord

PLAN_EPILOG = """\
examples:
  bench plan --run reports/RUN-ID --slo-p99-ms 50 --target-qps 20000
  bench plan --run reports/RUN-ID --slo-p99-ms 50 --target-qps 20000 \\
      --host-cores 64 --host-mem-gib 256 --host-cost-per-hour 2.5 --headroom 0.3 --format json

RUN is a run folder (reports/<run-id>) or a run id in the history, measured with a
`capacity:` block in its suite. Without --host-* the host is the measured machine.
One request is one call on the scenario's batch. exit status: 0 every scenario has a plan,
1 some scenario has none (an unreachable SLO, no instance fits the host, or its capacity
measurement failed), 2 bad input.
"""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench plan` to the CLI's subcommands."""

    plan = commands.add_parser(
        "plan",
        parents=[common],
        help=summary,
        description=textwrap.fill(
            "From a run's capacity measurements (suites with a `capacity:` block), answer per scenario: "
            "instances per host (bounded by cores and by memory), requests/s per host at the p99 SLO, hosts "
            "needed with headroom, cost per hour and per million requests, and which resource binds. The "
            "scaling assumption and the sweep behind it are printed with the plan.",
            88,
        ),
        epilog=PLAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument("--run", required=True, metavar="RUN", help="run folder or run id with capacity rows")
    plan.add_argument("--slo-p99-ms", type=float, required=True, metavar="MS", help="p99 latency bound, ms")
    plan.add_argument("--target-qps", type=float, required=True, metavar="QPS", help="target requests per second")
    plan.add_argument("--host-cores", type=int, metavar="N", help="cores per host (default: the measured machine's)")
    plan.add_argument("--host-mem-gib", type=float, metavar="GIB", help="memory per host, GiB (default: measured)")
    plan.add_argument("--host-cost-per-hour", type=float, metavar="COST", help="price of one host per hour")
    plan.add_argument(
        "--headroom",
        type=float,
        default=DEFAULT_HEADROOM,
        metavar="FRACTION",
        help=f"spare capacity kept per host, 0 to <1 (default {DEFAULT_HEADROOM})",
    )
    plan.add_argument(
        "--host-cost",
        action="append",
        default=[],
        metavar="GROUP=PRICE",
        help="a fleet run's host group and its price per hour (repeatable), e.g. c7i-8xlarge=1.43: each group "
        "is planned on its own measured machine and the cheapest is named",
    )
    plan.add_argument("--scenario", action="append", metavar="ID", help="only this scenario (repeatable)")
    plan.add_argument("--format", choices=("markdown", "json"), default="markdown", help="default: markdown")
    plan.add_argument("--output", type=output_file, metavar="FILE", help="write there instead of to stdout")
    add_history_option(plan)
    plan.set_defaults(handler=plan_command)


def _check(ok: bool, flag: str, value: Any, expected: str) -> None:
    if not ok:
        raise UserError(
            f"{flag} {value!r} is not a usable figure: expected {expected}. The plan divides by these figures, "
            "so a nonsense value would give a nonsense number of hosts; nothing was computed."
        )


def check_figures(args: argparse.Namespace) -> None:
    """UserError (exit 2) for any figure that cannot describe a load or a host."""

    def finite(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    _check(finite(args.slo_p99_ms) and args.slo_p99_ms > 0, "--slo-p99-ms", args.slo_p99_ms, "milliseconds > 0")
    _check(finite(args.target_qps) and args.target_qps > 0, "--target-qps", args.target_qps, "requests/s > 0")
    _check(
        finite(args.headroom) and 0 <= args.headroom < 1,
        "--headroom",
        args.headroom,
        "a fraction from 0 to below 1 (0.3 keeps 30 % spare)",
    )
    if args.host_cores is not None:
        _check(args.host_cores >= 1, "--host-cores", args.host_cores, "a whole number of cores >= 1")
    if args.host_mem_gib is not None:
        _check(finite(args.host_mem_gib) and args.host_mem_gib > 0, "--host-mem-gib", args.host_mem_gib, "GiB > 0")
    if args.host_cost_per_hour is not None:
        _check(
            finite(args.host_cost_per_hour) and args.host_cost_per_hour >= 0,
            "--host-cost-per-hour",
            args.host_cost_per_hour,
            "a price >= 0",
        )
    group_costs(args)


def group_costs(args: argparse.Namespace) -> dict[str, float]:
    """--host-cost GROUP=PRICE as a mapping; UserError for anything else."""
    costs: dict[str, float] = {}
    for item in args.host_cost:
        group, _, price = item.partition("=")
        try:
            value = float(price)
        except ValueError:
            value = math.nan
        _check(
            bool(group) and math.isfinite(value) and value >= 0,
            "--host-cost",
            item,
            "GROUP=PRICE with a price >= 0, e.g. c7i-8xlarge=1.43",
        )
        costs[group] = value
    return costs


def group_requests(
    args: argparse.Namespace, records: Sequence[ResultRecord], base: PlanRequest
) -> dict[str, PlanRequest]:
    """Per host group of a fleet run: its own measured machine (unless --host-* say otherwise) and price."""
    costs = group_costs(args)
    groups = {r.host_group: r for r in records if r.host_group and r.capacity}
    unknown = sorted(set(costs) - set(groups))
    if unknown:
        raise UserError(
            f"--host-cost names host group(s) {', '.join(unknown)} that the run has no capacity rows for "
            f"(it has: {', '.join(sorted(groups)) or 'none'})"
        )
    requests = {}
    for group, record in groups.items():
        capacity = record.capacity
        assert capacity is not None
        cores = args.host_cores if args.host_cores is not None else capacity.usable_cores
        memory = int(args.host_mem_gib * GIB) if args.host_mem_gib is not None else capacity.memory_total_bytes
        if memory is None:
            raise UserError(
                f"the run does not say how much memory host group {group}'s machine had (its capacity rows "
                "predate that field); give --host-mem-gib"
            )
        source = "given" if args.host_cores is not None and args.host_mem_gib is not None else f"{group}'s machine"
        host = Host(cores, memory, costs.get(group, args.host_cost_per_hour), source)
        requests[group] = dataclasses.replace(base, host=host)
    return requests


def plan_request(args: argparse.Namespace, environment: dict[str, Any], measured_cores: int | None) -> PlanRequest:
    """The load and the host: the figures given, the rest from the measured machine."""
    given = args.host_cores is not None or args.host_mem_gib is not None
    cores = args.host_cores if args.host_cores is not None else measured_cores
    memory = int(args.host_mem_gib * GIB) if args.host_mem_gib is not None else environment.get("memory_total_bytes")
    if cores is None or memory is None:
        raise UserError(
            "the run does not say how many cores or how much memory its machine had (environment.json); "
            "give --host-cores and --host-mem-gib"
        )
    source = "given" if given else "the measured machine"
    if given and (args.host_cores is None or args.host_mem_gib is None):
        source = "given, the rest from the measured machine"
    host = Host(cores=int(cores), memory_bytes=int(memory), cost_per_hour=args.host_cost_per_hour, source=source)
    return PlanRequest(args.slo_p99_ms / 1e3, args.target_qps, args.headroom, host)


def plan_command(args: argparse.Namespace) -> int:
    check_figures(args)
    snapshot = resolve(args.run, args.history, args.history_timeout)
    records = [result.record for result in snapshot.results.values()]
    if args.scenario:
        unknown = [s for s in args.scenario if s not in snapshot.results]
        if unknown:
            raise UserError(f"run {snapshot.run_id} has no scenario {', '.join(unknown)}")
        records = [r for r in records if r.scenario_id in args.scenario]
    with_capacity = [r for r in records if r.capacity is not None]
    if not with_capacity:
        raise UserError(
            f"run {snapshot.run_id} ({snapshot.source}) has no capacity measurements: add a `capacity:` block "
            "(with slo_p99_ms) to the suite's defaults or include entries and run it again, e.g. "
            "scenarios/capacity.yaml"
        )
    measured_cores = next((r.capacity.usable_cores for r in with_capacity if r.capacity), None)
    request = plan_request(args, snapshot.environment, measured_cores or snapshot.environment.get("usable_cores"))
    groups = group_requests(args, with_capacity, request)
    plan = make_plan(snapshot.run_id, with_capacity, snapshot.environment, request, groups)
    text = render_json(plan) if args.format == "json" else render_markdown(plan)
    if args.output:
        write_output(args.output, text)
        print(f"plan: {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0 if plan.complete else 1
