"""The `bench` command line."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import __version__
from bench.contention import ON_CONTENTION
from bench.errors import UserError
from bench.history import history_location
from bench.nospace import NoSpaceLeft

DESCRIPTION = """\
Benchmark PyTorch and ONNX Runtime models on CPUs.

A suite (a YAML file) lists models, batch sizes, thread counts, precisions and loading
modes; `bench run` measures every combination in its own fresh process and writes a run
folder under reports/ with one result row per scenario.
"""

EPILOG = """\
examples:
  bench validate scenarios/quickstart.yaml   check a suite and list its scenarios
  bench run scenarios/quickstart.yaml        measure it; prints where the results are
  bench report reports/RUN-ID                rebuild report.html / report.md of a run
  bench history                              list the runs recorded in reports/history.sqlite
  bench compare --baseline main reports/RUN-ID   did this run regress against main? (exit 1 if so)
  bench selfcheck                            check the harness against torch's own timer
  bench plan --run reports/RUN-ID --slo-p99-ms 50 --target-qps 20000
                                             hosts needed for a load, from a capacity run
  bench profile tiny_cnn-b1-t1-fp32-eager --suite scenarios/quickstart.yaml
                                             where one scenario's time goes, op by op
  bench run scenarios/pruning.yaml --shuffle run in a seeded random order (drift spread evenly)
  bench run scenarios/hygiene.yaml          what forgetting eval() or no_grad costs (grad_mode, module_mode)
  bench run SUITE --scheduler tcp://HOST:8786   measure it on a Dask fleet of hosts
  bench export reports/RUN-ID --format bencher   a run's rows for a dashboard (also github-action-benchmark,
                                             openmetrics)
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM: stopped like Ctrl-C, but exits 143 (128 + 15) as the convention says; Ctrl-C exits 130."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM takes the same path as Ctrl-C: the running worker is killed, not orphaned,
    # and the run folder is marked interrupted.
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return args.handler(args)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # e.g. `bench validate ... | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt as exc:
        print("bench: interrupted", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 128 + signal.SIGINT
    except Exception as exc:  # anything else is our bug: say so briefly, trace on request
        if args.debug:
            traceback.print_exc()
        else:
            print(
                f"bench: internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")

    parser = argparse.ArgumentParser(
        prog="bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        parents=[common],
        help="measure every scenario of a suite",
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
    run.add_argument("--reports", type=Path, default=Path("reports"), help="where run folders go (default: reports)")
    run.add_argument(
        "--rss-interval",
        type=float,
        metavar="SECONDS",
        help="RSS sampling interval for every scenario (default: the suite's measure.rss_interval_s, 0.01)",
    )
    run.add_argument(
        "--max-scenarios", type=int, default=1000, metavar="N", help="refuse suites larger than N (default 1000)"
    )
    run.add_argument(
        "--label", help="record the run in the history with this label, e.g. main or pr-123 (see bench compare)"
    )
    run.add_argument(
        "--history",
        type=history_location,
        metavar="PATH",
        help="history file to record the run in (default: history.sqlite in the --reports folder)",
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
    run.set_defaults(handler=_cmd_run)

    validate = commands.add_parser(
        "validate",
        parents=[common],
        help="check suite files without running them",
        description="Check suite files and list the scenarios they expand to. Exit status 2 on the first problem.",
    )
    validate.add_argument("suites", type=Path, nargs="+", metavar="SUITE")
    validate.add_argument("--max-scenarios", type=int, default=1000, metavar="N")
    validate.set_defaults(handler=_cmd_validate)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="turn run folders into report.html and report.md",
        description="Write report.html (one self-contained page: tables and figures), report.md, results.csv "
        "and figures/*.png for a run folder; given several run folders, put them side by side in --out. "
        "'bench run' already does this at the end of every run.",
    )
    report.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run folder(s) under reports/")
    report.add_argument("--out", type=Path, help="output folder (default: the run folder; required for several runs)")
    report.set_defaults(handler=_cmd_report)

    models = commands.add_parser(
        "models", parents=[common], help="list the model names a suite can use", description="List model names."
    )
    models.set_defaults(handler=_cmd_models)

    selfcheck = commands.add_parser(
        "selfcheck",
        parents=[common],
        help="check the harness's own accuracy and overhead",
        description="Run one small scenario and check the tool itself: (a) harness median against "
        "torch.utils.benchmark.Timer, interleaved in one process; (b) sampled peak RSS against the "
        "kernel's high-water mark; (c) the RSS sampler's cost on latency (sampler toggled on and off); "
        "(d) run-to-run coefficient of variation over fresh processes.",
    )
    selfcheck.add_argument("--model", default="resnet18", help="model to time (default: resnet18)")
    selfcheck.add_argument("--threads", type=int, help="threads (default: all usable cores, the hardest case)")
    selfcheck.add_argument("--batch-size", type=int, default=1)
    selfcheck.add_argument("--runs", type=int, default=3, help="fresh processes for the run-to-run CV (default 3)")
    selfcheck.add_argument(
        "--block-time", type=float, default=0.5, metavar="SECONDS", help="time per interleaved block (default 0.5)"
    )
    selfcheck.add_argument("--reports", type=Path, default=Path("reports"))
    selfcheck.add_argument(
        "--scenario", metavar="SCENARIO_ID", help="check on this scenario of --suite instead of --model (e.g. a text "
        "model from scenarios/text.yaml); --threads overrides its threads",
    )  # fmt: skip
    selfcheck.add_argument("--suite", type=Path, help="the suite file that has --scenario")
    selfcheck.set_defaults(handler=_cmd_selfcheck)

    profile = commands.add_parser(
        "profile",
        parents=[common],
        help="profile one scenario operator by operator",
        description="Run one scenario of a suite under torch.profiler (ONNX Runtime's session profiler for "
        "load: onnxruntime) in a fresh process and write ops.csv (the operator table), trace.json (opens in "
        "ui.perfetto.dev or chrome://tracing) and profile.json (the summary). Untimed: for the timed "
        "figures use 'bench run'.",
    )
    profile.add_argument("scenario_id", metavar="SCENARIO_ID", help="a scenario id, as 'bench validate' lists them")
    profile.add_argument("--suite", type=Path, required=True, help="the suite file that has the scenario")
    profile.add_argument("--iterations", type=int, default=50, metavar="N", help="profiled calls (default 50)")
    profile.add_argument("--out", type=Path, help="output folder (default: reports/profile-<time>-<scenario>)")
    profile.add_argument("--reports", type=Path, default=Path("reports"), help="reports folder (artifact cache)")
    profile.set_defaults(handler=_cmd_profile)

    from bench import compare, export, history, plan, tradeoffs

    history.add_parsers(commands, common)
    compare.add_parsers(commands, common)
    plan.add_parsers(commands, common)
    export.add_parsers(commands, common)
    tradeoffs.add_parsers(commands, common)
    return parser


def _find_scenario(suite_path: Path, scenario_id: str) -> Any:
    """The suite's scenario with this id; a UserError with close ids when there is none."""
    import difflib

    from bench.suite import load_suite

    suite = load_suite(suite_path, max_scenarios=10**9)
    by_id = {s.id: s for s in suite.scenarios}
    if scenario_id not in by_id:
        hint = difflib.get_close_matches(scenario_id, list(by_id), n=3)
        raise UserError(
            f"{suite_path} has no scenario '{scenario_id}'"
            + (f"; did you mean {', '.join(hint)}?" if hint else "; 'bench validate' lists its scenario ids")
        )
    return by_id[scenario_id]


def _cmd_profile(args: argparse.Namespace) -> int:
    import datetime as dt

    from bench import backends
    from bench.profiling import flops_figures, format_profile, profile_scenario

    if args.iterations < 1:
        raise UserError(f"--iterations must be an integer >= 1, got {args.iterations}")
    scenario = _find_scenario(args.suite, args.scenario_id)
    _check_writable(args.reports)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or args.reports / f"profile-{stamp}-{scenario.id}"
    if backends.unsupported_reason(scenario) is None:
        print(f"bench: preparing the artifact of {scenario.id} ...", file=sys.stderr)
        try:
            artifact_path = backends.prepare_artifact(scenario, args.reports / ".cache" / "artifacts").path
        except backends.Unsupported as exc:
            print(f"profile of {scenario.id}: unsupported ({exc})")
            return 0
    else:
        artifact_path = Path("-")  # profile_scenario says why, without starting anything
    print(f"bench: profiling {scenario.id} ({args.iterations} calls) ...", file=sys.stderr)
    result = profile_scenario(scenario, artifact_path, out, args.iterations, timeout_s=scenario.timeout_s)
    print(format_profile(result))
    if result.ok:
        figures = flops_figures(scenario, result.summary["profiled_median_s"], cache_dir=None, fingerprint=None)
        if figures["flops"]:
            print(
                f"FLOPs per call: {figures['flops']:,}; {figures['achieved_gflops']:.2f} GFLOP/s at the profiled "
                f"median (under the profiler; 'bench run' with profile: true gives it at the timed median)"
            )
    return 1 if result.status == "failed" else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from bench.console import ConsoleProgress, summary_table
    from bench.memory import cpu_count
    from bench.runner import ContentionPolicy, check_resume_mode, resume_run, run_suite, start_run
    from bench.suite import load_suite

    if args.rss_interval is not None and not args.rss_interval > 0:
        raise UserError(f"--rss-interval must be a number of seconds > 0, got {args.rss_interval}")
    if (args.suite is None) == (args.resume is None):
        raise UserError("give either a suite file to run or --resume RUN_DIR (not both)")
    if args.contention_retries < 0 or not args.contention_wait >= 0:
        raise UserError("--contention-retries and --contention-wait must be >= 0")
    if args.on_contention != "mark" and args.scheduler is not None:
        raise UserError("--on-contention retry or wait applies to a local run; a fleet run marks contended rows")
    if args.shuffle is not None and args.scheduler is not None:
        raise UserError("--shuffle orders a local run; a fleet run's scenarios already run side by side on its hosts")
    if args.resume is not None:  # before connecting: a fleet run resumes on a fleet only, a local one here only
        check_resume_mode(args.resume, on_fleet=args.scheduler is not None)
    client = None
    if args.scheduler is not None:
        from bench import fleet

        client = fleet.connect(args.scheduler, args.connect_timeout)
    if args.resume is not None:
        context = resume_run(args.resume, rss_interval_s=args.rss_interval, on_fleet=client is not None)
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
        _check_writable(args.reports)
        # Before a run folder exists: a fleet that cannot run the suite leaves nothing behind.
        workers = fleet.check_workers(client, suite) if client is not None else []
        context = start_run(suite, args.reports, rss_interval_s=args.rss_interval)
        print(f"bench: run {context.run_id}: {len(suite.scenarios)} scenarios from {args.suite}", file=sys.stderr)
    progress = ConsoleProgress()
    history = None
    if not args.no_history:
        from bench.history import RecordAsItRuns

        history_path = args.history or context.run_dir.parent / "history.sqlite"
        progress = history = RecordAsItRuns(progress, history_path, context.run_dir, label=args.label)
    try:
        if client is None:
            seed = random.randrange(2**31) if args.shuffle == -1 else args.shuffle
            if seed is not None:
                print(f"bench: running the scenarios in a shuffled order (--shuffle {seed})", file=sys.stderr)
            policy = ContentionPolicy(args.on_contention, args.contention_retries, args.contention_wait)
            run_suite(context, progress, shuffle_seed=seed, on_contention=policy)
        else:
            _run_on_fleet(context, client, args.scheduler, workers, progress)
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
    _report_after_run(context.run_dir)
    if history is not None:
        history.finish()
    failed = [r for r in records if r.status == "failed"]
    if failed:
        print(f"bench: {len(failed)} scenario(s) failed; reasons are in results.jsonl", file=sys.stderr)
        return 1
    return 0


def _run_on_fleet(context, client, address: str, workers, progress) -> None:
    """`workers`: the fleet as fleet.check_workers found it fit for the suite."""
    from bench import fleet
    from bench.runner import write_run_info

    for host, addresses in fleet.shared_hosts(workers).items():
        print(
            f"bench: warning: {len(addresses)} Dask workers share host {host}: their scenarios run at the same "
            "time and disturb each other's figures; run one worker per host for real measurements",
            file=sys.stderr,
        )
    write_run_info(context, scheduler=address, fleet_workers=[w.address for w in workers])
    print(f"bench: sending the scenarios to {len(workers)} worker(s) at {address}", file=sys.stderr)
    try:
        fleet.run_suite_on_fleet(
            context, client, progress, announce=lambda line: print(f"  {line}", file=sys.stderr, flush=True)
        )
    finally:
        client.close()


def _warn_oversubscription(suite, path: Path, cores: int) -> None:
    for threads in sorted({s.threads for s in suite.scenarios if s.threads > cores}):
        print(
            f"bench: warning: {path}: threads={threads} is more than the {cores} usable cores; "
            "those scenarios measure oversubscription",
            file=sys.stderr,
        )


def _report_after_run(run_dir: Path) -> None:
    """The report is a view of results.jsonl: if it fails, the run's results still stand."""
    from bench.report import write_report

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


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    result = write_report(args.runs, args.out)
    for warning in result.warnings:
        print(f"bench: warning: {warning}", file=sys.stderr)
    print(f"report: {result.html}\nmarkdown: {result.markdown}\ntable: {result.csv}")
    return 0


MIN_FREE_DISK_BYTES = 256 * 2**20  # a run writes raw rounds, RSS samples and model artifacts


def _check_writable(reports: Path) -> None:
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


def _cmd_validate(args: argparse.Namespace) -> int:
    from bench.sources import factory_modules
    from bench.suite import load_suite

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


def _cmd_models(args: argparse.Namespace) -> int:
    from bench import models

    print("built-in (tiny, for tests):", ", ".join(models.BUILTIN))
    print("torchvision (weights=None, seeded):")
    for name in models.torchvision_models():
        print(f"  {name}")
    print("your own models (checkpoints, safetensors, factories, TorchScript / ONNX / .pt2 / .tflite files):")
    print("  a mapping in the suite's model list; see README.md, 'Your own models'")
    return 0


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from bench.selfcheck import print_selfcheck, run_selfcheck

    scenario = None
    if (args.scenario is None) != (args.suite is None):
        raise UserError("--scenario and --suite go together: a scenario id and the suite file that has it")
    if args.scenario is not None:
        scenario = _find_scenario(args.suite, args.scenario)
    result = run_selfcheck(
        scenario=scenario,
        model=args.model,
        threads=args.threads,
        batch_size=args.batch_size,
        runs=args.runs,
        block_time_s=args.block_time,
        reports_dir=args.reports,
    )
    print_selfcheck(result)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
