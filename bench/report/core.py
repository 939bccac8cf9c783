"""write_report: run folders in; report.html, report.md, results.csv and figures/*.png out."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import __version__
from bench.errors import UserError
from bench.report.capacity import FIGURE_PREFIX as CAPACITY_FIGURE_PREFIX
from bench.report.capacity import CapacitySection, build_capacity
from bench.report.data import RunData, label_runs, load_run
from bench.report.figures import FIGURE_PREFIXES, FigureResult, draw_all
from bench.report.hygiene import HygieneSection, build_hygiene
from bench.report.pipeline import FIGURE_PREFIX as PIPELINE_FIGURE_PREFIX
from bench.report.pipeline import PipelineSection, build_pipeline
from bench.report.profiles import ProfileSection, memory_phase_frame, profile_sections
from bench.report.tables import comparison_frame, csv_frame, summary_frame
from bench.report.text import TextSection, build_text
from bench.report.tradeoffs import TradeoffsSection, build_tradeoffs

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
CSV_NAME = "results.csv"
COMPARISON_CSV_NAME = "comparison.csv"
FIGURES_DIR = "figures"


@dataclass
class Report:
    """Everything the HTML and Markdown renderers show, computed once."""

    runs: list[RunData]
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

    @property
    def has_variants(self) -> bool:
        """Whether some row is a pruned variant (the summary then shows its ratio to the dense row)."""
        return not self.frame.empty and bool(self.frame["variant"].ne("dense").any())

    @property
    def title(self) -> str:
        suites = list(dict.fromkeys(r.suite or "unknown suite" for r in self.runs))
        if len(self.runs) == 1:
            return f"Benchmark report: {suites[0]}"
        return f"Benchmark comparison: {len(self.runs)} runs of {', '.join(suites)}"


@dataclass(frozen=True)
class ReportResult:
    out_dir: Path
    html: Path
    markdown: Path
    csv: Path
    figures: list[Path]
    rows: int  # result rows across all runs
    warnings: list[str] = field(default_factory=list)  # also shown at the top of the report
    comparison_csv: Path | None = None


def build_report(runs: Sequence[RunData | Path], out_dir: Path) -> Report:
    """Read the runs (folders, or RunData already read) and draw the figures into out_dir/figures."""
    runs = [run if isinstance(run, RunData) else load_run(Path(run)) for run in runs]
    label_runs(runs)
    warnings = [w for run in runs for w in run.warnings]
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
        if old.name.startswith((*FIGURE_PREFIXES, CAPACITY_FIGURE_PREFIX, PIPELINE_FIGURE_PREFIX)):
            old.unlink(missing_ok=True)
    figures = draw_all(runs, frame, fig_dir, fidelity_measured) if not frame.empty else []
    return Report(
        runs=runs,
        frame=frame,
        comparison=comparison,
        figures=figures,
        warnings=warnings,
        fidelity_measured=fidelity_measured,
        out_dir=out_dir,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        profiles=profile_sections(runs, out_dir),
        memory_phases=memory_phase_frame(runs),
        capacity=build_capacity(runs, fig_dir),
        pipeline=build_pipeline(runs, fig_dir),
        hygiene=build_hygiene(runs),
        text=build_text(runs, fig_dir),
        tradeoffs=build_tradeoffs(runs, fig_dir),
    )


def write_report(run_dirs: Sequence[Path] | Path, out_dir: Path | None = None) -> ReportResult:
    """Turn one or more run folders into report.html, report.md, results.csv and figures/*.png.

    `out_dir` defaults to the run's own folder when there is one run; several runs need one.
    Raises UserError for a folder that is not a run, or an output folder that cannot be written.
    """
    from bench.report.html import render_html
    from bench.report.markdown import render_markdown

    dirs = [Path(run_dirs)] if isinstance(run_dirs, str | os.PathLike) else [Path(p) for p in run_dirs]
    if not dirs:
        raise UserError("no run folder given: pass one or more folders written by `bench run`")
    if out_dir is None:
        if len(dirs) > 1:
            raise UserError(f"{len(dirs)} run folders given: say where the combined report goes (an output folder)")
        out_dir = dirs[0]
    out_dir = Path(out_dir)
    runs = [load_run(run_dir) for run_dir in dirs]  # refuse a folder that is not a run before writing anything
    try:
        (out_dir / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".report-write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the report into {out_dir}: {exc.strerror or exc}") from None

    report = build_report(runs, out_dir)
    csv_path = out_dir / CSV_NAME
    _write_atomic(csv_path, csv_frame(report.frame).to_csv(index=False))
    comparison_csv = None
    if report.comparison is not None:
        comparison_csv = out_dir / COMPARISON_CSV_NAME
        _write_atomic(comparison_csv, report.comparison.to_csv(index=False))
    html_path = out_dir / HTML_NAME
    _write_atomic(html_path, render_html(report))
    md_path = out_dir / MARKDOWN_NAME
    _write_atomic(md_path, render_markdown(report))
    return ReportResult(
        out_dir=out_dir,
        html=html_path,
        markdown=md_path,
        csv=csv_path,
        figures=[p for f in report.figures for p in f.files]
        + [p for s in (report.capacity, report.pipeline, report.text) if s and s.figure for p in s.figure.files]
        + [p for f in (report.tradeoffs.figures if report.tradeoffs else []) for p in f.files],
        rows=len(report.frame),
        warnings=list(report.warnings),
        comparison_csv=comparison_csv,
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
