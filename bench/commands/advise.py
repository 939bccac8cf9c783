"""`bench advise`: the cheapest configuration of a suite's model that meets a p99 SLO at a target rate and a
fidelity floor, measured in stages within a budget (bench.advise) into one run folder, with advice.json,
advice.yaml and the report's "Advice" section."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from bench.advise.decide import DEFAULT_FLOOR, AdviceRequest, decide
from bench.advise.output import advice_suite, console_table, write_advice
from bench.advise.space import Candidate, candidates, capacity_scenario
from bench.advise.stages import StageProgress, run_stages
from bench.analysis.plan import Host
from bench.commands.common import check_writable, output_folder, positive_int
from bench.commands.plan import group_costs
from bench.commands.run import report_after_run, warn_shared_hosts
from bench.errors import UserError
from bench.history.store import DEFAULT_HISTORY, HISTORY_ENV, RecordAsItRuns, history_location, refuse_folder
from bench.library_log import LIBRARY_LOG, kept_aside
from bench.measure import fleet
from bench.measure.memory import cpu_count
from bench.measure.runner import (
    DEFAULT_WORKER_KIND,
    RunContext,
    check_resume_mode,
    resume_run,
    start_run,
    write_run_info,
)
from bench.results.advice import FIDELITY_METRICS, UPPER_BOUND_METRICS, Advice, FidelityFloor
from bench.suite.scenarios import load_suite

DEFAULT_BUDGET_MIN = 30.0
DEFAULT_TOP = 3
ADVISE_EPILOG = """\
examples:
  bench advise scenarios/advise.yaml --slo-p99-ms 50 --target-rps 200
  bench advise SUITE --slo-p99-ms 20 --target-rps 5000 --min-fidelity top1=0.98 \\
      --host-cost-per-hour 1.43 --budget-min 60 --top 4
  bench advise fleet.yaml --slo-p99-ms 20 --target-rps 5000 --scheduler tcp://10.0.0.5:8786 \\
      --host-cost c7i=1.43 --host-cost c7g=1.16     advice per host group, each at its price
  bench advise --resume reports/RUN-ID          continue an interrupted advise (with --scheduler on a fleet)

The suite names the model(s) and, optionally, the axes precision, load, threads and batch_size;
an axis it leaves out is searched over everything this host can run (the runtime registry,
thread widths that divide the usable cores, batch 1 and the offline batch). --min-fidelity
metrics: cosine, top1, accuracy, nn (at least VALUE) and kl (at most VALUE); default cosine=0.99.
A request is one sample. exit status: 0 a winner, 1 no configuration meets both the SLO and the
floor (the nearest miss is named), 2 bad input. See docs/choosing-a-deployment.md.
"""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench advise` to the CLI's subcommands."""
    advise = commands.add_parser(
        "advise",
        parents=[common],
        help=summary,
        description=textwrap.fill(
            "Search a suite's configurations in stages inside one run folder, every candidate a row: a short "
            "single-stream screen with fidelity (dropping unsupported, below the fidelity floor and dominated "
            "ones), server-mode capacity at the SLO for the cheapest few, and the winner's rate confirmed once "
            "more; then plan it as bench plan does (hosts, memory binding, cost) and name the cheapest "
            "configuration that meets the SLO and the floor.",
            88,
        ),
        epilog=ADVISE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    advise.add_argument(
        "suite", type=Path, nargs="?", help="suite file naming the model(s), e.g. scenarios/advise.yaml"
    )
    advise.add_argument("--slo-p99-ms", type=float, metavar="MS", help="p99 latency bound of one request, ms")
    advise.add_argument("--target-rps", type=float, metavar="R", help="target requests (samples) per second")
    advise.add_argument(
        "--min-fidelity",
        metavar="METRIC=VALUE",
        help=f"the fidelity floor (default {DEFAULT_FLOOR.metric}={DEFAULT_FLOOR.value:g}); METRIC: "
        + "; ".join(f"{k}: {v}" for k, v in FIDELITY_METRICS.items()),
    )
    advise.add_argument("--host-cost-per-hour", type=float, metavar="P", help="price of one host per hour")
    advise.add_argument(
        "--host-cost",
        action="append",
        default=[],
        metavar="GROUP=PRICE",
        help="with --scheduler and a suite with hosts: groups, a group's price per hour (repeatable; a group "
        "not named costs --host-cost-per-hour): each group gets its own advice at its own price",
    )
    advise.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="measure the stages on a Dask fleet (as bench run --scheduler); a suite's hosts: groups are each "
        "advised on their own measured machine (needs: pip install .[fleet])",
    )
    advise.add_argument(
        "--connect-timeout",
        type=float,
        default=fleet.DEFAULT_CONNECT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"with --scheduler: give up if the scheduler does not answer within this time "
        f"(default {fleet.DEFAULT_CONNECT_TIMEOUT_S:g})",
    )
    advise.add_argument(
        "--budget-min",
        type=float,
        default=DEFAULT_BUDGET_MIN,
        metavar="M",
        help=f"minutes of measuring at most (default {DEFAULT_BUDGET_MIN:g}); what does not fit is listed as "
        "not_measured",
    )
    advise.add_argument(
        "--top",
        type=positive_int,
        default=DEFAULT_TOP,
        metavar="K",
        help=f"load-test the K cheapest candidates of each model's screen frontier (default {DEFAULT_TOP})",
    )
    advise.add_argument(
        "--reports", type=output_folder, default=Path("reports"), help="where run folders go (default: reports)"
    )
    advise.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted advise run folder")
    advise.add_argument("--label", help="record the run in the history with this label (as bench run does)")
    advise.add_argument(
        "--history",
        type=history_location,
        metavar="PATH|URL",
        default=os.environ.get(HISTORY_ENV),
        help=f"the history to record the run in (default: ${HISTORY_ENV}, else history.sqlite in the --reports folder)",
    )
    advise.add_argument("--no-history", action="store_true", help="do not record the run in the history")
    advise.set_defaults(handler=advise_command)


