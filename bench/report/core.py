"""write_report: run folders in; report.html, report.md, results.csv and figures/*.png out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UserError
from bench.report.html import render_html
from bench.report.markdown import render_markdown
from bench.report.model import FIGURES_DIR, build_report
from bench.report.tables import csv_frame
from bench.results.runfolder import load_run

HTML_NAME = "report.html"
MARKDOWN_NAME = "report.md"
CSV_NAME = "results.csv"
COMPARISON_CSV_NAME = "comparison.csv"


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


def write_report(run_dirs: Sequence[Path] | Path, out_dir: Path | None = None) -> ReportResult:
    """Turn one or more run folders into report.html, report.md, results.csv and figures/*.png.

    `out_dir` defaults to the run's own folder when there is one run; several runs need one.
    Raises UserError for a folder that is not a run, or an output folder that cannot be written.
    """
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
