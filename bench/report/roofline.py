"""The report's roofline section: where rows sit against the memory-bandwidth and FLOP roofs.

Shown only when some row has a roofline figure: a generation row's decode step (`generation.
bytes_per_decode_step`, `decode_floor_s`, `bandwidth_utilization`; bench.checks.generation) or a
profiled row's call (`profile.bytes_per_call`, `arithmetic_intensity`, `memory_floor_s`, `bound`;
bench.profile.profiler). A table lists each row's bytes, intensity, floor and measured time; the
log-log figure draws attainable GFLOP/s = min(peak, intensity x bandwidth) per (peak, bandwidth)
pair of the rows and places each row that has FLOPs at its intensity and achieved GFLOP/s.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from bench.format.markdown import cell, table, unit_headers
from bench.report.blocks import figure_html, figure_markdown, section_table
from bench.report.data import run_tags, tagged_label
from bench.report.figures import STYLE, FigureResult, _save
from bench.results.record import ResultRecord
from bench.results.runfolder import RunFolder

FIGURE_PREFIX = "roofline_"
INTRO = (
    "A call cannot be faster than the bytes it must move divided by the memory bandwidth, nor than its FLOPs "
    "divided by the FLOP peak; its arithmetic intensity (FLOPs per byte) says which roof is lower. A decode step "
    "of a causal LM reads every weight and the KV cache at the median decode position; a profiled call reads at "
    "least its weights, inputs and outputs. The bandwidth is the host's STREAM copy/triad (the higher), measured "
    "once per environment (environment.json memory_bandwidth); floor / measured is the share of the bandwidth "
    "roof the row reached."
)
CAPTION = (
    "Attainable GFLOP/s = min(peak, intensity x bandwidth), log-log: one roof per measured peak (its threads and "
    "dtype) and bandwidth, dashed where no peak was measured. Each row at its intensity and achieved GFLOP/s: "
    "a decode step (FLOPs per step / median TPOT) or a profiled call (FLOPs / timed median)."
)
HEADERS = [
    ("scenario", ""),
    ("what", ""),
    ("bytes", "MiB"),
    ("intensity", "FLOP/byte"),
    ("achieved", "GFLOP/s"),
    ("floor", "ms"),
    ("measured", "ms"),
    ("floor / measured", ""),
    ("bound", ""),
]


@dataclass(frozen=True)
class RooflinePoint:
    """One row's place under the roofline (a decode step or a profiled call)."""

    tag: str
    record: ResultRecord
    what: str  # "decode step" or "call"
    bytes_moved: int
    floor_s: float | None
    measured_s: float | None
    flops: int | None
    peak_gflops: float | None
    bound: str | None

    @property
    def bandwidth_gb_per_s(self) -> float | None:
        return self.bytes_moved / self.floor_s / 1e9 if self.floor_s else None

    @property
    def intensity(self) -> float | None:
        return self.flops / self.bytes_moved if self.flops else None

    @property
    def achieved_gflops(self) -> float | None:
        return self.flops / self.measured_s / 1e9 if self.flops and self.measured_s else None


@dataclass
class RooflineSection:
    points: list[RooflinePoint] = field(default_factory=list)
    figure: FigureResult | None = None


def points_of(tag: str, record: ResultRecord) -> list[RooflinePoint]:
    """The row's decode step and profiled call, where it has their bytes."""
    points = []
    g, p = record.generation, record.profile
    if g is not None and g.bytes_per_decode_step:
        tpot = g.tpot_s.median if g.tpot_s else None
        peak = p.peak_gflops if p is not None else None
        points.append(
            RooflinePoint(
                tag,
                record,
                "decode step",
                g.bytes_per_decode_step,
                g.decode_floor_s,
                tpot,
                g.flops_per_decode_step,
                peak,
                None,
            )
        )
    if p is not None and p.bytes_per_call:
        median = record.latency_s.median if record.latency_s else None
        points.append(
            RooflinePoint(
                tag, record, "call", p.bytes_per_call, p.memory_floor_s, median, p.flops, p.peak_gflops, p.bound
            )
        )
    return points