def _refuse(flag: str, value: Any, expected: str) -> UserError:
    return UserError(f"{flag} {value!r} is not usable: expected {expected}; nothing was measured.")


def parse_floor(text: str | None) -> FidelityFloor:
    """--min-fidelity METRIC=VALUE; UserError naming what is expected."""
    if text is None:
        return DEFAULT_FLOOR
    metric, _, number = text.partition("=")
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if metric not in FIDELITY_METRICS:
        raise _refuse("--min-fidelity", text, f"METRIC=VALUE with METRIC one of {', '.join(FIDELITY_METRICS)}")
    upper = metric in UPPER_BOUND_METRICS
    if not math.isfinite(value) or value < 0 or (not upper and value > 1):
        bound = "a number >= 0 (an upper bound)" if upper else "a number from 0 to 1"
        raise _refuse("--min-fidelity", text, f"{metric}=VALUE with VALUE {bound}")
    return FidelityFloor(metric, value)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The request's figures from the flags, checked (exit 2 before anything is measured)."""
    for flag, value in (("--slo-p99-ms", args.slo_p99_ms), ("--target-rps", args.target_rps)):
        if value is None:
            raise UserError(f"{flag} is required (with a suite); --resume reads it from the run folder")
        if not (math.isfinite(value) and value > 0):
            raise _refuse(flag, value, "a number > 0")
    if not (math.isfinite(args.budget_min) and args.budget_min > 0):
        raise _refuse("--budget-min", args.budget_min, "minutes > 0")
    cost = args.host_cost_per_hour
    if cost is not None and not (math.isfinite(cost) and cost >= 0):
        raise _refuse("--host-cost-per-hour", cost, "a price >= 0")
    floor = parse_floor(args.min_fidelity)
    return {
        "slo_p99_ms": args.slo_p99_ms,
        "target_rps": args.target_rps,
        "min_fidelity": f"{floor.metric}={floor.value:g}",
        "host_cost_per_hour": cost,
        "host_costs": group_costs(args),
        "budget_min": args.budget_min,
        "top": args.top,
    }


def check_host_costs(costs: dict[str, float], suite_path: Path, groups: tuple[str, ...], on_fleet: bool) -> None:
    """--host-cost prices a fleet suite's host groups; UserError (before anything is measured) for any other use."""
    if not costs:
        return
    named = " ".join(f"--host-cost {g}={p:g}" for g, p in costs.items())
    if not on_fleet or not groups:
        missing = "no --scheduler was given" if not on_fleet else f"{suite_path} has no hosts: groups"
        raise UserError(
            f"{named}: a host group's price applies to an advise on a Dask fleet (--scheduler ADDRESS) whose suite "
            f"names host groups (hosts:), and {missing}; price the one host type with --host-cost-per-hour instead. "
            "Nothing was measured."
        )
    unknown = sorted(set(costs) - set(groups))
    if unknown:
        raise UserError(
            f"{named}: {suite_path} has no host group {', '.join(unknown)} (its hosts: {', '.join(groups)}); "
            "nothing was measured."
        )


def _request(settings: dict[str, Any], host: Host) -> AdviceRequest:
    return AdviceRequest(
        slo_p99_s=settings["slo_p99_ms"] / 1e3,
        target_rps=settings["target_rps"],
        floor=parse_floor(settings["min_fidelity"]),
        host=host,
        budget_s=settings["budget_min"] * 60,
        top_k=settings["top"],
    )


