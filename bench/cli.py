"""The `bench` command line: the top-level parser, the commands of bench.commands under it, and
how any command's errors and signals become exit statuses.

A command's module is imported only when that command runs (or for build_parser()'s full
parser): `bench --help` lists the commands from COMMANDS alone, so it imports no command
module, and `bench validate` does not import what `bench report` draws with. This is the one
place where bench imports its own modules inside a function (tests/test_imports.py).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

from bench import __version__
from bench.errors import UserError


@dataclass(frozen=True)
class Command:
    name: str
    help: str  # the line `bench --help` shows for it
    module: str  # its register(commands, common) adds its parser and handler


# In the order `bench --help` lists them.
COMMANDS = (
    Command("run", "measure every scenario of a suite", "bench.commands.run"),
    Command("validate", "check suite files without running them", "bench.commands.validate"),
    Command("report", "turn run folders into report.html and report.md", "bench.commands.report"),
    Command("models", "list the model names a suite can use", "bench.commands.models"),
    Command("selfcheck", "check the harness's own accuracy and overhead", "bench.commands.selfcheck"),
    Command("profile", "profile one scenario operator by operator", "bench.commands.profile"),
    Command(
        "history", "list recorded runs; a scenario's metric over time; import and export", "bench.commands.history"
    ),
    Command("compare", "compare two runs, beyond the noise (a CI gate)", "bench.commands.compare"),
    Command("plan", "how many hosts a target load needs, from measured capacity", "bench.commands.plan"),
    Command(
        "advise",
        "the cheapest configuration that meets a p99 SLO at a target rate and a fidelity floor, measured",
        "bench.commands.advise",
    ),
    Command(
        "export", "write a run's rows for existing dashboards (GitHub, Bencher, Prometheus)", "bench.commands.export"
    ),
    Command(
        "tradeoffs",
        "per model: latency, fidelity, accuracy, memory and size of each precision and load mode",
        "bench.commands.tradeoffs",
    ),
)

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
  bench advise scenarios/advise.yaml --slo-p99-ms 50 --target-rps 200
                                             what to deploy: the cheapest configuration meeting the SLO
                                             and a fidelity floor, measured in stages within a budget
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_command_named(argv))
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


def _command_named(argv: Sequence[str]) -> set[str]:
    """The command that argv names, as a set for build_parser(only=...): empty when it names none.
    The top-level options (--debug, --help, --version) take no value, so the command is the
    first word that is not an option."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return {word} & {c.name for c in COMMANDS}


def build_parser(only: set[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, the other commands get a parser that has their name and help
    line only, and their modules are not imported."""
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
        if only is None or command.name in only:
            importlib.import_module(command.module).register(subcommands, common, command.help)
        else:
            subcommands.add_parser(command.name, help=command.help)
    return parser


if __name__ == "__main__":
    sys.exit(main())
