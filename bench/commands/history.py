"""`bench history`: list the recorded runs, one scenario's metric over time (as text or a page of
trend charts), and `import` / `export` of run folders and rows."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from bench.analysis.changepoint import detect_steps
from bench.commands.common import add_history_option, output_file, positive_int
from bench.errors import UserError
from bench.format.text import format_table
from bench.history.store import (
    DEFAULT_TIMEOUT_S,
    HistoryLocation,
    RunRow,
    export_csv,
    import_history,
    list_runs,
    record_run,
    scenario_history,
)
from bench.report.trend import write_trend_html
from bench.results.metrics import METRICS

HISTORY_USAGE = """\
bench history [--history PATH|URL] [--label L] [--branch B] [--limit N]
       bench history --scenario ID [--metric NAME] [--threshold PCT] [...]
       bench history --html FILE [--scenario ID] [--metric NAME] [...]
       bench history import RUN_DIR... [--label L] [--history PATH|URL]
       bench history import HISTORY.sqlite --history postgresql://USER@HOST/DB
       bench history export FILE.csv [--scenario ID] [--round-times] [--history PATH|URL]"""


HISTORY_EPILOG = """\
examples:
  bench history                                   list the runs in reports/history.sqlite
  bench history --scenario resnet18-b1-t2-fp32-eager
                                                  its median latency run after run, steps marked
  bench history --scenario resnet18-b1-t2-fp32-eager --metric peak_rss
  bench history --html trends.html                a chart per scenario, steps marked
  bench history import reports/*/ --label main    record run folders made before the history
  bench history export history.csv                every row of every run, as CSV
  bench history import reports/history.sqlite --history postgresql://bench@db.example/bench
                                                  copy an SQLite history into a team's PostgreSQL one

The history is an SQLite file (default reports/history.sqlite) or a PostgreSQL database
(--history postgresql://USER@HOST/DB, with the [postgres] extra); $BENCH_HISTORY sets the default.

`bench run` records every run here by itself (unless --no-history). Metrics: median, p90,
p99, mean (latency), throughput, load, first_inference, peak_rss (sampled), peak_rss_kernel.
"""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench history` (list, show a scenario, import, export) to the CLI's subcommands."""
    history = commands.add_parser(
        "history",
        parents=[common],
        usage=HISTORY_USAGE,
        help=summary,
        description=textwrap.fill(
            "The history store: every run recorded by `bench run` (or imported), its rows and raw round "
            "times, in one SQLite file or a PostgreSQL database. Without a subcommand, list the runs; with "
            "--scenario, show one metric of one scenario run after run, with detected step changes marked at "
            "the commit where they happened.",
            88,
        ),
        epilog=HISTORY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_history_option(history)
    history.add_argument(
        "--scenario", metavar="ID", help="show this scenario's metric over time instead of the run list"
    )
    history.add_argument(
        "--metric",
        default="median",
        choices=list(METRICS),
        metavar="NAME",
        help="with --scenario: the metric to show (default: median latency; the list is below)",
    )
    history.add_argument("--label", help="only runs with this label")
    history.add_argument("--branch", help="only runs on this git branch")
    history.add_argument("--limit", type=positive_int, metavar="N", help="only the newest N runs")
    history.add_argument(
        "--threshold",
        type=float,
        default=5.0,
        metavar="PCT",
        help="with --scenario: smallest step change to mark, in percent (default 5)",
    )
    history.add_argument(
        "--html",
        type=output_file,
        metavar="FILE",
        help="write a page of trend charts (every scenario, or the --scenario given) with the steps marked",
    )
    history.set_defaults(handler=history_command, history_command=None)

    sub_common = argparse.ArgumentParser(add_help=False)
    sub_common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show full tracebacks on errors"
    )
    add_history_option(sub_common, sub=True)
    actions = history.add_subparsers(title="subcommands (optional)", metavar="{import,export}", dest="history_command")

    do_import = actions.add_parser(
        "import",
        parents=[sub_common],
        help="record existing run folders (or copy an SQLite history) in the history",
        description="Record run folders in the history. Importing a run that is already there changes nothing "
        "(a run imported while still running is brought up to date); --label sets or replaces its label. "
        "A file given instead of a folder is an SQLite history: its runs are copied as they are (into a "
        "PostgreSQL history, say); copying it again adds nothing.",
    )
    do_import.add_argument(
        "runs", type=Path, nargs="+", metavar="RUN_DIR", help="run folder(s), e.g. reports/*/, or SQLite history files"
    )
    do_import.add_argument(
        "--label", help="a label for these runs, e.g. main or pr-123 (for `bench compare --baseline`)"
    )
    do_import.add_argument("--branch", help="the git branch to record (default: from environment.json)")
    do_import.set_defaults(handler=import_command)

    export = actions.add_parser(
        "export",
        parents=[sub_common],
        help="write every recorded row as CSV",
        description="Write every result row of every run (run columns, then each record field flattened, "
        "e.g. latency_s.median) as one CSV file.",
    )
    export.add_argument("out", type=output_file, metavar="FILE.csv", help="the CSV file to write")
    export.add_argument("--scenario", metavar="ID", help="only this scenario")
    export.add_argument("--round-times", action="store_true", help="add a column with every raw round time (JSON)")
    export.set_defaults(handler=export_command)