# The flags of the request, which a resumed advise reads from its run folder (argparse's dest of each).
_REQUEST_FLAGS = {
    "--slo-p99-ms": "slo_p99_ms",
    "--target-rps": "target_rps",
    "--min-fidelity": "min_fidelity",
    "--host-cost-per-hour": "host_cost_per_hour",
    "--host-cost": "host_cost",
}


def advise_command(args: argparse.Namespace) -> int:
    with kept_aside(enabled=not args.debug) as library:
        if (args.suite is None) == (args.resume is None):
            raise UserError("give either a suite file to advise on or --resume RUN (not both)")
        given = [flag for flag, value in _REQUEST_FLAGS.items() if getattr(args, value) not in (None, [])]
        if args.resume is not None and given:
            raise UserError(
                f"--resume continues an advise with the request it started with (its run.json); {', '.join(given)} "
                "cannot change it: start a new advise for another request"
            )
        if args.resume is not None:  # before connecting: a fleet advise resumes on a fleet only, a local one here only
            check_resume_mode(args.resume, on_fleet=args.scheduler is not None)
        cores = cpu_count()
        history_path = None
        if not args.no_history:  # as bench run: beside the run folder unless given, refused before measuring
            where = args.resume.parent if args.resume is not None else args.reports
            history_path = args.history or where / DEFAULT_HISTORY.name
            refuse_folder(history_path)
        suite = settings = None
        if args.resume is None:
            settings = _settings(args)
            suite = load_suite(args.suite)
            check_host_costs(settings["host_costs"], args.suite, suite.hosts, args.scheduler is not None)
            if suite.hosts and args.scheduler is None:
                raise UserError(
                    f"{args.suite}: the suite names host groups (hosts: {', '.join(suite.hosts)}), which only a "
                    "fleet has; advise on them with --scheduler ADDRESS, or remove 'hosts' to advise here"
                )
            generating = sorted({s.model for s in suite.scenarios if s.generate is not None})
            if generating:
                raise UserError(
                    f"{args.suite}: bench advise plans single calls against a p99 SLO, and the suite's "
                    f"{', '.join(generating)} has a generate: block (a generation request is judged on its time to "
                    "first token and per output token): measure it with capacity: {slo_ttft_ms, slo_tpot_ms} in "
                    "bench run and plan it with bench plan (docs/generative-models.md), or remove generate: to "
                    "advise on its forward calls"
                )
            check_writable(args.reports)
        client = fleet.connect(args.scheduler, args.connect_timeout) if args.scheduler is not None else None
        try:
            return _advise(args, library, suite, settings, client, cores, history_path)
        finally:
            if client is not None:
                client.close()


def _advise(args, library, suite, settings, client, cores: int, history_path: Path | None) -> int:
    """The advise itself, once the flags are checked and the fleet (`client`, or None) answers."""
    on_fleet = client is not None
    if args.resume is not None:
        context = resume_run(
            args.resume, worker_kind=DEFAULT_WORKER_KIND, start_workers=not on_fleet, on_fleet=on_fleet
        )
        settings = _stored_settings(context)
        workers = fleet.check_workers(client, context.suite) if on_fleet else []
        print(f"bench: resuming the advise {context.run_id}", file=sys.stderr)
    else:
        assert suite is not None and settings is not None
        # Before a run folder exists: a fleet that cannot run the suite leaves nothing behind.
        workers = fleet.check_workers(client, suite) if on_fleet else []
        context = start_run(suite, args.reports, worker_kind=DEFAULT_WORKER_KIND, start_workers=not on_fleet)
        fleet_info = {"scheduler": args.scheduler, "fleet_workers": [w.address for w in workers]} if on_fleet else {}
        write_run_info(context, advise=settings, **fleet_info)
        print(f"bench: advise {context.run_id} on {args.suite}", file=sys.stderr)
    library.attach(context.run_dir / LIBRARY_LOG)
    context.debug = args.debug
    warn_shared_hosts(workers)
    groups = _groups(settings, context, client, workers, cores)
    for group, (items, request) in groups.items():
        print(
            f"bench: {'host group ' + group + ': ' if group else ''}{len(items)} candidate(s) "
            f"({sum(c.unsupported is not None for c in items)} unsupported there) on {request.host.cores} cores, "
            f"p99 <= {request.slo_p99_s * 1e3:g} ms at {request.target_rps:g} requests/s, fidelity "
            f"{request.floor.text}, budget {settings['budget_min']:g} min",
            file=sys.stderr,
        )
    stage_progress = StageProgress()
    history = None
    if history_path is not None:
        history = RecordAsItRuns(stage_progress, history_path, context.run_dir, label=args.label)
    try:
        every = run_stages(
            context, list(groups.values()), stage_progress=stage_progress, progress=history, client=client
        )
    except KeyboardInterrupt:
        again = f" --scheduler {args.scheduler}" if on_fleet else ""
        print(
            f"\nbench: advise interrupted; continue it with: bench advise --resume {context.run_dir}{again}",
            file=sys.stderr,
        )
        if history is not None:
            history.finish()
        raise
    advices = {
        group: dataclasses.replace(decide(stages.measured(), request, stages.spent_s), run_id=context.run_id)
        for (group, (_, request)), stages in zip(groups.items(), every, strict=True)
    }
    advice = overall(advices)
    suite_yaml = None
    if advice.winner is not None:
        item = next(c for items, _ in groups.values() for c in items if c.id == advice.winner.scenario_id)
        winner = capacity_scenario(item.scenario, item.capacity, settings["slo_p99_ms"], item.cores)
        suite_yaml = advice_suite(advice, winner, context.suite.text, Path(_suite_dir(context)))
    written = write_advice(context.run_dir, advice, suite_yaml)
    for group, one in advices.items() if advice.groups else [(None, advice)]:
        print()
        if group is not None:
            print(f"host group {group} ({one.host}):")
        print(console_table(one))
        print()
        print(("winner: " + one.winner.scenario_id if one.winner else "no winner") + f": {one.why}")
        if one.runner_up:
            print(f"runner-up: {one.runner_up}")
    if advice.groups:
        print(f"\nacross the host groups: {advice.why}")
    print(f"\nrun folder: {context.run_dir}")
    for path in written:
        print(f"{path.name}: {path}")
    report_after_run(context.run_dir)
    if history is not None:
        history.finish()
    return 0 if advice.winner is not None else 1


