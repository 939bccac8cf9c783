"""The report's profiling sections, as data both renderers show: operator profiles and memory by phase.

- `profile_sections`: per row with a profile (`profile: true`), its status, the facts
  (profiled calls, the self-time check, FLOPs and GFLOP/s), links to its trace and op
  table, and its top operators as formatted cells (profile/<scenario>/ops.csv).
- `memory_phase_frame`: per ok row, the peak RSS of each phase of the timed worker (the
  kernel's VmHWM, reset between phases; the sampled RSS where it is missing), the phase
  that holds the peak, and, for profiled rows, what torch's CPU allocator had live in the
  profiling process (bench.profile.profiler's allocation events).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.format.units import MIB, ms_fixed
from bench.profile.folder import FLOPS_NOTE, TOP_OPS, read_ops
from bench.report.tables import Column
from bench.results.runfolder import RunFolder, raw_file, rss_samples

OPS_HEADERS = ["op", "calls/call", "self ms/call", "self %", "total ms/call", "memory KiB/call", "input shapes"]
PROFILE_LINKS = (
    ("trace_json", "trace (ui.perfetto.dev, chrome://tracing)"),
    ("load_trace_json", "load trace"),
    ("ops_csv", "ops.csv"),
    ("memory_csv", "memory.csv"),
)
PROFILE_INTRO = (
    "Each profiled scenario ran a second time, in its own process after its timed run, under torch.profiler "
    "(ONNX Runtime: the session profiler); these times include profiler overhead and are not the timed "
    "figures. [outside operators] is time in a call but in no operator (Python, module dispatch). "
    f"Top {TOP_OPS} operators by self time, per call. {FLOPS_NOTE}"
)
WORKER_PHASES = ("load", "first_inference", "warmup", "steady")


@dataclass
class ProfileSection:
    """One profiled row, ready to render."""

    scenario_id: str
    run: str | None  # the run's label, when the report shows several runs
    status: str
    note: str | None
    facts: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, href relative to the report folder)
    ops_rows: list[list[str]] = field(default_factory=list)  # cells under OPS_HEADERS
    problem: str | None = None  # why there is no op table


def profile_sections(runs: list[RunFolder], out_dir: Path, *, top: int = TOP_OPS) -> list[ProfileSection]:
    """A section per row that has a profile, in run then row order; [] when no row was profiled."""
    sections = []
    for run in runs:
        for record in run.records:
            figures = getattr(record, "profile", None)
            if figures is None:
                continue
            section = ProfileSection(
                record.scenario_id, run.label if len(runs) > 1 else None, str(figures.status), figures.note
            )
            sections.append(section)
            if figures.status == "ok":
                section.facts = _facts(figures)
                section.links, section.ops_rows, section.problem = _files(run, record, figures, out_dir, top)
    return sections


def _facts(figures: Any) -> list[str]:
    median = ms_fixed(figures.median_latency_s, "n/a")
    facts = [f"{figures.iterations} profiled calls, median {median} under the profiler"]
    if getattr(figures, "profiler_overhead", None):
        facts[0] += f" ({figures.profiler_overhead:.2f}x a call without it)"
    if figures.explained_ratio is not None:
        facts.append(
            f"self time explains {100 * figures.explained_ratio:.0f}% of a call "
            f"(operators alone {100 * (figures.ops_only_ratio or 0):.0f}%)"
        )
    if figures.achieved_gflops is not None:
        peak = ""
        if figures.percent_of_peak:
            peak = f", {figures.percent_of_peak:.1f}% of this CPU's matmul peak ({figures.peak_gflops:.1f} GFLOP/s)"
        rate = f"{figures.achieved_gflops:.2f} GFLOP/s at the timed median"
        facts.append(f"{figures.flops:,} FLOPs per call, {rate}{peak}")
    intensity = getattr(figures, "arithmetic_intensity", None)
    if intensity is not None:
        mib = figures.bytes_per_call / 2**20
        moved = f"{intensity:.3g} FLOP per byte moved ({mib:.3g} MiB a call: weights, inputs, outputs)"
        bound = f": {figures.bound}-bound (the ridge is peak / bandwidth)" if figures.bound else ""
        floor = f"; at the memory bandwidth a call takes at least {ms_fixed(figures.memory_floor_s, 'n/a')}"
        facts.append(moved + bound + (floor if figures.memory_floor_s else ""))
    return facts


def _files(
    run: RunFolder, record: Any, figures: Any, out_dir: Path, top: int
) -> tuple[list[tuple[str, str]], list[list[str]], str | None]:
    links = []
    for key, label in PROFILE_LINKS:
        path, _ = raw_file(run.path, record.files, key, "") if record.files.get(key) else (None, None)
        if path is not None:
            links.append((label, Path(os.path.relpath(path, out_dir.resolve())).as_posix()))
    path, why = raw_file(run.path, record.files, "ops_csv", f"profile/{record.scenario_id}/ops.csv")
    if path is None:
        return links, [], why
    try:
        table = read_ops(path).head(top)
    except Exception as exc:  # a broken CSV is a note in the report, never a traceback
        return links, [], f"ops.csv could not be read ({type(exc).__name__}: {exc})"
    calls = max(figures.iterations or 1, 1)
    rows = [
        [
            str(r.op),
            f"{r.calls_per_iter:g}",
            f"{r.self_cpu_per_iter_s * 1e3:.4f}",
            f"{r.self_cpu_pct:.1f}",
            f"{r.total_cpu_s / calls * 1e3:.4f}",
            f"{r.cpu_memory_bytes / calls / 1024:.1f}",
            str(r.input_shapes)[:120],
        ]
        for r in table.itertuples()
    ]
    return links, rows, None


# --- memory by phase --------------------------------------------------------------------------------

MEMORY_PHASE_COLUMNS = [
    Column("scenario_id", "scenario", digits="text"),
    Column("before_load_mib", "before load", "MiB"),
    *(Column(f"{phase}_mib", phase.replace("_", " "), "MiB") for phase in WORKER_PHASES),
    Column("peak_phase", "peak in", digits="text"),
    Column("first_call_kept_mib", "kept by 1st call", "MiB"),
    Column("released_mib", "freed by del + gc", "MiB"),
    Column("trimmed_mib", "then by malloc_trim", "MiB"),
    Column("source", "peaks from", digits="text"),
]
ALLOCATION_COLUMNS = [
    Column("torch_load_mib", "torch live: load", "MiB"),
    Column("torch_first_inference_mib", "torch live: 1st call", "MiB"),
    Column("torch_steady_mib", "torch live: steady", "MiB"),
    Column("torch_per_call_kib", "torch per call", "KiB"),
]
MEMORY_PHASE_CAPTION = (
    "Peak resident memory of the timed worker in each phase: the kernel's high-water mark (VmHWM), reset "
    "between phases, or the parent's RSS samples where the kernel figure is missing (peaks from: sampled). "
    "Before load is the interpreter and torch, reported, never subtracted. Peak in: the phase with the "
    "highest peak. Kept by 1st call: RSS after the first inference minus RSS after load (lazy initialisation, "
    "weight prepacking, caches). Freed by del + gc: what RSS gave back when the worker dropped the model at the "
    "end; then by malloc_trim: what returning the C heap's free memory to the kernel gave back on top (glibc)."
)
ALLOCATION_CAPTION = (
    "Torch columns (profiled rows only): the live bytes torch's CPU allocator had handed out in the separate "
    "profiling process, counted from the start of load (its allocation events, memory.csv): the peak during "
    "load, during the first call and over the profiled calls; per call: the median over profiled calls of a "
    "call's peak above the level it began at (its working memory). Allocations outside torch's allocator "
    "(the interpreter, libraries, onnxruntime) are not in them."
)


def memory_phase_frame(runs: list[RunFolder]) -> pd.DataFrame:
    """One row per ok row of every run: peak RSS per worker phase, where the peak is, torch's allocations."""
    rows = []
    for run in runs:
        for record in run.records:
            if record.status != "ok":
                continue
            rows.append({"run_id": run.label, "scenario_id": record.scenario_id, **_phase_peaks(run, record)})
    columns = ["run_id"] + [c.key for c in MEMORY_PHASE_COLUMNS + ALLOCATION_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def _phase_peaks(run: RunFolder, record: Any) -> dict[str, Any]:
    kernel = record.peak_rss_kernel_phase_bytes
    peaks: dict[str, float] = {}
    sources = set()
    samples = None
    for phase in WORKER_PHASES:
        value = getattr(kernel, phase, None) if kernel is not None else None
        if value is not None:
            peaks[phase] = value
            sources.add("kernel")
            continue
        if samples is None:
            samples, _ = rss_samples(run.path, record.files, record.scenario_id)
        in_phase = samples.loc[samples["phase"].eq(phase), "rss_bytes"] if samples is not None else pd.Series()
        if not in_phase.empty:
            peaks[phase] = float(in_phase.max())
            sources.add("sampled")
    rss = record.rss_bytes
    kept = None
    if rss is not None and rss.after_first_inference is not None and rss.after_load is not None:
        kept = (rss.after_first_inference - rss.after_load) / MIB
    profile = getattr(record, "profile", None)

    def freed(before: int | None, after: int | None) -> float:
        return math.nan if before is None or after is None else (before - after) / MIB

    def allocated(name: str, unit: int = MIB) -> float:
        value = getattr(profile, name, None) if profile is not None else None
        return math.nan if value is None else value / unit

    return {
        "before_load_mib": math.nan if rss is None or rss.before_load is None else rss.before_load / MIB,
        **{f"{phase}_mib": peaks[phase] / MIB if phase in peaks else math.nan for phase in WORKER_PHASES},
        "peak_phase": max(peaks, key=peaks.__getitem__).replace("_", " ") if peaks else "",
        "first_call_kept_mib": math.nan if kept is None else kept,
        "released_mib": freed(getattr(rss, "before_release", None), getattr(rss, "after_release", None)),
        "trimmed_mib": freed(getattr(rss, "after_release", None), getattr(rss, "after_malloc_trim", None)),
        "source": " + ".join(sorted(sources)),
        "torch_load_mib": allocated("allocated_load_bytes"),
        "torch_first_inference_mib": allocated("allocated_first_inference_bytes"),
        "torch_steady_mib": allocated("allocated_steady_bytes"),
        "torch_per_call_kib": allocated("allocated_per_call_bytes", 1024),
    }


def memory_phase_caption(columns: list[Column]) -> str:
    return MEMORY_PHASE_CAPTION + (f" {ALLOCATION_CAPTION}" if ALLOCATION_COLUMNS[0] in columns else "")


def memory_phase_columns(frame: pd.DataFrame) -> list[Column]:
    """The columns to show: the torch ones only when some row has them."""
    has_allocations = not frame.empty and frame[[c.key for c in ALLOCATION_COLUMNS]].notna().any().any()
    return MEMORY_PHASE_COLUMNS + (ALLOCATION_COLUMNS if has_allocations else [])