def history_command(args: argparse.Namespace) -> int:
    if args.html:
        charts = write_trend_html(
            args.history,
            args.html,
            args.metric,
            scenario_id=args.scenario,
            label=args.label,
            branch=args.branch,
            limit=args.limit,
            threshold=args.threshold / 100,
            timeout_s=args.history_timeout,
        )
        print(f"wrote {charts} chart(s) of {METRICS[args.metric].title} to {args.html}")
        return 0
    if args.scenario:
        print(
            format_scenario_history(
                args.history,
                args.scenario,
                args.metric,
                label=args.label,
                branch=args.branch,
                limit=args.limit,
                threshold=args.threshold / 100,
                timeout_s=args.history_timeout,
            )
        )
        return 0
    runs = list_runs(
        args.history, label=args.label, branch=args.branch, limit=args.limit, timeout_s=args.history_timeout
    )
    print(format_runs(runs, args.history))
    return 0


def import_command(args: argparse.Namespace) -> int:
    for run_dir in args.runs:
        if run_dir.is_file():
            if args.label is not None or args.branch is not None:
                raise UserError(f"{run_dir} is a history: its runs are copied with their own labels and branches")
            outcomes = import_history(run_dir, args.history, timeout_s=args.history_timeout)
            for outcome in outcomes:
                print(f"{outcome.describe()} (from {run_dir})")
            added = sum(outcome.action != "unchanged" for outcome in outcomes)
            print(f"copied {added} of the {len(outcomes)} run(s) of {run_dir}; the others were there already")
            continue
        outcome = record_run(
            args.history, run_dir, label=args.label, branch=args.branch, timeout_s=args.history_timeout
        )
        for warning in outcome.warnings:
            print(f"bench: warning: {warning}", file=sys.stderr)
        print(f"{outcome.describe()} ({run_dir})")
    print(f"history: {args.history}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    count = export_csv(
        args.history,
        args.out,
        scenario_id=args.scenario,
        with_round_times=args.round_times,
        timeout_s=args.history_timeout,
    )
    print(f"wrote {count} rows to {args.out}")
    return 0


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return iso.replace("T", " ")[:19]


def format_runs(runs: Sequence[RunRow], history_path: HistoryLocation) -> str:
    if not runs:
        return f"no runs in {history_path}"
    rows = [
        (
            _when(r.started_at),
            r.run_id,
            r.suite or "-",
            (r.git_sha[:10] + ("+" if r.git_dirty else "")) if r.git_sha else "-",
            r.branch or "-",
            r.label or "-",
            f"{r.ok}/{r.scenarios}",
            r.status or "-",
            r.fingerprint or "-",
        )
        for r in runs
    ]
    header = ("started (UTC)", "run id", "suite", "git sha", "branch", "label", "ok", "status", "environment")
    return (
        format_table(header, rows, right=(6,))
        + f"\n\n{len(runs)} run(s) in {history_path} (+ after a sha: uncommitted changes)"
    )


def format_scenario_history(
    history_path: HistoryLocation,
    scenario_id: str,
    metric: str = "median",
    *,
    label: str | None = None,
    branch: str | None = None,
    limit: int | None = None,
    threshold: float = 0.05,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> str:
    points = scenario_history(
        history_path, scenario_id, metric, label=label, branch=branch, limit=limit, timeout_s=timeout_s
    )
    m = METRICS[metric]
    measured = [(i, p) for i, p in enumerate(points) if p.value is not None and p.value > 0]
    fit = detect_steps([p.value for _, p in measured], threshold=threshold)
    marks: dict[int, str] = {}
    step_lines = []
    for step in fit.steps:
        index, point = measured[step.index]
        worse = (step.change > 0) != m.higher_is_better
        env_note = ""
        previous = measured[step.index - 1][1]
        if previous.fingerprint != point.fingerprint:
            env_note = " (the environment changed here too)"
        sha = point.git_sha[:10] if point.git_sha else "no sha"
        marks[index] = f"{'^' if step.change > 0 else 'v'} step {step.change:+.1%} ({'worse' if worse else 'better'})"
        step_lines.append(
            f"  at {point.run_id} (sha {sha}): {m.display(step.before)} -> {m.display(step.after)} "
            f"({step.change:+.1%}, {'worse' if worse else 'better'}){env_note}"
        )
    rows = []
    last_fp = None
    for i, p in enumerate(points):
        env = "" if last_fp in (None, p.fingerprint) else "changed"
        last_fp = p.fingerprint or last_fp
        value = m.display(p.value) if p.value is not None else p.status
        rows.append(
            (
                _when(p.started_at),
                p.run_id,
                p.git_sha[:10] if p.git_sha else "-",
                p.label or p.branch or "-",
                value,
                env,
                marks.get(i, ""),
            )
        )
    header = ("started (UTC)", "run id", "git sha", "label/branch", m.title, "environment", "step")
    out = [
        f"{scenario_id}: {m.title}, {len(points)} run(s)",
        "",
        format_table(header, rows, right=(4,)),
        "",
    ]
    if step_lines:
        out.append(f"{len(step_lines)} step change(s):")
        out.extend(step_lines)
    else:
        out.append("no step change")
    out.append(
        f"(steps: piecewise-constant L1 fit on log values, kept when >= {threshold:.0%} and >= 2x the "
        f"run-to-run noise, here {fit.noise:.1%}; a new level needs 2 runs)"
    )
    return "\n".join(out)
