"""The report's figures, drawn with matplotlib's Agg renderer into PNG files.

No pyplot: every figure is a `matplotlib.figure.Figure` rendered by the Agg canvas, so
nothing depends on (or changes) the process's matplotlib backend. Every figure function
returns a FigureResult; one that cannot be drawn says why in its notes instead of raising.
Scenario ids go on the y axis of horizontal boxes and bars, and a figure's height grows
with the number of scenarios, so 50 scenarios never overlap.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

from bench.format.units import MIB
from bench.profile.folder import MEMORY_PHASES
from bench.report.tables import pareto_front
from bench.results.runfolder import RunFolder, allocation_events, round_times, rss_samples

DPI = 100
PANELS_PER_FILE = 24  # memory small multiples per PNG
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.edgecolor": "#888888",
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "grid.color": "#e3e3e3",
    "grid.linewidth": 0.7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.axisbelow": True,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}
PRECISION_COLORS = {
    "fp32": "#1f6fb4",
    "bf16": "#d1495b",
    "fp16": "#2a9d8f",
    "int8_dynamic": "#e9a03b",
    "int8_static": "#7b2cbf",
    "int8_weight_only": "#6a994e",
    "int4_weight_only": "#386641",
}
LOAD_COLORS = {
    "eager": "#1f6fb4",
    "mmap": "#2a9d8f",
    "torchscript": "#8e6bbf",
    "export": "#6b8e23",
    "onnxruntime": "#e07a2e",
    "compile": "#d1495b",
    "aoti": "#3d5a80",
    "openvino": "#b5651d",
}
LOAD_MARKERS = {
    "eager": "o",
    "mmap": "s",
    "torchscript": "^",
    "export": "v",
    "onnxruntime": "D",
    "compile": "P",
    "aoti": "X",
    "openvino": "*",
}
EXTRA_COLORS = ["#6c757d", "#8e6bbf", "#b5651d", "#3d5a80", "#9c6644", "#588157", "#bc4749", "#457b9d"]
EXTRA_MARKERS = ["v", "P", "X", "*", "h", "<", ">"]
RUN_COLORS = [
    "#1f6fb4",
    "#e07a2e",
    "#2a9d8f",
    "#d1495b",
    "#8e6bbf",
    "#b5651d",
    "#3d5a80",
    "#6c757d",
    "#588157",
    "#bc4749",
]
PHASE_COLORS = {
    "startup": "#f1f1f1",
    "load": "#fde2b8",
    "first_inference": "#f9c0c0",
    "warmup": "#d8ccf0",
    "steady": "#cfe8d5",
    "teardown": "#e6e6e6",
    "done": "#e6e6e6",
}
ALLOCATION_COLOR = "#e07a2e"
PHASE_ORDER = ["startup", "load", "first_inference", "warmup", "steady", "teardown", "done"]


@dataclass
class FigureResult:
    key: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the Pareto front, for the text


def _color(mapping: dict[str, str], name: str, palette: Sequence[str] = EXTRA_COLORS) -> str:
    if name in mapping:
        return mapping[name]
    mapping[name] = palette[len(mapping) % len(palette)]
    return mapping[name]


def _marker(name: str) -> str:
    if name in LOAD_MARKERS:
        return LOAD_MARKERS[name]
    LOAD_MARKERS[name] = EXTRA_MARKERS[len(LOAD_MARKERS) % len(EXTRA_MARKERS)]
    return LOAD_MARKERS[name]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=DPI, format="png")
    tmp.replace(path)
    return path


def _fixed_grid(
    n_rows: int,
    n_cols: int,
    *,
    panel_w: float,
    panel_h: float,
    top: float = 0.5,
    bottom: float = 0.45,
    gap_w: float = 0.8,
    gap_h: float = 0.75,
) -> tuple[Figure, Any]:
    """Small multiples with margins fixed in inches: much cheaper than constrained layout for many panels."""
    left, right = 0.75, 0.15
    width = left + right + n_cols * panel_w
    height = top + bottom + n_rows * panel_h
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes_w = (n_cols * panel_w - (n_cols - 1) * gap_w) / n_cols
    axes_h = (n_rows * panel_h - (n_rows - 1) * gap_h) / n_rows
    axes = fig.subplots(
        n_rows,
        n_cols,
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": 1 - right / width,
            "bottom": bottom / height,
            "top": 1 - top / height,
            "wspace": gap_w / axes_w,
            "hspace": gap_h / axes_h,
        },
    )
    return fig, axes


def _legend_cols(labels: Sequence[str], width_in: float, most: int = 6) -> int:
    """As many legend columns as fit across the figure (DejaVu Sans 8.5 pt: ~0.07 in per character)."""
    widths = [len(label) * 0.07 + 0.6 for label in labels]
    for cols in range(min(most, len(labels)), 1, -1):
        per_col = math.ceil(len(labels) / cols)  # matplotlib fills legend columns top to bottom
        total = sum(max(widths[i : i + per_col]) for i in range(0, len(widths), per_col))
        if total <= width_in * 0.95:
            return cols
    return 1


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return math.ceil(n / cols), cols


def _plain(value: float, _pos: Any = None) -> str:
    """1,000 / 25 / 0.5 / 0.002 rather than 10^3 or 5x10^-1."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _nice_log(ax: Any, axis: str) -> None:
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(_plain))
    target.set_minor_formatter(NullFormatter())


