"""`bench profile`: one scenario under torch.profiler (or ONNX Runtime's profiler), operator by operator."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from bench import runtimes
from bench.commands.common import check_writable, find_scenario, output_folder
from bench.errors import UserError
from bench.profile.profiler import flops_figures, format_profile, profile_scenario, roofline_figures


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench profile` to the CLI's subcommands."""
    profile = commands.add_parser(
        "profile",
        parents=[common],
        help=summary,
        description="Run one scenario of a suite under torch.profiler (ONNX Runtime's session profiler for "
        "load: onnxruntime) in a fresh process and write ops.csv (the operator table), trace.json (opens in "
        "ui.perfetto.dev or chrome://tracing) and profile.json (the summary). Untimed: for the timed "
        "figures use 'bench run'.",
    )
    profile.add_argument("scenario_id", metavar="SCENARIO_ID", help="a scenario id, as 'bench validate' lists them")
    profile.add_argument("--suite", type=Path, required=True, help="the suite file that has the scenario")
    profile.add_argument("--iterations", type=int, default=50, metavar="N", help="profiled calls (default 50)")
    profile.add_argument("--out", type=output_folder, help="output folder (default: reports/profile-<time>-<scenario>)")
    profile.add_argument(
        "--reports", type=output_folder, default=Path("reports"), help="reports folder (artifact cache)"
    )
    profile.set_defaults(handler=profile_command)


def profile_command(args: argparse.Namespace) -> int:
    if args.iterations < 1:
        raise UserError(f"--iterations must be an integer >= 1, got {args.iterations}")
    scenario = find_scenario(args.suite, args.scenario_id)
    check_writable(args.reports)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or args.reports / f"profile-{stamp}-{scenario.id}"
    if runtimes.unsupported_reason(scenario) is None:
        print(f"bench: preparing the artifact of {scenario.id} ...", file=sys.stderr)
        try:
            artifact_path = runtimes.prepare_artifact(scenario, args.reports / ".cache" / "artifacts").path
        except runtimes.Unsupported as exc:
            print(f"profile of {scenario.id}: unsupported ({exc})")
            return 0
    else:
        artifact_path = Path("-")  # profile_scenario says why, without starting anything
    print(f"bench: profiling {scenario.id} ({args.iterations} calls) ...", file=sys.stderr)
    result = profile_scenario(scenario, artifact_path, out, args.iterations, timeout_s=scenario.timeout_s)
    print(format_profile(result))
    if result.ok:
        figures = flops_figures(scenario, result.summary.profiled_median_s, cache_dir=None, fingerprint=None)
        if figures["flops"]:
            print(
                f"FLOPs per call: {figures['flops']:,}; {figures['achieved_gflops']:.2f} GFLOP/s at the profiled "
                f"median (under the profiler; 'bench run' with profile: true gives it at the timed median)"
            )
        s = result.summary
        if figures["flops"] and s.weight_bytes and s.io_bytes_per_call:
            moved = s.weight_bytes + s.io_bytes_per_call
            intensity = roofline_figures(figures["flops"], moved, None, None)["arithmetic_intensity"]
            print(
                f"arithmetic intensity: {intensity:.3g} FLOP per byte moved ({moved / 2**20:.3g} MiB a call: weights, "
                "inputs, outputs); 'bench run' with profile: true places it under this host's bandwidth roof"
            )
    return 1 if result.status == "failed" else 0
