"""The Report: everything the HTML and Markdown renderers show, computed once from the runs (build_report)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import __version__
from bench.report.advice import FIGURE_PREFIX as ADVICE_FIGURE_PREFIX
from bench.report.advice import AdviceSection, build_advice
from bench.report.capacity import FIGURE_PREFIX as CAPACITY_FIGURE_PREFIX
from bench.report.capacity import CapacitySection, build_capacity
from bench.report.data import label_runs, report_warnings
from bench.report.figures import FIGURE_PREFIXES, FigureResult, figure_jobs
from bench.report.hygiene import HygieneSection, build_hygiene
from bench.report.parallel import run_jobs
from bench.report.pipeline import FIGURE_PREFIX as PIPELINE_FIGURE_PREFIX
from bench.report.pipeline import PipelineSection, build_pipeline
from bench.report.profiles import ProfileSection, memory_phase_frame, profile_sections
from bench.report.roofline import FIGURE_PREFIX as ROOFLINE_FIGURE_PREFIX
from bench.report.roofline import RooflineSection, build_roofline
from bench.report.tables import comparison_frame, summary_frame
from bench.report.text import TextSection, build_text
from bench.report.tradeoffs import FIGURE_PREFIX as TRADEOFFS_FIGURE_PREFIX
from bench.report.tradeoffs import TradeoffsSection, build_tradeoffs
from bench.results.runfolder import RunFolder, load_run
from bench.results.timeline import overhead_line

FIGURES_DIR = "figures"


@dataclass
class Report:
    """Everything the HTML and Markdown renderers show, computed once."""

    runs: list[RunFolder]
    frame: pd.DataFrame  # summary_frame: one row per scenario per run
    comparison: pd.DataFrame | None  # comparison_frame, for several runs
    figures: list[FigureResult]
    warnings: list[str]
    fidelity_measured: bool
    out_dir: Path
    generated_at: str
    profiles: list[ProfileSection] = field(default_factory=list)  # rows with `profile: true`
    memory_phases: pd.DataFrame = field(default_factory=pd.DataFrame)  # memory_phase_frame
    bench_version: str = __version__
    capacity: CapacitySection | None = None  # rows with capacity figures: tables and the throughput/p99 figure
    pipeline: PipelineSection | None = None  # rows with input-pipeline figures: stage times and accuracy
    hygiene: HygieneSection | None = None  # rows with a non-default grad_mode or module_mode
    text: TextSection | None = None  # rows with named inputs: fidelity by task, generation
    tradeoffs: TradeoffsSection | None = None  # models run in several precisions: the Pareto view
    roofline: RooflineSection | None = None  # generation and profiled rows against the bandwidth and FLOP roofs
    advice: AdviceSection | None = None  # a bench advise run folder's advice.json

    @property
    def has_variants(self) -> bool:
        """Whether some row is a pruned variant (the summary then shows its ratio to the dense row)."""
        return not self.frame.empty and bool(self.frame["variant"].ne("dense").any())

    @property
    def overhead_lines(self) -> list[str]:
        """Per run: its timed steady states against its wall time (bench.results.timeline); none without timelines."""
        lines = [(run.label, overhead_line(run.records)) for run in self.runs]
        return [f"{label}: {line}" if len(self.runs) > 1 else line for label, line in lines if line]

    @property
    def title(self) -> str:
        suites = list(dict.fromkeys(r.suite or "unknown suite" for r in self.runs))
        if len(self.runs) == 1:
            return f"Benchmark report: {suites[0]}"
        return f"Benchmark comparison: {len(self.runs)} runs of {', '.join(suites)}"


def build_report(runs: Sequence[RunFolder | Path], out_dir: Path) -> Report:
    """Read the runs (folders, or RunFolder already read) and draw the figures into out_dir/figures."""
    runs = [run if isinstance(run, RunFolder) else load_run(Path(run)) for run in runs]
    label_runs(runs)
    warnings = [w for run in runs for w in report_warnings(run)]
    frame = summary_frame(runs)
    fidelity_columns = ["fidelity_max_abs_error", "fidelity_cosine_similarity", "fidelity_top1_agreement"]
    fidelity_columns += ["fidelity_inputs"]
    fidelity_measured = bool(frame[fidelity_columns].notna().any().any()) if not frame.empty else False
    comparison = comparison_frame(frame, [r.label for r in runs]) if len(runs) > 1 else None
    fingerprints = {str(r.environment.get("fingerprint")) for r in runs if r.environment.get("fingerprint")}
    if len(fingerprints) > 1:
        warnings.append(
            "The runs were measured on different machines or software (environment fingerprints "
            f"{', '.join(sorted(fingerprints))}); compare their figures with care."
        )
    fig_dir = out_dir / FIGURES_DIR
    for old in fig_dir.glob("*.png") if fig_dir.is_dir() else []:  # figures of an earlier report
        if old.name.startswith(
            (
                *FIGURE_PREFIXES,
                CAPACITY_FIGURE_PREFIX,
                PIPELINE_FIGURE_PREFIX,
                TRADEOFFS_FIGURE_PREFIX,
                ROOFLINE_FIGURE_PREFIX,
                ADVICE_FIGURE_PREFIX,
            )
        ):
            old.unlink(missing_ok=True)
    # Every figure is drawn by one of these calls, side by side where the host has the cores
    # (bench.report.parallel), the longest first: of a 192-row run's 16 s of drawing, the memory
    # panels took 7.5 s and the trade-off figures 4 s.
    sections = (build_tradeoffs, build_capacity, build_pipeline, build_text, build_roofline, build_advice)
    calls = {build.__name__: functools.partial(build, runs, fig_dir) for build in sections}
    figure_calls = figure_jobs(runs, frame, fig_dir, fidelity_measured) if not frame.empty else {}
    calls |= figure_calls
    first = [key for key in ("memory", "build_tradeoffs") if key in calls]
    keys = [*first, *(key for key in calls if key not in first)]
    done = dict(zip(keys, run_jobs([calls[key] for key in keys]), strict=True))
    return Report(
        runs=runs,
        frame=frame,
        comparison=comparison,
        figures=[done[key] for key in figure_calls],
        warnings=warnings,
        fidelity_measured=fidelity_measured,
        out_dir=out_dir,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        profiles=profile_sections(runs, out_dir),
        memory_phases=memory_phase_frame(runs),
        capacity=done["build_capacity"],
        pipeline=done["build_pipeline"],
        hygiene=build_hygiene(runs),
        text=done["build_text"],
        tradeoffs=done["build_tradeoffs"],
        roofline=done["build_roofline"],
        advice=done["build_advice"],
    )