def build_roofline(runs: Sequence[RunFolder], fig_dir: Path) -> RooflineSection | None:
    tags = run_tags(runs)
    points = [pt for run in runs for r in run.records if r.status == "ok" for pt in points_of(tags[run.label], r)]
    if not points:
        return None
    section = RooflineSection(points)
    placed = [pt for pt in points if pt.intensity and pt.achieved_gflops and pt.bandwidth_gb_per_s]
    if placed:
        try:
            with matplotlib.rc_context(STYLE):
                section.figure = draw(placed, fig_dir)
        except Exception as exc:  # a report with a figure missing beats no report
            section.figure = FigureResult("roofline", "Roofline", "", notes=[f"Not drawn: {exc}"])
    return section


def roofs(points: Sequence[RooflinePoint]) -> list[tuple[float, float | None]]:
    """The distinct (bandwidth GB/s, peak GFLOP/s or None) pairs of the points, to 3 significant digits."""
    seen: dict[tuple[str, str], tuple[float, float | None]] = {}
    for pt in points:
        assert pt.bandwidth_gb_per_s is not None
        key = (f"{pt.bandwidth_gb_per_s:.3g}", f"{pt.peak_gflops:.3g}" if pt.peak_gflops else "-")
        seen.setdefault(key, (pt.bandwidth_gb_per_s, pt.peak_gflops))
    return list(seen.values())


def draw(points: Sequence[RooflinePoint], fig_dir: Path) -> FigureResult:
    import matplotlib.pyplot as plt
    import numpy as np

    result = FigureResult("roofline", "Roofline: attainable GFLOP/s against arithmetic intensity", CAPTION)
    intensities = [pt.intensity for pt in points if pt.intensity]
    pairs = roofs(points)
    ridges = [peak / bw for bw, peak in pairs if peak]
    low = min([*intensities, *ridges]) / 10
    high = max([*intensities, *ridges]) * 10
    x = np.geomspace(low, high, 200)
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    for bw, peak in pairs:
        label = f"{bw:.1f} GB/s" + (f", peak {peak:.0f} GFLOP/s" if peak else "")
        attainable = np.minimum(peak, x * bw) if peak else x * bw
        ax.plot(x, attainable, color="#555555", linestyle="-" if peak else "--", linewidth=1.2, label=label)
    markers = {"decode step": "o", "call": "s"}
    for pt in points:
        ax.scatter(
            [pt.intensity],
            [pt.achieved_gflops],
            marker=markers[pt.what],
            s=36,
            zorder=3,
            label=f"{tagged_label(pt.tag, pt.record)} ({pt.what})",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("GFLOP/s")
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    result.files.append(_save(fig, fig_dir / f"{FIGURE_PREFIX}roofline.png"))
    plt.close(fig)
    return result


def _number(value: float | None, fmt: str) -> str:
    return format(value, fmt) if value is not None else "-"


def _cells(pt: RooflinePoint) -> list[str]:
    ratio = pt.floor_s / pt.measured_s if pt.floor_s and pt.measured_s else None
    return [
        tagged_label(pt.tag, pt.record),
        pt.what,
        f"{pt.bytes_moved / 2**20:.3g}",
        _number(pt.intensity, ".3g"),
        _number(pt.achieved_gflops, ".3g"),
        _number(pt.floor_s * 1e3 if pt.floor_s else None, ".3g"),
        _number(pt.measured_s * 1e3 if pt.measured_s else None, ".3g"),
        _number(ratio, ".2g"),
        pt.bound or "-",
    ]


def roofline_html(section: RooflineSection | None) -> str:
    if section is None:
        return ""
    classes = ["id", "id"] + ["num"] * (len(HEADERS) - 3) + ["id"]
    parts = [
        '<h2 id="roofline">Roofline</h2>',
        f"<p>{html.escape(INTRO)}</p>",
        section_table("roofline-table", HEADERS, (_cells(pt) for pt in section.points), classes),
    ]
    if section.figure is not None:
        parts.append(figure_html(section.figure))
    return "".join(parts)


def roofline_markdown(section: RooflineSection | None, out_dir: Path) -> str:
    if section is None:
        return ""
    rows = [[cell(c) for c in _cells(pt)] for pt in section.points]
    align = ["l", "l"] + ["r"] * (len(HEADERS) - 3) + ["l"]
    out = ["## Roofline\n", INTRO + "\n", table(unit_headers(HEADERS), rows, align) + "\n"]
    if section.figure is not None:
        out += figure_markdown(section.figure, out_dir)
    return "\n".join(out)