def _groups(
    settings: dict[str, Any], context: RunContext, client, workers: list[fleet.FleetWorker], cores: int
) -> dict[str | None, tuple[list[Candidate], AdviceRequest]]:
    """The candidates and request of each host group (None: this machine, or a fleet without groups: the least
    of its hosts): each group on its own hosts' usable cores and memory, at its own price."""
    price = settings["host_cost_per_hour"]
    if client is None:
        host = Host(cores, int(context.environment.get("memory_total_bytes") or 0), price, "the measured machine")
        return {None: (candidates(context.suite, cores), _request(settings, host))}
    groups: tuple[str | None, ...] = context.suite.hosts or (None,)
    found = fleet.group_hosts(client, workers, groups)
    costs = settings.get("host_costs") or {}
    out: dict[str | None, tuple[list[Candidate], AdviceRequest]] = {}
    for group in groups:
        facts = found[group]
        scenarios = tuple(s for s in context.suite.scenarios if s.host_group == group)
        subset = dataclasses.replace(context.suite, scenarios=scenarios)
        source = f"{group}'s machine" if group else "the fleet's hosts"
        host = Host(facts.cores, facts.memory_total_bytes, costs.get(group, price) if group else price, source)
        out[group] = (candidates(subset, facts.cores), _request(settings, host))
    return out


def overall(advices: dict[str | None, Advice]) -> Advice:
    """One advice as it is (a single host type), or, per host group, the advice of the group whose winner costs
    least per million requests (then needs the fewest hosts; without every winner's price, the suite's first
    group with a winner) with every group's under `groups`."""
    if list(advices) == [None]:
        return advices[None]
    named = {str(g): a for g, a in advices.items()}
    winners = {g: a.winner for g, a in named.items() if a.winner is not None}
    if not winners:
        group, best = next(iter(named.items()))
        why = "no host group has a configuration that meets both: " + "; ".join(
            f"{g}: {a.why}" for g, a in named.items()
        )
    elif any(w.cost_per_million is None for w in winners.values()):
        group = next(iter(winners))  # the suite's first group with a winner
        best = named[group]
        unpriced = ", ".join(g for g, w in winners.items() if w.cost_per_million is None)
        why = (
            f"host group {group}'s advice is shown first; without a price for host group(s) {unpriced} "
            f"(--host-cost GROUP=PRICE) the groups are not ranked: {best.why}"
        )
    else:
        group = min(winners, key=lambda g: (winners[g].cost_per_million, winners[g].hosts or 0))
        best = named[group]
        why = f"host group {group} serves it cheapest: {best.why}"
    return dataclasses.replace(best, why=why, groups=named)


def _run_info(context: RunContext) -> dict[str, Any]:
    return json.loads((context.run_dir / "run.json").read_text(encoding="utf-8"))


def _suite_dir(context: RunContext) -> str:
    """Where the suite's relative paths start: the original suite's folder, also when resumed."""
    return _run_info(context).get("suite_dir") or str(context.suite.path.absolute().parent)


def _stored_settings(context: RunContext) -> dict[str, Any]:
    """The flags an advise run started with (run.json's `advise`); UserError for a run folder of another kind."""
    settings = _run_info(context).get("advise")
    if not isinstance(settings, dict):
        raise UserError(
            f"{context.run_dir} is not a bench advise run (its run.json has no 'advise'); resume it with bench run"
        )
    return settings