def _log_if_wide(ax: Any, values: Sequence[float], axis: str = "x", ratio: float = 20.0) -> bool:
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > ratio:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        _nice_log(ax, axis)
        return True
    return False


def _plain_linear(ax: Any, axis: str, bins: int = 5) -> None:
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(MaxNLocator(bins))
    target.set_major_formatter(ScalarFormatter(useOffset=False))


def _run_tags(runs: Sequence[RunFolder]) -> dict[str, str]:
    """Short tags for runs in labels ('run 1', 'run 2'...), or '' for a single run."""
    if len(runs) == 1:
        return {runs[0].label: ""}
    return {run.label: f"run {i}" for i, run in enumerate(runs, start=1)}


# --- latency distribution ---------------------------------------------------------------------


def latency_distribution(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    result = FigureResult(
        "latency",
        "Latency distribution per scenario",
        "Every kept steady-state round (one call on one batch). Box: quartiles and median; "
        "whiskers: 1st to 99th percentile; dots: rounds beyond them. Lower is better.",
    )
    tags = _run_tags(runs)
    items: list[tuple[str, list[float], str]] = []
    missing: list[str] = []
    entries = []
    for run_index, run in enumerate(runs):
        for record in run.records:
            if record.status != "ok":
                continue
            times, why = round_times(run.path, record.files, record.scenario_id)
            tag = tags[run.label]
            name = f"{record.scenario_id} · {tag}" if tag else record.scenario_id
            if times is None:
                missing.append(f"{name}: {why}")
                continue
            color = RUN_COLORS[run_index % len(RUN_COLORS)] if tag else _color(PRECISION_COLORS, record.precision)
            entries.append((record.scenario_id, run_index, name, [t * 1e3 for t in times], color))
    if len(runs) > 1:  # the same scenario of every run side by side
        order = {sid: i for i, sid in enumerate(dict.fromkeys(e[0] for e in entries))}
        entries.sort(key=lambda e: (order[e[0]], e[1]))
    items = [(name, values, color) for _, _, name, values, color in entries]
    if missing:
        result.notes.append("No raw round times for: " + "; ".join(missing))
    if not items:
        result.notes.insert(0, "Not drawn: no scenario has raw round times.")
        return result

    fig = _new_figure(10, max(2.6, 0.3 * len(items) + 1.4))
    ax = fig.add_subplot()
    positions = list(range(len(items), 0, -1))  # first scenario on top
    boxes = ax.boxplot(
        [values for _, values, _ in items],
        positions=positions,
        orientation="horizontal",
        whis=(1, 99),
        widths=0.6,
        patch_artist=True,
        flierprops={"marker": ".", "markersize": 2.5, "alpha": 0.35, "markeredgecolor": "none"},
        medianprops={"color": "#222222", "linewidth": 1.4},
        whiskerprops={"color": "#666666"},
        capprops={"color": "#666666"},
    )
    for patch, flier, (_, _, color) in zip(boxes["boxes"], boxes["fliers"], items, strict=True):
        patch.set_facecolor(color)
        patch.set_alpha(0.55)
        patch.set_edgecolor(color)
        flier.set_markerfacecolor(color)
    ax.set_yticks(positions, [name for name, _, _ in items], fontfamily="DejaVu Sans Mono", fontsize=8.5)
    ax.set_ylim(0.3, len(items) + 0.7)
    all_values = [v for _, values, _ in items for v in (min(values), max(values))]
    log = _log_if_wide(ax, all_values)
    ax.set_xlabel("latency per call (ms)" + (", log scale" if log else ""))
    ax.grid(axis="y", visible=False)
    if len(runs) > 1:
        handles = [
            Patch(facecolor=RUN_COLORS[i % len(RUN_COLORS)], alpha=0.55, label=f"{tags[r.label]}: {r.label}")
            for i, r in enumerate(runs)
        ]
    else:
        used = dict.fromkeys(r.precision for run in runs for r in run.records if r.status == "ok")
        handles = [Patch(facecolor=_color(PRECISION_COLORS, p), alpha=0.55, label=p) for p in used]
    fig.legend(handles=handles, loc="outside upper right", ncols=min(4, len(handles)))
    result.files.append(_save(fig, fig_dir / "latency_distribution.png"))
    return result


# --- throughput ----------------------------------------------------------------------------------


def _min_span(ax: Any, values: Sequence[float], fraction: float) -> None:
    """Widen a linear axis whose data span is below `fraction` of its values, so noise isn't magnified."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    centre = (low + high) / 2
    half = max((high - low) * 0.65, abs(centre) * fraction / 2, 1e-9)
    ax.set_xlim(centre - half, centre + half)


LOAD_STYLES = {"eager": "-", "mmap": "--", "torchscript": ":", "export": (0, (5, 1, 1, 1)), "onnxruntime": "-."}


def _throughput_versus(
    runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path, x: str, panel: str, key: str, title: str
) -> FigureResult:
    x_name = {"batch_size": "batch size", "threads": "threads"}[x]
    panel_name = {"batch_size": "batch size", "threads": "threads"}[panel]
    multi = len(runs) > 1
    result = FigureResult(
        key,
        title,
        f"Samples per second (batch size / mean latency, one stream) against {x_name}: one panel per model "
        f"and {panel_name}, one line per precision and loading mode"
        + (" and run (colour: run)" if multi else " (colour: precision; marker and dash: loading mode)")
        + ". Higher is better.",
    )
    ok = frame[frame["status"].eq("ok") & frame["throughput_samples_per_s"].gt(0) & frame[x].notna()].copy()
    if ok.empty:
        result.notes.append("Not drawn: no ok row has a throughput.")
        return result
    tags = _run_tags(runs)
    ok["_panel_value"] = ok[panel].fillna(-1)
    ok["_model"] = [
        model + (f" · shape {shape}" if _is_custom_shape(frame, model, shape) else "")
        for model, shape in zip(ok["model"], ok["input_shape"], strict=True)
    ]
    line_cols = ["run_id", "precision", "load", "interop_threads"]
    lines = []  # (panel key, line label, precision, load, run index, rows)
    run_index = {label: i for i, label in enumerate(tags)}
    for (model, panel_value), panel_rows in ok.groupby(["_model", "_panel_value"], sort=False):
        for (run_label, precision, load, interop), rows in panel_rows.groupby(line_cols, sort=False, dropna=False):
            rows = rows.drop_duplicates(x, keep="last").sort_values(x)
            if len(rows) < 2:
                continue
            label = f"{precision} · {load}"
            if not pd.isna(interop) and int(interop) != 1:
                label += f" · i{int(interop)}"
            if multi:
                label += f" ({tags[run_label]})"
            lines.append(((model, panel_value), label, precision, load, run_index[run_label], rows))
    if not lines:
        result.notes.append(
            f"Not drawn: no model / precision / loading mode was measured at two or more {x_name} values "
            f"with everything else equal (the suite's matrix has one {x_name})."
        )
        return result
    panels = list(dict.fromkeys(p for p, *_ in lines))
    panels.sort(key=lambda p: (list(dict.fromkeys(ok["_model"])).index(p[0]), p[1]))
    n_rows, n_cols = _grid(len(panels))
    labels = list(dict.fromkeys(label for _, label, *_ in lines))
    legend_cols = _legend_cols(labels, 4.4 * n_cols + 0.9)
    fig, axes = _fixed_grid(
        n_rows,
        n_cols,
        panel_w=4.4,
        panel_h=3.1,
        top=0.35,
        bottom=0.55 + 0.22 * math.ceil(len(labels) / legend_cols),
    )
    handles: dict[str, Line2D] = {}
    for index, panel_key in enumerate(panels):
        ax = axes[index // n_cols][index % n_cols]
        values: list[float] = []
        xs: set[float] = set()
        for key_, label, precision, load, run_no, rows in lines:
            if key_ != panel_key:
                continue
            color = RUN_COLORS[run_no % len(RUN_COLORS)] if multi else _color(PRECISION_COLORS, precision)
            (line,) = ax.plot(
                rows[x],
                rows["throughput_samples_per_s"],
                marker=_marker(load),
                linestyle=LOAD_STYLES.get(load, "-"),
                color=color,
                linewidth=1.6,
                markersize=5,
                label=label,
            )
            handles.setdefault(label, line)
            values.extend(rows["throughput_samples_per_s"].tolist())
            xs.update(rows[x].tolist())
        ax.set_xscale("log", base=2)
        ticks = sorted(xs)
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        log = _log_if_wide(ax, values, axis="y", ratio=8)
        if not log:
            _plain_linear(ax, "y")
        ax.set_xlabel(x_name)
        ax.set_ylabel("throughput (samples/s)" + (", log" if log else ""))
        model, panel_value = panel_key
        where = f"{panel_name} {panel_value:g}" if panel_value >= 0 else f"{panel_name} unknown"
        ax.set_title(f"{model} · {where}", loc="left")
    for index in range(len(panels), n_rows * n_cols):
        axes[index // n_cols][index % n_cols].set_visible(False)
    fig.legend(handles=list(handles.values()), loc="lower center", ncols=legend_cols, bbox_to_anchor=(0.5, 0.0))
    result.files.append(_save(fig, fig_dir / f"{key}.png"))
    return result


def _is_custom_shape(frame: pd.DataFrame, model: str, shape: str) -> bool:
    shapes = frame.loc[frame["model"].eq(model), "input_shape"].unique()
    return len(shapes) > 1


def throughput_vs_batch(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    return _throughput_versus(
        runs, frame, fig_dir, "batch_size", "threads", "throughput_vs_batch", "Throughput versus batch size"
    )


def throughput_vs_threads(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    return _throughput_versus(
        runs, frame, fig_dir, "threads", "batch_size", "throughput_vs_threads", "Throughput versus threads"
    )


# --- memory over time ----------------------------------------------------------------------------


def _phase_spans(samples: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(phase, start, end) from the phase column: a span runs to the next phase's first sample."""
    spans: list[tuple[str, float, float]] = []
    times = samples["t_s"].tolist()
    phases = samples["phase"].tolist()
    start = 0
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            end_t = times[i] if i < len(phases) else times[-1]
            spans.append((phases[start], times[start], end_t))
            start = i
    return spans


def _measured_window(samples: pd.DataFrame) -> pd.DataFrame:
    """From 1 s before load to shortly after the last measured phase (start-up and exit cropped)."""
    phases = samples["phase"]
    measured = samples[~phases.isin(["startup", "teardown", "done"])]
    if measured.empty:
        return samples
    start = measured["t_s"].iloc[0]
    last = measured["t_s"].iloc[-1]
    after = samples[samples["t_s"].gt(last)]
    end = last + max(0.2, 0.1 * (last - start))
    if not after.empty:
        end = min(end, after["t_s"].iloc[-1])
    window = samples[samples["t_s"].between(start - 1.0, end)]
    return window if len(window) >= 2 else samples


def _allocation_overlay(shown: pd.DataFrame, events: pd.DataFrame, baseline: float) -> tuple[list[float], list[float]]:
    """x (worker time) and y (MiB) of baseline + torch's live bytes, each phase's events spread over its worker span."""
    spans: dict[str, tuple[float, float]] = {}
    for phase, t0, t1 in _phase_spans(shown):
        spans.setdefault(phase, (t0, t1))
    xs: list[float] = []
    ys: list[float] = []
    for phase in MEMORY_PHASES:
        rows = events[events["phase"].eq(phase)]
        if rows.empty or phase not in spans:
            continue
        (w0, w1), (e0, e1) = spans[phase], (rows["t_s"].iloc[0], rows["t_s"].iloc[-1])
        scale = (w1 - w0) / (e1 - e0) if e1 > e0 else 0.0
        xs += [*(w0 + (rows["t_s"] - e0) * scale).tolist(), w1, math.nan]  # NaN: no line across other phases
        levels = ((baseline + rows["allocated_bytes"]) / MIB).tolist()
        ys += [*levels, levels[-1], math.nan]
    return xs, ys


def memory_over_time(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    result = FigureResult(
        "memory",
        "Memory over time per scenario",
        "Resident set size of the worker process as the parent sampled it. Shaded spans are the "
        "worker's phases as the samples saw them (a phase shorter than the sampling interval may not "
        "show). Each panel shows the last second of start-up (interpreter and torch import) through the "
        "end of the measurement; the harness's own exit afterwards is cropped. Dotted: RSS before load, "
        "the baseline. The y axis does not start at zero. Orange, on profiled rows: RSS before load plus the "
        "bytes torch's CPU allocator had live in the separate profiling process (its allocation events, "
        "counted from the start of load): each phase's events are spread over the timed worker's span of that "
        "phase, so their order within a phase is real and their times are scaled. Where the RSS climbs above "
        "the orange line, the memory is not torch tensors (libraries, allocator caches, mapped files).",
    )
    tags = _run_tags(runs)
    panels = []
    missing: list[str] = []
    missing_events: list[str] = []
    for run in runs:
        for record in run.records:
            if record.status == "unsupported":
                continue
            name = f"{record.scenario_id} · {tags[run.label]}" if tags[run.label] else record.scenario_id
            samples, why = rss_samples(run.path, record.files, record.scenario_id)
            if samples is None:
                if record.status == "ok":  # a failed row may never have started a worker
                    missing.append(f"{name}: {why}")
                continue
            baseline = record.rss_bytes.before_load if record.rss_bytes else None
            events = None
            if getattr(record, "profile", None) is not None and record.profile.status == "ok":
                events, why = allocation_events(run.path, record.files, record.scenario_id)
                if events is None and record.runtime == "torch":
                    missing_events.append(f"{name}: {why}")
            panels.append((name, samples, baseline, record.status, events))
    if missing:
        result.notes.append("No RSS samples for: " + "; ".join(missing))
    if missing_events:
        result.notes.append("No allocation events for: " + "; ".join(missing_events))
    if not panels:
        result.notes.insert(0, "Not drawn: no scenario has RSS samples.")
        return result

    n_files = math.ceil(len(panels) / PANELS_PER_FILE)
    size = math.ceil(math.ceil(len(panels) / n_files) / 3) * 3  # balanced files, full rows of three
    chunks = [panels[i : i + size] for i in range(0, len(panels), size)]
    for number, chunk in enumerate(chunks, start=1):
        n_rows, n_cols = _grid(len(chunk))
        windows = [_measured_window(samples) for _, samples, *_ in chunk]
        phases = sorted(
            {p for shown in windows for p, _, _ in _phase_spans(shown)},
            key=lambda p: PHASE_ORDER.index(p) if p in PHASE_ORDER else 99,
        )
        handles = [Patch(facecolor=PHASE_COLORS.get(p, "#eeeeee"), label=p.replace("_", " ")) for p in phases]
        handles += [
            Line2D([], [], color="#1f3b73", linewidth=1.4, label="RSS"),
            Line2D([], [], color="#555555", linewidth=0.9, linestyle=":", label="RSS before load"),
        ]
        if any(baseline and events is not None for _, _, baseline, _, events in chunk):
            handles.append(Line2D([], [], color=ALLOCATION_COLOR, linewidth=1.0, label="+ torch live (profile run)"))
        legend_cols = _legend_cols([h.get_label() for h in handles], 0.9 + 4.3 * n_cols, most=10)
        top = 0.5 + 0.22 * (math.ceil(len(handles) / legend_cols) - 1)
        fig, axes = _fixed_grid(n_rows, n_cols, panel_w=4.3, panel_h=2.55, top=top)
        for index, ((name, _, baseline, status, events), shown) in enumerate(zip(chunk, windows, strict=True)):
            ax = axes[index // n_cols][index % n_cols]
            for phase, t0, t1 in _phase_spans(shown):
                ax.axvspan(t0, t1, color=PHASE_COLORS.get(phase, "#eeeeee"), alpha=0.9, linewidth=0, zorder=0)
            ax.plot(shown["t_s"], shown["rss_bytes"] / MIB, color="#1f3b73", linewidth=1.4, label="RSS")
            if baseline:
                ax.axhline(baseline / MIB, color="#555555", linewidth=0.9, linestyle=":")
                if events is not None:
                    xs, ys = _allocation_overlay(shown, events, baseline)
                    ax.step(xs, ys, where="post", color=ALLOCATION_COLOR, linewidth=1.0, zorder=3)
            _plain_linear(ax, "y", 4)
            ax.set_xlim(shown["t_s"].iloc[0], shown["t_s"].iloc[-1] if len(shown) > 1 else shown["t_s"].iloc[0] + 1)
            ax.grid(axis="x", visible=False)
            title = name if status == "ok" else f"{name} ({status})"
            ax.set_title(
                title,
                fontsize=8.5,
                fontfamily="DejaVu Sans Mono",
                loc="left",
                color="#b00020" if status == "failed" else "#222222",
            )
            ax.set_xlabel("time since worker start (s)", fontsize=8)
            ax.set_ylabel("RSS (MiB)", fontsize=8)
            ax.tick_params(labelsize=7.5)
        for index in range(len(chunk), n_rows * n_cols):
            axes[index // n_cols][index % n_cols].set_visible(False)
        fig.legend(handles=handles, loc="upper center", ncols=legend_cols, bbox_to_anchor=(0.5, 1.0))
        suffix = "" if number == 1 else f"_{number}"
        result.files.append(_save(fig, fig_dir / f"memory_over_time{suffix}.png"))
    return result


# --- trade-offs: latency vs memory / fidelity, Pareto fronts -------------------------------------


def _exact_log_axis(ax: Any, floor: float, top: float, *, has_exact: bool) -> None:
    """A log x axis with decade ticks; the floor tick reads 'exact' when zeros are drawn there."""
    ax.set_xscale("log")
    low_decade = round(math.log10(floor))
    high_decade = max(low_decade + 1, math.ceil(math.log10(top)) if top > 0 else low_decade + 1)
    step = max(1, math.ceil((high_decade - low_decade) / 6))
    ticks = [10.0**k for k in range(low_decade + (1 if has_exact else 0), high_decade + 1, step)]
    labels = [f"{t:g}" for t in ticks]
    if has_exact:
        ticks.insert(0, floor)
        labels.insert(0, "exact")
        ax.axvline(floor * 10**0.5, color="#cccccc", linewidth=0.8, linestyle=":", zorder=0)
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(floor / 10**0.4, 10**high_decade * 10**0.2)


def _tradeoff(
    runs: Sequence[RunFolder],
    frame: pd.DataFrame,
    fig_dir: Path,
    *,
    key: str,
    title: str,
    caption: str,
    x_col: str,
    x_label: str,
    x_log: bool,
) -> FigureResult:
    result = FigureResult(key, title, caption)
    ok = frame[frame["status"].eq("ok") & frame["latency_median_ms"].gt(0) & frame[x_col].notna()].copy()
    if ok.empty:
        result.notes.append(f"Not drawn: no ok row has both a median latency and {x_label}.")
        return result
    tags = _run_tags(runs)
    ok["_panel"] = ok.apply(
        lambda r: " · ".join(
            p
            for p in (
                tags.get(r["run_id"], ""),
                str(r["model"]),
                f"batch {int(r['batch_size'])}" if not pd.isna(r["batch_size"]) else "",
                f"shape {r['input_shape']}" if _is_custom_shape(frame, r["model"], r["input_shape"]) else "",
            )
            if p
        ),
        axis=1,
    )
    panel_names = list(dict.fromkeys(ok["_panel"]))
    n_rows, n_cols = _grid(len(panel_names))
    legend_labels = [
        *map(str, set(ok["precision"])),
        *(f"load: {m}" for m in set(ok["load"])),
        "Pareto front" + (" (tN: threads)" if ok["threads"].nunique() > 1 else ""),
    ]
    legend_cols = _legend_cols(legend_labels, 4.2 * n_cols + 0.9)
    fig, axes = _fixed_grid(
        n_rows,
        n_cols,
        panel_w=4.2,
        panel_h=3.3,
        top=0.35,
        bottom=0.55 + 0.22 * math.ceil(len(legend_labels) / legend_cols),
    )
    fronts: dict[str, list[str]] = {}
    for index, panel in enumerate(panel_names):
        ax = axes[index // n_cols][index % n_cols]
        rows = ok[ok["_panel"].eq(panel)].reset_index(drop=True)
        points = list(zip(rows[x_col].astype(float), rows["latency_median_ms"].astype(float), strict=True))
        front = pareto_front(points)
        # On a log axis an exact match (0) is drawn at a floor a decade below the smallest error, labelled "exact".
        positive = [x for x, _ in points if x > 0]
        floor = 10 ** (math.floor(math.log10(min(positive))) - 1) if positive else 1e-9
        plot_x = [x if not x_log or x > 0 else floor for x, _ in points]
        several_threads = rows["threads"].nunique() > 1  # label front points with their threads only then
        fronts[panel] = [rows.loc[i, "scenario_id"] for i in front]
        if len(front) > 1:
            fx = [plot_x[i] for i in front]
            fy = [points[i][1] for i in front]
            ax.step(fx, fy, where="post", color="#999999", linewidth=1.1, linestyle="--", zorder=1)
        for i, row in rows.iterrows():
            on_front = i in front
            ax.scatter(
                plot_x[i],
                row["latency_median_ms"],
                s=60 if on_front else 34,
                marker=_marker(row["load"]),
                color=_color(PRECISION_COLORS, row["precision"]),
                edgecolors="#111111" if on_front else "white",
                linewidths=1.4 if on_front else 0.6,
                zorder=3,
            )
            if on_front and several_threads and not pd.isna(row["threads"]):
                ax.annotate(
                    f"t{int(row['threads'])}",
                    (plot_x[i], row["latency_median_ms"]),
                    xytext=(5, 4),
                    textcoords="offset points",
                    fontsize=7.5,
                    color="#333333",
                )
        if x_log:
            _exact_log_axis(ax, floor, max(plot_x), has_exact=len(positive) < len(points))
        else:
            _plain_linear(ax, "x", 4)
            _min_span(ax, [p[0] for p in points], 0.02)
        if not _log_if_wide(ax, [p[1] for p in points], axis="y", ratio=20):
            _plain_linear(ax, "y", 5)
        ax.margins(x=0.15, y=0.2)
        ax.set_title(panel, loc="left")
        ax.set_xlabel(x_label)
        ax.set_ylabel("median latency (ms)")
    for index in range(len(panel_names), n_rows * n_cols):
        axes[index // n_cols][index % n_cols].set_visible(False)
    precisions = list(dict.fromkeys(ok["precision"]))
    loads = list(dict.fromkeys(ok["load"]))
    handles = [Patch(facecolor=_color(PRECISION_COLORS, p), label=p) for p in precisions]
    handles += [
        Line2D([], [], marker=_marker(m), color="#555555", linestyle="none", markersize=6, label=f"load: {m}")
        for m in loads
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            color="#999999",
            linestyle="--",
            markerfacecolor="white",
            markeredgecolor="#111111",
            label=legend_labels[-1],
        )
    )
    fig.legend(handles=handles, loc="lower center", ncols=legend_cols, bbox_to_anchor=(0.5, 0.0))
    result.files.append(_save(fig, fig_dir / f"{key}.png"))
    result.extra["fronts"] = fronts
    return result


def latency_vs_memory(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    return _tradeoff(
        runs,
        frame,
        fig_dir,
        key="latency_vs_memory",
        title="Latency versus peak memory",
        caption="Median latency against the peak RSS of the worker (interpreter and torch included), one "
        "panel per model and batch size; colour: precision, marker: loading mode. Outlined points are the "
        "Pareto front: no other scenario in the panel is both faster and smaller. Lower left is better.",
        x_col="peak_rss_mib",
        x_label="peak RSS (MiB)",
        x_log=False,
    )


def latency_vs_fidelity(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    return _tradeoff(
        runs,
        frame,
        fig_dir,
        key="latency_vs_fidelity",
        title="Latency versus fidelity",
        caption="Median latency against the largest absolute difference from the fp32 eager output on "
        "the same input, one panel per model and batch size; outlined points are the Pareto front. "
        "Lower left is better.",
        x_col="fidelity_max_abs_error",
        x_label="max abs error vs fp32 eager (log scale)",
        x_log=True,
    )


def cold_start_vs_steady(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    return _tradeoff(
        runs,
        frame,
        fig_dir,
        key="cold_start_vs_steady",
        title="Cold start versus steady-state latency",
        caption="Median steady-state latency against the cold start: load + compile (load: compile; an aoti "
        "package was compiled beforehand, see artifact_prepare_s) + first inference, one panel per model and "
        "batch size; colour: precision, marker: loading mode. Outlined points are the Pareto front: no other "
        "scenario is both quicker to its first answer and faster after it. Lower left is better.",
        x_col="cold_start_ms",
        x_label="cold start (ms, log scale)",
        x_log=True,
    )


# --- load time -------------------------------------------------------------------------------------


def load_time(runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path) -> FigureResult:
    result = FigureResult(
        "load_time",
        "Load time by loading mode",
        "Time from the model file to a ready model (solid), then torch.compile's compiling first call "
        "(hatched, load: compile only), then the first inference timed alone (light): together, the "
        "time to the first answer. Median over the batch sizes and thread counts measured; colour: "
        "loading mode. Shorter is better.",
    )
    rows = frame[frame["load_ms"].notna()].copy()
    if rows.empty:
        result.notes.append("Not drawn: no row has a load time.")
        return result
    tags = _run_tags(runs)
    group_cols = ["run_id", "model", "precision", "load", "input_shape"]
    grouped = (
        rows.groupby(group_cols, sort=False, dropna=False)
        .agg(
            load_ms=("load_ms", "median"),
            compile_ms=("compile_ms", "median"),
            first_ms=("first_inference_ms", "median"),
            n=("load_ms", "size"),
        )
        .reset_index()
    )
    order = {c: {v: i for i, v in enumerate(dict.fromkeys(rows[c]))} for c in ("model", "precision", "load")}
    grouped = grouped.sort_values(
        ["model", "input_shape", "precision", "load", "run_id"],
        key=lambda s: s.map(order[s.name]) if s.name in order else s,
        kind="stable",
    )
    labels = []
    for _, g in grouped.iterrows():
        label = f"{g['model']} · {g['precision']} · {g['load']}"
        if _is_custom_shape(frame, g["model"], g["input_shape"]):
            label += f" · shape {g['input_shape']}"
        if tags.get(g["run_id"]):
            label += f" · {tags[g['run_id']]}"
        labels.append(label)
    n = len(grouped)
    fig = _new_figure(10, max(2.4, 0.34 * n + 1.4))
    ax = fig.add_subplot()
    y = list(range(n, 0, -1))
    colors = [_color(LOAD_COLORS, m) for m in grouped["load"]]
    load_values = grouped["load_ms"].astype(float).tolist()
    compile_values = grouped["compile_ms"].astype(float).fillna(0).tolist()
    first_values = grouped["first_ms"].astype(float).fillna(0).tolist()
    ax.barh(y, load_values, color=colors, height=0.62)
    ax.barh(y, compile_values, left=load_values, color=colors, alpha=0.6, hatch="//", height=0.62)
    ends = [a + c for a, c in zip(load_values, compile_values, strict=True)]
    ax.barh(y, first_values, left=ends, color=colors, alpha=0.35, height=0.62)
    longest = max(e + b for e, b in zip(ends, first_values, strict=True))
    for yi, a, c, b in zip(y, load_values, compile_values, first_values, strict=True):
        text = f"{a:.3g} ms" + (f" + compile {c:.3g} ms" if c else "") + (f" + {b:.3g} ms" if b else "")
        ax.text(a + c + b + longest * 0.01, yi, text, va="center", fontsize=8, color="#333333")
    ax.set_xlim(0, longest * 1.28 if longest > 0 else 1)
    ax.set_yticks(y, labels, fontfamily="DejaVu Sans Mono", fontsize=8.5)
    ax.set_ylim(0.3, n + 0.7)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("time (ms): load + compile + first inference")
    used = list(dict.fromkeys(grouped["load"]))
    handles = [Patch(facecolor=_color(LOAD_COLORS, m), label=m) for m in used]
    if any(compile_values):
        handles.append(Patch(facecolor="#888888", alpha=0.6, hatch="//", label="compile (first call)"))
    handles.append(Patch(facecolor="#888888", alpha=0.35, label="first inference"))
    fig.legend(handles=handles, loc="outside upper right", ncols=min(5, len(handles)))
    result.files.append(_save(fig, fig_dir / "load_time.png"))
    return result


# --- all of them -----------------------------------------------------------------------------------

FIGURE_PREFIXES = (
    "latency_distribution",
    "throughput_vs_batch",
    "throughput_vs_threads",
    "memory_over_time",
    "latency_vs_memory",
    "latency_vs_fidelity",
    "load_time",
    "cold_start_vs_steady",
)


def figure_jobs(
    runs: Sequence[RunFolder], frame: pd.DataFrame, fig_dir: Path, fidelity_measured: bool
) -> dict[str, Callable[[], FigureResult]]:
    """A call per figure of the report by its key, in the report's order (bench.report.parallel runs
    them); one that fails returns a note, never an exception."""
    makers: list[tuple[str, str, Callable[..., FigureResult]]] = [
        ("latency", "Latency distribution per scenario", latency_distribution),
        ("throughput_vs_batch", "Throughput versus batch size", throughput_vs_batch),
        ("throughput_vs_threads", "Throughput versus threads", throughput_vs_threads),
        ("memory", "Memory over time per scenario", memory_over_time),
        ("latency_vs_memory", "Latency versus peak memory", latency_vs_memory),
    ]
    if fidelity_measured:
        makers.append(("latency_vs_fidelity", "Latency versus fidelity", latency_vs_fidelity))
    makers.append(("load_time", "Load time by loading mode", load_time))
    makers.append(("cold_start_vs_steady", "Cold start versus steady-state latency", cold_start_vs_steady))
    # Colors and markers of names outside the fixed tables, assigned here, in one order: figures
    # drawn in different processes would each assign them in the order they meet them.
    for precision in sorted(frame["precision"].dropna().unique()):
        _color(PRECISION_COLORS, precision)
    for load in sorted(frame["load"].dropna().unique()):
        _color(LOAD_COLORS, load)
        _marker(load)
    return {key: functools.partial(_draw_one, key, title, maker, runs, frame, fig_dir) for key, title, maker in makers}


def _draw_one(
    key: str,
    title: str,
    maker: Callable[..., FigureResult],
    runs: Sequence[RunFolder],
    frame: pd.DataFrame,
    fig_dir: Path,
) -> FigureResult:
    with matplotlib.rc_context(STYLE):
        try:
            return maker(runs, frame, fig_dir)
        except Exception as exc:  # a report with a figure missing beats no report
            return FigureResult(key, title, "", notes=[f"Not drawn: {type(exc).__name__}: {exc} (a bug in bench)"])
