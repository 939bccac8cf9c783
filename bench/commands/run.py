"""`bench run`: measure every scenario of a suite (here, or on a Dask fleet), then write the report
and record the run in the history."""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

from bench.checks.contention import ON_CONTENTION
from bench.commands.common import check_writable, output_folder, positive_int
from bench.console import ConsoleProgress, summary_table
from bench.errors import UserError
from bench.history.store import (
    DEFAULT_HISTORY,
    HISTORY_ENV,
    HistoryUnreachable,
    RecordAsItRuns,
    history_location,
    refuse_folder,
)
from bench.library_log import LIBRARY_LOG, LibraryLog, kept_aside
from bench.measure import fleet
from bench.measure.memory import cpu_count
from bench.measure.runner import (
    DEFAULT_WORKER_KIND,
    ContentionPolicy,
    check_resume_mode,
    resume_run,
    run_suite,
    start_run,
    write_run_info,
)
from bench.measure.zygote import fork_available
from bench.report import write_report
from bench.results.nospace import NoSpaceLeft
from bench.results.runfolder import load_run
from bench.suite.scenarios import load_suite


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench run` to the CLI's subcommands."""
    run = commands.add_parser(
        "run",
        parents=[common],
        help=summary,
        description="Measure every scenario of a suite, each in a fresh worker process, and write "
        "reports/<run-id>/ with results.jsonl (one row per scenario, written as each one ends), "
        "environment.json, raw pytest-benchmark JSON and RSS samples.",
    )
    run.add_argument("suite", type=Path, nargs="?", help="suite file, e.g. scenarios/quickstart.yaml")
    run.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue an interrupted run: measure only the scenarios that have no row in its results.jsonl",
    )
    run.add_argument(
        "--reports", type=output_folder, default=Path("reports"), help="where run folders go (default: reports)"
    )
    run.add_argument(
        "--rss-interval",
        type=float,
        metavar="SECONDS",
        help="RSS sampling interval for every scenario (default: the suite's measure.rss_interval_s, 0.01)",
    )
    run.add_argument(
        "--max-scenarios",
        type=positive_int,
        default=1000,
        metavar="N",
        help="refuse suites larger than N (default 1000)",
    )
    run.add_argument(
        "--label", help="record the run in the history with this label, e.g. main or pr-123 (see bench compare)"
    )
    run.add_argument(
        "--history",
        type=history_location,
        metavar="PATH|URL",
        default=os.environ.get(HISTORY_ENV),
        help=f"the history to record the run in: an SQLite file or a postgresql:// URL (default: ${HISTORY_ENV}, "
        "else history.sqlite in the --reports folder)",
    )
    run.add_argument("--no-history", action="store_true", help="do not record the run in the history")
    run.add_argument(
        "--shuffle",
        type=int,
        nargs="?",
        const=-1,
        metavar="SEED",
        help="run the scenarios in a random order (seeded; the seed is printed and kept in run.json), so that the "
        "machine's drift over a long run does not favour the scenarios that come first in the suite",
    )
    run.add_argument(
        "--on-contention",
        choices=ON_CONTENTION,
        default="mark",
        help="a row measured while other processes took the CPU is marked contended (its contention field; "
        "bench compare calls it inconclusive). mark (default): keep it, marked; retry: measure it again, up to "
        "--contention-retries times; wait: before each scenario, wait up to --contention-wait seconds for a "
        "quiet host",
    )
    run.add_argument(
        "--worker",
        choices=("fork", "fresh"),
        help="how each scenario's worker process starts. fork (default on Linux): from a zygote that imported "
        "torch, onnxruntime and pytest once per run, seconds sooner per scenario; fresh: a new interpreter each "
        "(the default elsewhere). Both set threads before any parallel region and share nothing between scenarios",
    )
    run.add_argument("--contention-retries", type=int, default=2, metavar="N", help="with retry (default 2)")
    run.add_argument("--contention-wait", type=float, default=120.0, metavar="SECONDS", help="with wait (default 120)")
    run.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the scenarios on a Dask fleet, e.g. tcp://10.0.0.5:8786: each worker host (started with "
        "`dask worker ADDRESS --nthreads 1`) measures its scenarios one at a time; rows come back here "
        "(needs: pip install .[fleet])",
    )
    run.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="with --scheduler: give up if the scheduler does not answer within this time (default 10)",
    )
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    # Library warnings and log lines go to the run folder's library.log, not between the progress lines.
    with kept_aside(enabled=not args.debug) as library:
        return _run(args, library)


def _run(args: argparse.Namespace, library: LibraryLog) -> int:
    if args.rss_interval is not None and not args.rss_interval > 0:
        raise UserError(f"--rss-interval must be a number of seconds > 0, got {args.rss_interval}")
    if (args.suite is None) == (args.resume is None):
        raise UserError("give either a suite file to run or --resume RUN_DIR (not both)")
    if args.contention_retries < 0 or not args.contention_wait >= 0:
        raise UserError("--contention-retries and --contention-wait must be >= 0")
    if args.worker is not None and args.scheduler is not None:
        raise UserError("--worker applies to a local run; fleet hosts start a fresh worker per scenario")
    if args.worker == "fork" and not fork_available():
        raise UserError("--worker fork needs os.fork and /proc (Linux); use --worker fresh here")
    worker_kind = args.worker or DEFAULT_WORKER_KIND
    if args.shuffle is not None and args.scheduler is not None:
        raise UserError("--shuffle orders a local run; a fleet run's scenarios already run side by side on its hosts")
    if args.resume is not None:  # before connecting: a fleet run resumes on a fleet only, a local one here only
        check_resume_mode(args.resume, on_fleet=args.scheduler is not None)
        if "advise" in load_run(args.resume).info:  # its rows are stages that bench advise decides on
            raise UserError(
                f"{args.resume} is a bench advise run; continue it with: bench advise --resume {args.resume}"
            )
    history_path = None
    if not args.no_history:  # the run folder goes into --reports (or is --resume's), its default history beside it
        history_path = (
            args.history or (args.resume.parent if args.resume is not None else args.reports) / DEFAULT_HISTORY.name
        )
        refuse_folder(history_path)  # before measuring: a run that cannot be recorded is refused as history is
    client = None
    if args.scheduler is not None:
        client = fleet.connect(args.scheduler, args.connect_timeout)
    if args.resume is not None:
        context = resume_run(
            args.resume,
            rss_interval_s=args.rss_interval,
            on_fleet=client is not None,
            worker_kind=worker_kind,
            start_workers=True,
        )
        workers = fleet.check_workers(client, context.suite) if client is not None else []
        print(
            f"bench: resuming {context.run_id}: {len(context.pending)} of {len(context.suite.scenarios)} "
            "scenarios have no row yet",
            file=sys.stderr,
        )
    else:
        suite = load_suite(args.suite, max_scenarios=args.max_scenarios)
        if suite.hosts and client is None:
            raise UserError(
                f"{args.suite}: the suite names host groups (hosts: {', '.join(suite.hosts)}), which only a "
                "fleet run has; run it with --scheduler ADDRESS, or remove 'hosts' to run it here"
            )
        if client is None:
            _warn_oversubscription(suite, args.suite, cpu_count())
        check_writable(args.reports)
        # Before a run folder exists: a fleet that cannot run the suite leaves nothing behind.
        workers = fleet.check_workers(client, suite) if client is not None else []
        context = start_run(
            suite, args.reports, rss_interval_s=args.rss_interval, worker_kind=worker_kind, start_workers=client is None
        )
        print(f"bench: run {context.run_id}: {len(suite.scenarios)} scenarios from {args.suite}", file=sys.stderr)
    library.attach(context.run_dir / LIBRARY_LOG)
    context.debug = args.debug  # a failure in this process: its traceback printed as well as kept
    progress = ConsoleProgress(scenarios=context.to_run)
    history = None
    if history_path is not None:
        progress = history = RecordAsItRuns(progress, history_path, context.run_dir, label=args.label)
    policy = ContentionPolicy(args.on_contention, args.contention_retries, args.contention_wait)
    try:
        if client is None:
            seed = random.randrange(2**31) if args.shuffle == -1 else args.shuffle
            if seed is not None:
                print(f"bench: running the scenarios in a shuffled order (--shuffle {seed})", file=sys.stderr)
            run_suite(context, progress, shuffle_seed=seed, on_contention=policy)
        else:
            _run_on_fleet(context, client, args.scheduler, workers, progress, policy)
    except KeyboardInterrupt:
        print(
            f"\nbench: run interrupted; finished rows are in {context.results_path}; "
            f"continue it with: bench run --resume {context.run_dir}"
            + (f" --scheduler {args.scheduler}" if client is not None else ""),
            file=sys.stderr,
        )
        if history is not None:
            history.finish()
        raise
    except NoSpaceLeft:  # its message says where the rows are and how to resume
        if history is not None:
            history.finish()
        raise
    records = context.records
    print()
    print(summary_table(records))
    print(f"\nrun folder: {context.run_dir}")
    report_after_run(context.run_dir)
    unrecorded = history.finish() if history is not None else None
    failed = [r for r in records if r.status == "failed"]
    if failed:
        print(f"bench: {len(failed)} scenario(s) failed; reasons are in results.jsonl", file=sys.stderr)
    if isinstance(unrecorded, HistoryUnreachable):
        # A CI job must not pass while its run never reached the team's history (a later compare
        # would miss it); the run folder and report are complete, and the warning says how to record it.
        return 2
    return 1 if failed else 0


def _run_on_fleet(context, client, address: str, workers, progress, policy: ContentionPolicy) -> None:
    """`workers`: the fleet as fleet.check_workers found it fit for the suite; each host applies `policy`."""
    warn_shared_hosts(workers)
    write_run_info(context, scheduler=address, fleet_workers=[w.address for w in workers])
    print(f"bench: sending the scenarios to {len(workers)} worker(s) at {address}", file=sys.stderr)
    try:
        fleet.run_suite_on_fleet(
            context,
            client,
            progress,
            on_contention=policy,
            announce=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
        )
    finally:
        client.close()


def warn_shared_hosts(workers: list[fleet.FleetWorker]) -> None:
    for host, addresses in fleet.shared_hosts(workers).items():
        print(
            f"bench: warning: {len(addresses)} Dask workers share host {host}: their scenarios run at the same "
            "time and disturb each other's figures; run one worker per host for real measurements",
            file=sys.stderr,
        )


def _warn_oversubscription(suite, path: Path, cores: int) -> None:
    for threads in sorted({s.threads for s in suite.scenarios if s.threads > cores}):
        print(
            f"bench: warning: {path}: threads={threads} is more than the {cores} usable cores; "
            "those scenarios measure oversubscription",
            file=sys.stderr,
        )


def report_after_run(run_dir: Path) -> None:
    """The report is a view of results.jsonl: if it fails, the run's results still stand."""
    print("writing the report ...", file=sys.stderr, flush=True)
    try:
        result = write_report([run_dir])
    except Exception as exc:
        print(
            f"bench: warning: the report could not be written ({type(exc).__name__}: {exc}); "
            f"the results are complete; try 'bench report {run_dir} --debug'",
            file=sys.stderr,
        )
        return
    for warning in result.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    print(f"report: {result.html}")
