"""The report's capacity section: per scenario, throughput against p99 latency in server mode, and the layouts.

Shown only when some row has `capacity` figures (a suite with a `capacity:` block). Each
server-mode step is one point: x = requests completed per second, y = its p99 latency from
scheduled arrival (nearest rank); one line per layout; the SLO is a dashed line. A generate:
scenario's LLM server mode (bench.capacity.llm) has a table of its steps instead: TTFT and TPOT
percentiles, goodput, output tokens per second, the largest batch and its KV cache, RSS.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.lines import Line2D

from bench.format.markdown import cell, table, unit_headers
from bench.format.units import MIB, ms_number
from bench.report.blocks import figure_html, figure_markdown, section_table
from bench.report.data import run_tags
from bench.report.figures import EXTRA_COLORS, STYLE, FigureResult, _fixed_grid, _grid, _nice_log, _save
from bench.results.record import GenerationServerFigures, LayoutFigures, ResultRecord, ServerFigures, ServerStep
from bench.results.runfolder import RunFolder

FIGURE_PREFIX = "capacity_"
LAYOUT_COLORS = ["#1f6fb4", "#e07a2e", "#2a9d8f", "#d1495b", "#8e6bbf", *EXTRA_COLORS]
CAPTION = (
    "Server mode: each point is one step of Poisson arrivals at a fixed offered rate; x is the requests completed "
    "per second, y the step's p99 latency from each request's scheduled arrival (nearest rank; log scale). Filled: "
    "the step met the SLO; cross: it did not; hollow: invalid (too short or too few requests); square: the "
    "low-load step at a tenth of the highest passing rate, or the lowest rate a valid step allows (hollow when "
    "invalid); dashed: the same layout with dynamic batching. Above capacity the p99 grows "
    "with the step's length (the queue has no bound), which is why the curve turns up."
)


@dataclass
class CapacityRow:
    run: str  # run tag ("" for one run)
    scenario_id: str
    layout: LayoutFigures
    slo_p99_s: float | None  # None: a generate: scenario (LLM server mode's SLOs are its layout's)
    best: bool


@dataclass
class CapacitySection:
    rows: list[CapacityRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # capacity measurements that failed
    figure: FigureResult | None = None


def _records(runs: Sequence[RunFolder]) -> list[tuple[str, ResultRecord]]:
    tags = run_tags(runs)
    return [(tags[run.label], r) for run in runs for r in run.records if r.capacity is not None]


def build_capacity(runs: Sequence[RunFolder], fig_dir: Path) -> CapacitySection | None:
    """The section's table rows and its figure, or None when no row measured capacity."""
    records = _records(runs)
    if not records:
        return None
    section = CapacitySection()
    for tag, record in records:
        capacity = record.capacity
        assert capacity is not None
        where = f"{record.scenario_id}{f' ({tag})' if tag else ''}"
        if capacity.status != "ok":
            section.notes.append(f"{where}: {capacity.note}")
        for layout in capacity.layouts:
            floor = layout.server.stall_floor if layout.status == "ok" and layout.server else None
            if floor is not None and floor.note and floor.limits_rate:
                section.notes.append(f"{where} {layout.layout}: {floor.note}. {STALL_ADVICE}")
            best = layout.layout == capacity.best_layout and layout.requested
            section.rows.append(CapacityRow(tag, record.scenario_id, layout, capacity.slo_p99_s, best))
    try:
        with matplotlib.rc_context(STYLE):
            section.figure = _draw(records, fig_dir)
    except Exception as exc:  # a report with a figure missing beats no report
        section.figure = FigureResult("capacity", "Throughput versus p99 latency", "", notes=[f"Not drawn: {exc}"])
    return section


def _steps(layout: LayoutFigures, batched: bool = False) -> list[ServerStep]:
    server = layout.batched_server if batched else layout.server
    return sorted(server.steps, key=lambda s: s.rate_per_s) if server else []


