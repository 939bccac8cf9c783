"""The report's "Trade-offs" section: per model, latency against fidelity, memory and size (bench.analysis.tradeoffs).

Shown only when some model ran in more than one precision. Per model, batch size and threads:
the table `bench tradeoffs` prints, one sentence reading it, and a figure of two panels: median
latency (a line to p99) against 1 - cosine to fp32 eager, marker area by peak RSS; and median
latency against the artifact's size. Dominated rows are hollow; the frontier is joined by a line.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from bench.analysis.tradeoffs import HEADERS, Group, Point, build_groups, cells, title
from bench.format.markdown import cell, table
from bench.report.blocks import figure_html, figure_markdown, section_table
from bench.report.data import run_tags
from bench.report.figures import PRECISION_COLORS, STYLE, FigureResult, _fixed_grid, _save
from bench.results.runfolder import RunFolder

FIGURE_PREFIX = "tradeoffs_"
INTRO = (
    "Per model, batch size and threads, every precision and load mode that ran: median and p99 latency, the "
    "speed-up over fp32 eager, fidelity (cosine to fp32 eager's outputs on the fidelity inputs), top-1 accuracy "
    "when a data: folder gave labels, peak RSS and the artifact's size. A row is dominated when another is at "
    "least as fast and as faithful (and as accurate, when every row has an accuracy) and better in one; the "
    "others form the Pareto frontier. int8_static calibrated on random inputs (the default) has a fidelity "
    "that says little about a real model. Latencies on a shared or contended host are noisy: see each row's "
    "contention in the summary table."
)
CAPTION = (
    "Left: median latency (log; a line to p99) against 1 - cosine to fp32 eager (log; lower is more faithful), "
    "marker area by peak RSS. Right: median latency (log) against the artifact's size. Hollow: dominated."
)
_FIDELITY_FLOOR = 1e-7  # 1 - cosine of fp32 eager itself is 0: drawn at this floor on the log axis


@dataclass
class TradeoffsSection:
    groups: list[tuple[str, Group]] = field(default_factory=list)  # (run tag, group)
    figures: list[FigureResult] = field(default_factory=list)


def build_tradeoffs(runs: Sequence[RunFolder], fig_dir: Path) -> TradeoffsSection | None:
    tags = run_tags(runs)
    section = TradeoffsSection()
    for run in runs:
        for group in build_groups(run.records, run.environment.get("cpu_model")):
            if len({p.precision for p in group.points}) > 1:
                section.groups.append((tags[run.label], group))
    if not section.groups:
        return None
    for tag, group in section.groups:
        name = f"{title(group)}{f' ({tag})' if tag else ''}"
        try:
            with matplotlib.rc_context(STYLE):
                section.figures.append(_draw(group, name, fig_dir / _file_name(tag, group)))
        except Exception as exc:  # a report with a figure missing beats no report
            section.figures.append(FigureResult(_file_name(tag, group), name, "", notes=[f"Not drawn: {exc}"]))
    return section


def _file_name(tag: str, group: Group) -> str:
    stem = f"{FIGURE_PREFIX}{group.model}_b{group.batch_size}_t{group.threads}_{'x'.join(map(str, group.input_shape))}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem + (f"_{tag}" if tag else "")) + ".png"


def _draw(group: Group, name: str, path: Path) -> FigureResult:
    result = FigureResult(path.stem, name, CAPTION)
    # Margins fixed in inches: tight_layout measured every label first, half of the figure's
    # drawing time (24 figures of a 192-row run: 14 s of 26 s under cProfile).
    fig, axes = _fixed_grid(1, 2, panel_w=4.6, panel_h=3.35, top=0.5, bottom=0.55, gap_w=1.0)
    left, right = axes[0]
    rss = [p.peak_rss_mib for p in group.points if p.peak_rss_mib]
    largest = max(rss) if rss else 1.0
    for point in group.points:
        color = PRECISION_COLORS.get(point.precision, "#555555")
        face = "none" if point.dominated else color
        size = 30 + 270 * (point.peak_rss_mib or 0) / largest
        label = f"{point.precision} / {point.load}"
        if point.cosine is not None:
            y = max(1 - point.cosine, _FIDELITY_FLOOR)
            if point.p99_ms is not None:
                left.plot([point.median_ms, point.p99_ms], [y, y], color=color, linewidth=0.8, alpha=0.6)
            left.scatter(point.median_ms, y, s=size, facecolors=face, edgecolors=color, linewidths=1.2)
            left.annotate(label, (point.median_ms, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        if point.artifact_mib is not None:
            right.scatter(point.median_ms, point.artifact_mib, s=40, facecolors=face, edgecolors=color)
            right.annotate(
                label, (point.median_ms, point.artifact_mib), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
    frontier = [p for p in group.points if p.dominated is False and p.cosine is not None]
    if len(frontier) > 1:
        left.plot(
            [p.median_ms for p in frontier],
            [max(1 - p.cosine, _FIDELITY_FLOOR) for p in frontier],  # type: ignore[operator]
            color="#888888",
            linestyle="--",
            linewidth=0.8,
            zorder=0,
        )
    left.set_yscale("log")
    for ax in (left, right):  # precisions without hardware support can be 10x slower: log keeps both ends legible
        ax.set_xscale("log")
    left.set_xlabel("median latency, ms (line: to p99)")
    left.set_ylabel("1 - cosine to fp32 eager")
    right.set_xlabel("median latency, ms")
    right.set_ylabel("artifact, MiB")
    fig.suptitle(name, fontsize=10)
    result.files.append(_save(fig, path))
    return result


def _classes() -> list[str]:
    return ["text", "text"] + ["num"] * (len(HEADERS) - 4) + ["text", "text"]


def tradeoffs_html(section: TradeoffsSection | None) -> str:
    if section is None:
        return ""
    parts = ['<h2 id="tradeoffs">Trade-offs</h2>', f"<p>{html.escape(INTRO)}</p>"]
    for (tag, group), figure in zip(section.groups, section.figures, strict=True):
        parts += [
            f"<h3>{html.escape(title(group))}{html.escape(f' ({tag})' if tag else '')}</h3>",
            f"<p>{html.escape(group.reading)}</p>",
            section_table(f"tradeoffs-{figure.key}", [(h, "") for h in HEADERS], _rows(group.points), _classes()),
            figure_html(figure),
        ]
    return "".join(parts)


def _rows(points: Sequence[Point]) -> list[list[str]]:
    return [cells(p) for p in points]


def tradeoffs_markdown(section: TradeoffsSection | None, out_dir: Path) -> str:
    if section is None:
        return ""
    out = ["## Trade-offs\n", INTRO + "\n"]
    align = ["l", "l"] + ["r"] * (len(HEADERS) - 4) + ["l", "l"]
    for (tag, group), figure in zip(section.groups, section.figures, strict=True):
        rows = [[cell(c) for c in row] for row in _rows(group.points)]
        out += [
            f"### {cell(title(group))}{f' ({tag})' if tag else ''}\n",
            cell(group.reading) + "\n",
            table(list(HEADERS), rows, align) + "\n",
            *figure_markdown(figure, out_dir),
        ]
    return "\n".join(out)
