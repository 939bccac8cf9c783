"""The report's input-pipeline section: where end-to-end time goes, and accuracy per precision.

Shown only when some row ran a `data:` folder through the pipeline (bench.checks.pipeline): a
table of the per-batch stage medians, end-to-end images/s and top-1/top-5 accuracy, and a
stacked bar per scenario of the four stages.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from bench.checks.pipeline import STAGES
from bench.format.markdown import cell, table, unit_headers
from bench.report.blocks import figure_html, figure_markdown, section_table
from bench.report.data import run_tags, tagged_label
from bench.report.figures import STYLE, FigureResult, _save
from bench.results.record import ResultRecord
from bench.results.runfolder import RunFolder

FIGURE_PREFIX = "pipeline_"
STAGE_TITLES = {
    "load_preprocess": "load + preprocess",
    "copy": "copy to model",
    "inference": "inference",
    "postprocess": "postprocess",
}
STAGE_COLORS = {"load_preprocess": "#e07a2e", "copy": "#8e6bbf", "inference": "#1f6fb4", "postprocess": "#2a9d8f"}
INTRO = (
    "Every image of the suite's data folder through the standard transforms (Resize, CenterCrop, ToTensor, "
    "Normalize) and a DataLoader at the scenario's batch size, after the timed steady state. Each batch's "
    "stages are timed apart; the table gives the median per batch (the first batch also pays for starting "
    "the loader) and end-to-end images/s over all batches. Accuracy counts the model's top-1 / top-5 "
    "predictions against the folder's labels: with real weights and a labelled folder this is the true "
    "cost of a precision; with random weights it is chance."
)
CAPTION = "Median time per batch in each stage (stacked), per scenario; the label is the share spent in inference."
HEADERS = [
    ("scenario", ""),
    ("images", ""),
    *[(STAGE_TITLES[s], "ms / batch") for s in STAGES],
    ("inference share", "%"),
    ("end to end", "images/s"),
    ("top-1", "%"),
    ("top-5", "%"),
]


@dataclass
class PipelineSection:
    rows: list[tuple[str, ResultRecord]] = field(default_factory=list)  # (run tag, record with pipeline figures)
    figure: FigureResult | None = None


def build_pipeline(runs: Sequence[RunFolder], fig_dir: Path) -> PipelineSection | None:
    tags = run_tags(runs)
    rows = [(tags[run.label], r) for run in runs for r in run.records if r.status == "ok" and r.pipeline]
    if not rows:
        return None
    section = PipelineSection(rows)
    try:
        with matplotlib.rc_context(STYLE):
            section.figure = _draw(rows, fig_dir)
    except Exception as exc:  # a report with a figure missing beats no report
        section.figure = FigureResult("pipeline", "Where end-to-end time goes", "", notes=[f"Not drawn: {exc}"])
    return section


def _inference_share(record: ResultRecord) -> float:
    medians = record.pipeline.stage_median_s  # type: ignore[union-attr]
    total = sum(medians.values())
    return medians.get("inference", 0.0) / total if total else float("nan")


def _draw(rows: list[tuple[str, ResultRecord]], fig_dir: Path) -> FigureResult:
    import matplotlib.pyplot as plt

    result = FigureResult("pipeline", "Where end-to-end time goes", CAPTION)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(rows) + 1.4))
    labels = [tagged_label(tag, r) for tag, r in rows]
    left = [0.0] * len(rows)
    for stage in STAGES:
        widths = [r.pipeline.stage_median_s.get(stage, 0.0) * 1e3 for _, r in rows]  # type: ignore[union-attr]
        ax.barh(labels, widths, left=left, color=STAGE_COLORS[stage], label=STAGE_TITLES[stage])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, ((_, record), end) in enumerate(zip(rows, left, strict=True)):
        ax.text(end, y, f"  {_inference_share(record):.0%} inference", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("median ms per batch")
    ax.set_xlim(0, max(left) * 1.35 if max(left) > 0 else 1)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    result.files.append(_save(fig, fig_dir / f"{FIGURE_PREFIX}stages.png"))
    return result


def _cells(tag: str, record: ResultRecord) -> list[str]:
    p = record.pipeline
    assert p is not None
    # Top-5 of a model with five classes or fewer is always right: say nothing rather than 100 %.
    top5 = "-" if (p.classes or 0) <= 5 or p.top5_accuracy is None else f"{p.top5_accuracy * 100:.1f}"
    return [
        tagged_label(tag, record),
        str(p.images),
        *[f"{p.stage_median_s.get(s, float('nan')) * 1e3:.3g}" for s in STAGES],
        f"{_inference_share(record) * 100:.0f}",
        f"{p.end_to_end_images_per_s:,.1f}" if p.end_to_end_images_per_s else "-",
        f"{p.top1_accuracy * 100:.1f}" if p.top1_accuracy is not None else "-",
        top5,
    ]


def pipeline_html(section: PipelineSection | None) -> str:
    if section is None:
        return ""

    classes = ["id"] + ["num"] * (len(HEADERS) - 1)
    parts = [
        '<h2 id="pipeline">Input pipeline</h2>',
        f"<p>{html.escape(INTRO)}</p>",
        section_table("pipeline-table", HEADERS, (_cells(*row) for row in section.rows), classes),
    ]
    if section.figure is not None:
        parts.append(figure_html(section.figure))
    return "".join(parts)


def pipeline_markdown(section: PipelineSection | None, out_dir: Path) -> str:
    if section is None:
        return ""

    headers = unit_headers(HEADERS)
    rows = [[cell(c) for c in _cells(*row)] for row in section.rows]
    out = ["## Input pipeline\n", INTRO + "\n", table(headers, rows, ["l"] + ["r"] * (len(HEADERS) - 1)) + "\n"]
    if section.figure is not None:
        out += figure_markdown(section.figure, out_dir)
    return "\n".join(out)