def _draw(records: list[tuple[str, ResultRecord]], fig_dir: Path) -> FigureResult:
    result = FigureResult("capacity", "Throughput versus p99 latency (server mode)", CAPTION)
    panels = [
        (tag, r)
        for tag, r in records
        if r.capacity and r.capacity.slo_p99_s is not None and any(_steps(f) for f in r.capacity.layouts)
    ]
    if not panels:
        result.notes.append("Not drawn: no server-mode step was measured.")
        return result
    n_rows, n_cols = _grid(len(panels), max_cols=2)
    fig, axes = _fixed_grid(n_rows, n_cols, panel_w=5.6, panel_h=3.6, top=0.4, bottom=0.55)
    for index, (tag, record) in enumerate(panels):
        ax = axes[index // n_cols][index % n_cols]
        capacity = record.capacity
        assert capacity is not None
        handles = []
        for i, layout in enumerate(f for f in capacity.layouts if _steps(f)):
            color = LAYOUT_COLORS[i % len(LAYOUT_COLORS)]
            for server in filter(None, (layout.server, layout.batched_server)):
                batched = server is layout.batched_server
                steps = [s for s in _steps(layout, batched) if s.latency_p99_s is not None and s.achieved_per_s > 0]
                xs = [s.achieved_per_s for s in steps]
                ys = [s.latency_p99_s * 1e3 for s in steps]  # type: ignore[operator]
                style = "--" if batched else "-" if layout.requested else ":"
                ax.plot(xs, ys, color=color, linewidth=1.3, linestyle=style)
                for s, x, y in zip(steps, xs, ys, strict=True):
                    marker, face = ("o", color) if s.passed else ("X", color) if s.valid else ("o", "white")
                    ax.plot([x], [y], marker=marker, markersize=6, color=color, markerfacecolor=face, linestyle="")
                low = server.low_load_step
                if low is not None and low.latency_p99_s is not None and low.achieved_per_s > 0:
                    face = color if low.valid else "white"
                    ax.plot(
                        [low.achieved_per_s],
                        [low.latency_p99_s * 1e3],
                        marker="s",
                        color=color,
                        markerfacecolor=face,
                        linestyle="",
                    )
                label = layout.layout + (" batched" if batched else "" if layout.requested else " (sweep)")
                handles.append(Line2D([], [], color=color, marker="o", linestyle=style, label=label))
        slo_ms = capacity.slo_p99_s * 1e3
        ax.axhline(slo_ms, color="#b3261e", linestyle="--", linewidth=1.2)
        handles.append(Line2D([], [], color="#b3261e", linestyle="--", label=f"SLO p99 {slo_ms:g} ms"))
        ax.set_yscale("log")
        _nice_log(ax, "y")
        ax.set_xlabel("requests completed per second")
        ax.set_ylabel("p99 latency (ms, log)")
        ax.set_title(f"{record.scenario_id}{f' · {tag}' if tag else ''}", loc="left")
        ax.legend(handles=handles, loc="upper left", fontsize=8)
    for index in range(len(panels), n_rows * n_cols):
        axes[index // n_cols][index % n_cols].set_visible(False)
    result.files.append(_save(fig, fig_dir / f"{FIGURE_PREFIX}throughput_vs_p99.png"))
    return result


# --- text -------------------------------------------------------------------------------------------

HEADERS = [
    ("scenario", ""),
    ("layout", "instances x threads"),
    ("closed loop", "samples/s"),
    ("offline", "samples/s"),
    ("rate at SLO", "requests/s"),
    ("single-stream p99", "ms"),
    ("low-load p99", "ms"),
    ("USS / instance", "MiB"),
    ("PSS / instance", "MiB"),
    ("RSS / instance", "MiB"),
    ("generator", "cores; send lag p99 ms, max"),
    ("stall floor", "% over the SLO at low load"),
    ("search", ""),
]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _largest(values: list[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) / MIB if known else None


def _mix(server: ServerFigures) -> str:
    """The request mix, and each seq_len's p99 in the longest step at the answer: which length breaks the SLO."""
    if not server.mix_seq_lens or not server.mix_weights:
        return ""
    total = sum(server.mix_weights)
    shares = ", ".join(f"{n} ({w / total:.0%})" for n, w in zip(server.mix_seq_lens, server.mix_weights, strict=True))
    at_rate = [s for s in server.steps if s.passed and s.rate_per_s == server.max_rate_per_s and s.mix_latency_p99_s]
    if not at_rate:
        return f"request mix: seq_len {shares}; "
    step = max(at_rate, key=lambda s: s.requests)
    p99s = ", ".join(
        f"{n}: {ms_number(p)} ms" for n, p in zip(server.mix_seq_lens, step.mix_latency_p99_s or [], strict=True)
    )
    return f"request mix: seq_len {shares}; p99 by seq_len at the answer: {p99s}; "


def _search(server: ServerFigures | None) -> str:
    if server is None:
        return "-"
    if not server.steps:
        return _mix(server) + server.stop_reason
    if server.verdict_rule is None:  # recorded before p99 verdicts: steps of fixed request counts
        return (
            f"{len(server.steps)} steps of >= {server.min_requests} requests and >= {server.min_duration_s:g} s; "
            f"{server.stop_reason}"
        )
    confirming = sum(s.confirmation for s in server.steps)
    return _mix(server) + (
        f"{len(server.steps) - confirming} steps and {confirming} confirming step(s) of >= "
        f"{server.min_duration_s:g} s, each until its verdict; {server.stop_reason}; {server.verdict_rule}"
    )


def _stall_floor(server: ServerFigures | None) -> str:
    """The floor's share over the SLO and its bounds, and whether it limits the rate; "-" where not measured."""
    floor = server.stall_floor if server else None
    if floor is None:
        return "-"
    share = (
        f"{floor.over_slo_share * 100:.2g} ({floor.over_slo_lower_bound * 100:.2g} to "
        f"{floor.over_slo_upper_bound * 100:.2g}) at {floor.rate_per_s:,.4g}/s"
    )
    return share + ("; limits the rate" if floor.limits_rate else "")


def _cells(row: CapacityRow) -> list[str]:
    f = row.layout
    if f.status != "ok":
        return [row.scenario_id, f.layout, *["-"] * (len(HEADERS) - 3), f"{f.status}: {f.note}"]
    server = f.server
    searched = f.generation_server or server
    low = server.low_load_step if server else None
    loadgen = [s.loadgen_cpu_fraction for s in (searched.steps if searched else [])]
    lags = [s.send_lag_p99_s for s in (searched.steps if searched else []) if s.send_lag_p99_s is not None]
    rate = searched.max_rate_per_s if searched else None
    return [
        row.scenario_id + (f" ({row.run})" if row.run else ""),
        f.layout + ("" if f.requested else " (sweep)") + (" ★ best" if row.best else ""),
        _fmt(f.closed_loop.samples_per_s if f.closed_loop else None),
        _fmt(f.offline.samples_per_s if f.offline else None),
        "none confirmed" if searched and rate is None else _fmt(rate, 0 if rate is None or rate >= 100 else 2),
        ms_number(
            f.closed_loop.latency_s.p99 if f.instances == 1 and f.closed_loop and f.closed_loop.latency_s else None
        ),
        ms_number(low.latency_p99_s if low else None),
        _fmt(_largest([m.uss_bytes for m in f.memory])),
        _fmt(_largest([m.pss_bytes for m in f.memory])),
        _fmt(_largest([m.rss_bytes for m in f.memory])),
        f"{max(loadgen):.2f}; {max(lags) * 1e3:.3g}" if loadgen and lags else "-",
        _stall_floor(server),
        _llm_search(f.generation_server) if f.generation_server else _search(server),
    ]


def _llm_slos(generation: GenerationServerFigures) -> str:
    return f"p99 TTFT <= {generation.slo_ttft_s * 1e3:g} ms and p99 TPOT <= {generation.slo_tpot_s * 1e3:g} ms"


def _llm_search(generation: GenerationServerFigures) -> str:
    total = sum(generation.weights)
    shapes = ", ".join(
        f"{p}/{n} ({w / total:.0%})"
        for p, n, w in zip(generation.prompt_tokens, generation.new_tokens, generation.weights, strict=True)
    )
    batching = (
        f"static batches of up to {generation.max_batch} requests"
        if generation.max_batch > 1
        else "one request per generate() call"
    )
    return (
        f"LLM server mode at {_llm_slos(generation)} (steps in the LLM server table); request shapes "
        f"prompt/new tokens {shapes}; {batching}; {generation.stop_reason}; {generation.verdict_rule}"
    )


LLM_HEADERS = [
    ("scenario", ""),
    ("layout", "instances x threads"),
    ("step", "offered requests/s"),
    ("requests", "sent; finished"),
    ("verdict", "requests over TTFT, over TPOT"),
    ("TTFT", "p50 / p90 / p99 ms"),
    ("TPOT", "p50 / p90 / p99 ms"),
    ("goodput", "requests/s within both SLOs"),
    ("output tokens", "per s"),
    ("largest batch", "requests; largest KV cache KiB"),
    ("RSS", "MiB, largest instance"),
]
LLM_INTRO = (
    "LLM server mode (a generate: scenario): Poisson arrivals of generation requests, their prompt and output "
    "lengths drawn from the request mix; an instance runs the requests it holds as one generate() call (static "
    "batching, padded to the longest prompt, generating the longest output). TTFT: each request's scheduled "
    "arrival to its first token, queueing included; TPOT: its mean time per output token after the first. A "
    "request is over when it missed either SLO or did not finish; percentiles are over the finished requests."
)


def _ms3(values: Sequence[float | None]) -> str:
    return " / ".join(ms_number(v) for v in values)


def _llm_rows(section: CapacitySection) -> list[list[str]]:
    rows = []
    for row in section.rows:
        generation = row.layout.generation_server
        if row.layout.status != "ok" or generation is None:
            continue
        for step in sorted(generation.steps, key=lambda s: (s.confirmation, s.rate_per_s)):
            g = step.generation
            if g is None:
                continue
            kv = "-" if g.kv_cache_bytes is None else f"{g.kv_cache_bytes / 1024:,.0f}"
            rows.append(
                [
                    row.scenario_id + (f" ({row.run})" if row.run else ""),
                    row.layout.layout + f"; {_llm_slos(generation)}",
                    f"{step.rate_per_s:,.3g}" + (" (confirming)" if step.confirmation else ""),
                    f"{step.requests}; {step.completed}",
                    f"{step.verdict if step.valid else 'invalid'}: {g.over_ttft}, {g.over_tpot}",
                    _ms3([g.ttft_p50_s, g.ttft_p90_s, g.ttft_p99_s]),
                    _ms3([g.tpot_p50_s, g.tpot_p90_s, g.tpot_p99_s]),
                    f"{g.goodput_per_s:,.3g}",
                    f"{g.output_tokens_per_s:,.4g}",
                    f"{_fmt(g.largest_batch)}; {kv}",
                    _fmt(g.rss_bytes / MIB if g.rss_bytes is not None else None),
                ]
            )
    return rows


BATCHING_HEADERS = [
    ("scenario", ""),
    ("layout", "instances x threads"),
    ("batching", "max batch, max delay"),
    ("rate at SLO", "requests/s, one request per call"),
    ("batched rate at SLO", "requests/s"),
    ("gain", "batched / unbatched"),
    ("low-load p99", "ms, unbatched → batched"),
    ("batches at the batched rate", "mean size; share of batches by size"),
    ("search", "batched"),
]
BATCHING_INTRO = (
    "Dynamic batching: an instance holding a request waits for more until it has the max batch or until the max "
    "delay after the first one's arrival, then runs them as one call; latency still runs from each request's "
    "scheduled arrival. Both searches use the same arrivals step by step. At low load a request waits up to the "
    "max delay for company: the low-load p99 shows that price."
)


def _batch_mix(step: ServerStep | None) -> str:
    counts = step.batch_size_counts if step else None
    if not counts or not sum(counts):
        return "-"
    batches = sum(counts)
    mean = sum(size * n for size, n in enumerate(counts, start=1)) / batches
    shares = ", ".join(f"{size}: {n / batches:.0%}" for size, n in enumerate(counts, start=1) if n)
    return f"{mean:.2f}; {shares}"


def _batching_cells(row: CapacityRow) -> list[str]:
    f, batched = row.layout, row.layout.batched_server
    assert batched is not None and batched.batching_max_batch is not None
    plain = f.server.max_rate_per_s if f.server else None
    rate = batched.max_rate_per_s
    at_rate = [s for s in batched.steps if s.passed and s.rate_per_s == rate]
    lows = [s.low_load_step.latency_p99_s if s and s.low_load_step else None for s in (f.server, batched)]
    return [
        row.scenario_id + (f" ({row.run})" if row.run else ""),
        f.layout + ("" if f.requested else " (sweep)"),
        f"{batched.batching_max_batch}, {(batched.batching_max_delay_s or 0) * 1e3:g} ms",
        "none confirmed" if plain is None else _fmt(plain),
        "none confirmed" if rate is None else _fmt(rate),
        f"{rate / plain:.2f}x" if rate and plain else "-",
        f"{ms_number(lows[0])} → {ms_number(lows[1])}",
        _batch_mix(max(at_rate, key=lambda s: s.requests) if at_rate else None),
        _search(batched),
    ]


def _batching_rows(section: CapacitySection) -> list[CapacityRow]:
    return [row for row in section.rows if row.layout.status == "ok" and row.layout.batched_server is not None]


INTRO = (
    "Several instances of each scenario, each pinned to its own cores, measured together. Closed loop: every "
    "instance calls back to back on the scenario's batch (one instance: SingleStream). Offline: the same with "
    "large batches. Rate at SLO: the highest Poisson arrival rate whose p99 latency, from each request's "
    "scheduled arrival, met the SLO (server mode). Memory after serving, per instance: USS is its own, PSS "
    "splits shared pages. Generator: the load generator's share of a core, which it takes from the "
    "instances, and how late it sent requests (counted in the latency). Stall floor, where the search answered "
    "no rate or a low one: the share of requests over the SLO (and its bounds at the run's confidence) in a step "
    "at a load where queueing puts almost none over it: the host's own stalls. `bench plan --run RUN` turns this "
    "into hosts and cost."
)
STALL_ADVICE = (
    "The rate (or its absence) is this host's, not the model's: more instances or hosts like it do not change it; "
    "measure on a quieter host, or loosen the SLO."
)


def capacity_html(section: CapacitySection | None) -> str:
    if section is None:
        return ""
    e = html.escape
    parts = ['<h2 id="capacity">Capacity</h2>', f"<p>{e(INTRO)}</p>"]
    parts += [f'<div class="note">{e(note)}</div>' for note in section.notes]

    classes = ["id", "id"] + ["num"] * (len(HEADERS) - 4) + ["", ""]
    parts.append(section_table("capacity-table", HEADERS, (_cells(row) for row in section.rows), classes))
    if batching := _batching_rows(section):
        parts.append(f"<p>{e(BATCHING_INTRO)}</p>")
        classes = ["id", "id", ""] + ["num"] * 4 + ["", ""]
        parts.append(section_table("batching-table", BATCHING_HEADERS, map(_batching_cells, batching), classes))
    if llm_rows := _llm_rows(section):
        parts.append(f"<p>{e(LLM_INTRO)}</p>")
        classes = ["id", "id"] + ["num"] * (len(LLM_HEADERS) - 2)
        parts.append(section_table("llm-server-table", LLM_HEADERS, llm_rows, classes))
    if section.figure is not None:
        parts.append(figure_html(section.figure))
    return "".join(parts)


def capacity_markdown(section: CapacitySection | None, out_dir: Path) -> str:
    if section is None:
        return ""

    out = ["## Capacity\n", INTRO + "\n"]
    out += [f"> {cell(note)}\n" for note in section.notes]
    headers = unit_headers(HEADERS)
    rows = [[cell(c) for c in _cells(row)] for row in section.rows]
    out.append(table(headers, rows, ["l", "l"] + ["r"] * (len(HEADERS) - 4) + ["l", "l"]) + "\n")
    if batching := _batching_rows(section):
        rows = [[cell(c) for c in _batching_cells(row)] for row in batching]
        out += [
            BATCHING_INTRO + "\n",
            table(unit_headers(BATCHING_HEADERS), rows, ["l", "l", "l"] + ["r"] * 4 + ["l", "l"]) + "\n",
        ]
    if llm_rows := _llm_rows(section):
        rows = [[cell(c) for c in row] for row in llm_rows]
        out += [
            LLM_INTRO + "\n",
            table(unit_headers(LLM_HEADERS), rows, ["l", "l"] + ["r"] * (len(LLM_HEADERS) - 2)) + "\n",
        ]
    if section.figure is not None:
        out += figure_markdown(section.figure, out_dir)
    return "\n".join(out)
