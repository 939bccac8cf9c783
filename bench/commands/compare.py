"""`bench compare`: two runs side by side, beyond the noise, with a verdict per metric (a CI gate)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from bench.analysis.compare import Rule, compare_runs, format_markdown, format_text, github_annotations, to_json
from bench.commands.common import add_history_option, output_file, positive_int, write_output
from bench.errors import UserError
from bench.history.store import DEFAULT_HISTORY, HISTORY_ENV, HistoryError, history_exists, latest_run, resolve

COMPARE_EPILOG = f"""\
BASELINE and CANDIDATE are run folders (reports/<run-id>) or run ids in the history
(--history, else ${HISTORY_ENV}, else {DEFAULT_HISTORY}). --baseline NAME takes the latest run whose label
(or else git branch) is NAME, so then only CANDIDATE is given.

exit status: 0 nothing regressed, 1 something regressed, 2 a usage problem or runs that
cannot be compared (different environments or thread settings, no scenario in common).

examples:
  bench compare reports/20261120-101010-quickstart reports/20261123-143725-quickstart
  bench compare --baseline main reports/20261123-143725-quickstart --format markdown --output comment.md
  bench compare 20261120-101010-quickstart 20261123-143725-quickstart --format json
  bench compare --baseline main reports/20261123-143725-quickstart --format github   (in a GitHub Actions step)
"""


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench compare` to the CLI's subcommands."""
    compare = commands.add_parser(
        "compare",
        parents=[common],
        usage="bench compare [options] BASELINE CANDIDATE\n       bench compare [options] --baseline NAME CANDIDATE",
        help=summary,
        description=textwrap.fill(
            "Match the scenarios of two runs by id and, for median and p99 latency, throughput, load "
            "time and peak RSS, report the change with a confidence interval and a verdict: regressed, improved, "
            "unchanged or inconclusive. Runs from different environments or thread settings are refused.",
            88,
        ),
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", metavar="RUN", help="BASELINE CANDIDATE, or only CANDIDATE with --baseline")
    compare.add_argument(
        "--baseline", metavar="NAME", help="baseline: the latest run in the history with this label or branch"
    )
    add_history_option(compare)
    rule = compare.add_argument_group("the rule")
    rule.add_argument(
        "--threshold",
        type=float,
        default=5.0,
        metavar="PCT",
        help="smallest latency/throughput change to flag, percent (default 5)",
    )
    rule.add_argument(
        "--memory-threshold",
        type=float,
        default=10.0,
        metavar="PCT",
        help="smallest peak RSS change to flag, percent (default 10)",
    )
    rule.add_argument(
        "--load-threshold",
        type=float,
        default=100.0,
        metavar="PCT",
        help="smallest load time change to flag, percent (default 100: one load per run is one noisy event)",
    )
    rule.add_argument(
        "--load-min-ms",
        type=float,
        default=25.0,
        metavar="MS",
        help="and the load time must move by at least this much (default 25)",
    )
    rule.add_argument("--confidence", type=float, default=95.0, metavar="PCT", help="confidence level (default 95)")
    rule.add_argument(
        "--resamples", type=positive_int, default=1000, metavar="N", help="bootstrap resamples (default 1000)"
    )
    rule.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0): same runs, same intervals")
    compare.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="compare runs from different environments or thread settings anyway (every row warns)",
    )
    out = compare.add_argument_group("output")
    out.add_argument(
        "--format",
        choices=("table", "markdown", "json", "github"),
        default="table",
        help="default: table. github: Markdown for a GitHub Actions job summary (regressions first, the rest "
        "folded), appended to $GITHUB_STEP_SUMMARY when it is set and --output is not given, and an ::error "
        "annotation per regressed metric on standard output",
    )
    out.add_argument("--output", type=output_file, metavar="FILE", help="write there instead of to stdout")
    out.add_argument("--changes-only", action="store_true", help="table: leave out unchanged rows")
    compare.set_defaults(handler=compare_command)


def compare_command(args: argparse.Namespace) -> int:
    refs = list(args.runs)
    expected = 1 if args.baseline else 2
    if len(refs) != expected:
        raise (
            UserError(
                "give BASELINE and CANDIDATE" if not args.baseline else "with --baseline NAME give only CANDIDATE"
            )
            if len(refs) > expected
            else UserError(
                "give both BASELINE and CANDIDATE (run folders or run ids), or --baseline NAME and CANDIDATE"
            )
        )
    rule = Rule(
        threshold=args.threshold / 100,
        memory_threshold=args.memory_threshold / 100,
        load_threshold=args.load_threshold / 100,
        load_min_s=args.load_min_ms / 1e3,
        confidence=args.confidence / 100,
        resamples=args.resamples,
        seed=args.seed,
    )
    candidate = resolve(refs[-1], args.history, args.history_timeout)
    if args.baseline:
        if not history_exists(args.history):
            raise HistoryError(
                f"--baseline {args.baseline} looks in the history, and there is none at {args.history}; "
                "record runs with `bench run SUITE --label NAME` or `bench history import RUN_DIR --label NAME`"
            )
        baseline = latest_run(
            args.history, args.baseline, exclude_run_id=candidate.run_id, timeout_s=args.history_timeout
        )
    else:
        baseline = resolve(refs[0], args.history, args.history_timeout)
    comparison = compare_runs(baseline, candidate, rule, allow_env_mismatch=args.allow_env_mismatch)
    if args.format == "json":
        text = json.dumps(to_json(comparison), indent=2)
    elif args.format in ("markdown", "github"):
        text = format_markdown(comparison, status_mark=args.format == "github")
    else:
        text = format_text(comparison, changes_only=args.changes_only)
    if args.format == "github":
        for line in github_annotations(comparison):
            print(line)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if args.output is None and summary:
            try:
                with open(summary, "a", encoding="utf-8") as f:  # other steps' summaries stay
                    f.write(text + "\n")
            except OSError as exc:
                raise UserError(f"cannot append to $GITHUB_STEP_SUMMARY ({summary}): {exc.strerror or exc}") from None
            print(f"{comparison.summary()}; appended to the job summary", file=sys.stderr)
            return 1 if comparison.regressed else 0
    if args.output:
        write_output(args.output, text + "\n")
        print(f"{comparison.summary()}; written to {args.output}", file=sys.stderr)
    else:
        print(text)
    return 1 if comparison.regressed else 0
