"""The `bench` command line: the top-level parser, the commands of bench.commands under it, and
how any command's errors and signals become exit statuses."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from bench import __version__
from bench.commands import compare, export, history, models, plan, profile, report, run, selfcheck, tradeoffs, validate
from bench.errors import UserError

# In the order `bench --help` lists them. Each module's register() adds its parser and handler.
COMMANDS = (run, validate, report, models, selfcheck, profile, history, compare, plan, export, tradeoffs)

DESCRIPTION = """\
Benchmark PyTorch and ONNX Runtime models on CPUs.

A suite (a YAML file) lists models, batch sizes, thread counts, precisions and loading
modes; `bench run` measures every combination in its own worker process and writes a run
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
    common.add_argument(
        "--debug",
        action="store_true",
        help="show full tracebacks on errors, and library warnings (bench run keeps them in library.log)",
    )

    parser = argparse.ArgumentParser(
        prog="bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    for command in COMMANDS:
        command.register(subcommands, common)
    return parser


if __name__ == "__main__":
    sys.exit(main())
