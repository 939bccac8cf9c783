"""Per-operator profiles: where a scenario's time (and memory) goes, run apart from the timed run.

`profile_scenario` runs the scenario a second time, in a process of its own (`python -m
bench.profile.profiler SPEC` through bench.measure.child.launch: forked from the run's zygote when there is
one, else fresh), so the timed run never carries profiler overhead. The
model is built and loaded exactly as the timed worker does it (`runtimes.load_model`,
`runtimes.make_batch`), with the same thread settings, under `torch.inference_mode()`.

- torch load modes (eager, mmap, torchscript; any precision): torch.profiler with CPU
  activity, record_shapes and profile_memory over `iterations` calls after `warmup`
  calls without it (whose median gives `profiler_overhead`); load and the first call
  run under a memory-only profiler session of their own, so that torch's allocation
  events of every phase are kept (memory.csv). Each call is wrapped in a
  `bench::iteration` range; the range's own self time is the time spent *outside every
  operator* (Python, nn.Module dispatch and the profiler's own bookkeeping between ops)
  and is kept in the table as the row `[outside operators]`, so that the table accounts
  for the whole call.
- onnxruntime: the session's own profiler (SessionOptions.enable_profiling); its JSON
  is the trace, and `Node` kernel events summed by `op_name` make the table. The
  session's own time outside its kernels is the row `[session overhead]`.

Files written into `out_dir`: `spec.json` (a ProfileSpec), `ops.csv` (OPS_COLUMNS), `trace.json` (Chrome/Perfetto
trace: opens in ui.perfetto.dev or chrome://tracing), torch only: `load_trace.json` (load
and the first call) and `memory.csv` (MEMORY_COLUMNS), `profile.json` (the summary, with
the child's pid and time.monotonic() at its start, around the profiled calls and at its
end: one clock with the timed worker's events) and the child's `stdout.log` /
`stderr.log`. The summary also counts, on the loaded module, the bytes a call moves at least
(`weight_bytes`, `io_bytes_per_call`; torch only), which `profile_for_run` turns into the row's
place under the roofline (bench.profile.roofline). profile.json is a ProfileSummary
(bench.measure.contract: the parent reads it back as that dataclass, and a field it does not
know fails the read). A profiler that cannot run (a runtime
that is missing, an unsupported scenario, a crash, a timeout) gives a ProfileResult whose status is `unsupported` or
`failed` with a note; `profile_scenario` never raises for it.

"Does the profile explain the time?": `explained_ratio` is the median over iterations
of (self CPU time of everything recorded on the calling thread during that iteration,
`[outside operators]` included) divided by the median wall time of an iteration,
both measured under the profiler. Self time is wall time of each op on the thread
that ran it, so on the calling thread it adds up to that thread's wall time whatever
`threads` is: intra-op pool threads work *inside* an op that the calling thread waits
for, and are not added again. Events recorded on other threads are reported apart
(`other_threads_self_s`). `ops_only_ratio` is the same without `[outside operators]`:
how much of the call the operators alone explain. Medians, because on a shared machine
a few slow iterations move a mean a lot; the mean-based figure (total self time of the
calling thread / iterations / median wall) is `explained_ratio_mean_based`.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import runtimes
from bench.checks import generation, hygiene
from bench.measure import contract
from bench.models import catalog as models
from bench.models import sources
from bench.profile import roofline
from bench.profile.folder import (
    ALLOCATION_FIELDS,
    MEMORY_COLUMNS,
    MEMORY_CSV,
    MEMORY_PHASES,
    OPS_COLUMNS,
    PROFILE_SUMMARY,
    TOP_OPS,
    read_ops,
)
from bench.suite.scenarios import Scenario

if TYPE_CHECKING:
    from bench.measure.zygote import ZygoteWorkers
from bench.measure.child import Child, ChildFiles, child_env, describe_exit, die_with_parent, launch
from bench.profile.probe import ProbeFailed, keep, read_cached, run_probe

DEFAULT_ITERATIONS = 50
DEFAULT_WARMUP = 5
MIN_ITERATIONS = 3
PEAK_DTYPES = ("fp32", "bf16", "fp16")
ITERATION_RANGE = "bench::iteration"
OUTSIDE_OPS = "[outside operators]"
SESSION_OVERHEAD = "[session overhead]"
PSEUDO_OPS = (OUTSIDE_OPS, SESSION_OVERHEAD)
LOAD_RANGE = "bench::load"
FIRST_CALL_RANGE = "bench::first_inference"
# Ops that exist to change representation: quantize / dequantize / dtype conversion / copies.
CONVERSION_OP = re.compile(
    r"quantiz|dequant|_to_copy|aten::to$|copy_|convert|^Cast$|DynamicQuantize|Integer|_dynamic|fbgemm|qlinear",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ProfileSpec:
    """parent → profile child (spec.json)."""

    scenario: dict[str, Any]  # Scenario.to_dict()
    artifact_path: str
    out_dir: str
    iterations: int
    warmup: int
    max_time_s: float | None


@dataclass(frozen=True)
class TopOp:
    op: str
    calls_per_iter: float
    self_cpu_per_iter_s: float
    self_cpu_pct: float
    input_shapes: str


@dataclass
class ProfileSummary:
    """profile child → parent (profile.json): the outcome and the figures of one profile.

    `*_monotonic_s` are time.monotonic(), one clock with the timed worker's events. Figures
    are None where the runtime has none (onnxruntime: no allocation events, torch: no session
    overhead) or where the profile did not get that far."""

    pid: int  # the profiling process
    started_monotonic_s: float
    status: str = "failed"  # ok, unsupported or failed
    phase: str = "startup"  # the phase reached: a failure's phase
    note: str | None = None  # why not ok
    traceback: str | None = None
    ended_monotonic_s: float | None = None
    scenario_id: str | None = None
    runtime: str | None = None  # torch or onnxruntime: whose profiler
    max_time_s: float | None = None
    compile_cache: str | None = None  # load compile: cold or warm
    load_started_monotonic_s: float | None = None
    iterations: int | None = None  # profiled calls
    warmup: int | None = None
    threads: int | None = None
    profiled_median_s: float | None = None
    profiled_mean_s: float | None = None
    self_cpu_total_s: float | None = None
    self_cpu_per_iter_s: float | None = None
    top_ops: list[TopOp] = field(default_factory=list)
    calling_thread_self_per_iter_s: float | None = None
    outside_operators_per_iter_s: float | None = None  # torch
    other_threads_self_s: float | None = None  # torch
    session_overhead_per_iter_s: float | None = None  # onnxruntime
    explained_ratio: float | None = None
    ops_only_ratio: float | None = None
    explained_ratio_mean_based: float | None = None
    torch_num_threads: int | None = None
    ort_graph_optimization_level: str | None = None
    trace_format: str | None = None
    unprofiled_median_s: float | None = None  # torch: the warmup calls, without the profiler
    profiler_overhead: float | None = None
    profiled_from_monotonic_s: float | None = None
    profiled_to_monotonic_s: float | None = None
    allocated_load_bytes: int | None = None
    allocated_first_inference_bytes: int | None = None
    allocated_steady_bytes: int | None = None
    allocated_per_call_bytes: int | None = None
    weight_bytes: int | None = None  # torch: the loaded module's weights in their stored dtype (the roofline)
    io_bytes_per_call: int | None = None  # torch: the batch's tensors + the first call's outputs

    def add(self, figures: dict[str, Any]) -> None:
        """Figures computed as a dict (bench.measure.contract.build: a key without a field fails)."""
        merged = contract.build(ProfileSummary, {**dataclasses.asdict(self), **figures}, "profile summary")
        self.__dict__.update(merged.__dict__)


@dataclass
class ProfileResult:
    """What `profile_scenario` produced. Paths are absolute; missing files are None."""

    scenario_id: str
    status: str  # ok, unsupported or failed
    note: str | None = None  # why not ok, or a caveat
    out_dir: Path | None = None
    ops_csv: Path | None = None
    trace_json: Path | None = None
    summary: ProfileSummary | None = None  # None when the child wrote none

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def record_fields(self) -> dict[str, Any]:
        """The few figures a ResultRecord keeps (see the proposed `profile` record field)."""
        s = self.summary
        top = s.top_ops[0] if s is not None and s.top_ops else None
        return {
            "status": self.status,
            "note": self.note,
            "runtime": s.runtime if s else None,
            "iterations": s.iterations if s else None,
            "median_latency_s": s.profiled_median_s if s else None,
            "self_cpu_median_per_iter_s": s.calling_thread_self_per_iter_s if s else None,
            "explained_ratio": s.explained_ratio if s else None,
            "ops_only_ratio": s.ops_only_ratio if s else None,
            "top_op": top.op if top else None,
            "top_op_pct": top.self_cpu_pct if top else None,
            "profiler_overhead": s.profiler_overhead if s else None,
            **{key: getattr(s, key) if s else None for key in ALLOCATION_FIELDS},
        }


# ---------------------------------------------------------------- the parent side


def profile_scenario(
    scenario: Scenario,
    artifact_path: Path | str,
    out_dir: Path | str,
    iterations: int = DEFAULT_ITERATIONS,
    *,
    warmup: int = DEFAULT_WARMUP,
    max_time_s: float | None = None,
    timeout_s: float | None = None,
    extra_env: dict[str, str] | None = None,
    workers: ZygoteWorkers | None = None,
) -> ProfileResult:
    """Profile `scenario` in a process of its own (forked from `workers`' zygote when there is one, else
    fresh); write ops.csv, trace.json, profile.json into out_dir.

    `iterations` profiled calls follow `warmup` untimed ones; with `max_time_s`, profiling stops
    after the call that passes that many seconds (at least MIN_ITERATIONS calls), and the summary's
    `iterations` says how many ran. `timeout_s` (default: the scenario's timeout_s) kills the child.
    Never raises for a profiler that cannot run: the result says why (status and note).
    """
    out_dir = Path(out_dir)
    try:
        reason = runtimes.unsupported_reason(scenario)
        if reason is None and runtimes.runtime_for(scenario).profiler is None:
            reason = runtimes.runtime_for(scenario).no_profiler
        if reason is None and not hygiene.is_default(scenario):
            reason = "profiles run the model in eval() under inference_mode only (grad_mode, module_mode)"
        if reason is not None:
            return ProfileResult(scenario.id, "unsupported", f"not profiled: {reason}", out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("ops.csv", "trace.json", PROFILE_SUMMARY, MEMORY_CSV, "load_trace.json"):
            (out_dir / name).unlink(missing_ok=True)
        files = ChildFiles.in_folder(out_dir)
        spec = ProfileSpec(
            scenario.to_dict(), str(artifact_path), str(out_dir), int(iterations), int(warmup), max_time_s
        )
        contract.write(files.spec, spec)
        limit_s = timeout_s if timeout_s is not None else scenario.timeout_s
        env = child_env(scenario.threads, extra_env or {})
        child = launch("bench.profile.profiler", [str(files.spec)], env, files, workers)
        try:
            if child.wait(limit_s) is None:
                note = f"the profile ran past {limit_s:g} s and was killed"
                return ProfileResult(scenario.id, "failed", note, out_dir)
        finally:
            child.end()  # killed if it still runs
        return _read_result(scenario.id, out_dir, child)
    except Exception as exc:  # the profile is an extra: it must never take the run down
        return ProfileResult(scenario.id, "failed", f"profiling failed: {type(exc).__name__}: {exc}", out_dir)


def _read_result(scenario_id: str, out_dir: Path, child: Child) -> ProfileResult:
    summary_path = out_dir / PROFILE_SUMMARY
    if not summary_path.exists():
        tail = child.tail()
        note = f"the profiling process ended ({describe_exit(child.returncode or 0)}) without a result"
        return ProfileResult(scenario_id, "failed", f"{note}; last output:\n{tail}" if tail else note, out_dir)
    summary = contract.read(ProfileSummary, summary_path)
    ops_csv, trace_json = out_dir / "ops.csv", out_dir / "trace.json"
    return ProfileResult(
        scenario_id,
        summary.status,
        summary.note,
        out_dir,
        ops_csv if ops_csv.exists() else None,
        trace_json if trace_json.exists() else None,
        summary,
    )


# ---------------------------------------------------------------- the child side


def _child_main(spec_path: str) -> int:
    die_with_parent()
    # time.monotonic() is one clock for every process on Linux: the runner's worker events use it too.
    summary = ProfileSummary(pid=os.getpid(), started_monotonic_s=time.monotonic())
    spec = contract.read(ProfileSpec, Path(spec_path))
    out_dir = Path(spec.out_dir)
    try:
        scenario = Scenario.from_dict(spec.scenario)
        summary.scenario_id = scenario.id
        summary.runtime = runtimes.runtime_for(scenario).profiler
        missing = _missing_profiler(summary.runtime)
        if missing:
            summary.status, summary.note = "unsupported", missing
        else:
            _profile_here(scenario, Path(spec.artifact_path), out_dir, spec, summary)
            summary.status = "ok"
    except Exception as exc:
        summary.status = "unsupported" if isinstance(exc, runtimes.Unsupported) else "failed"
        summary.note = f"{type(exc).__name__} during {summary.phase}: {exc}"
        summary.traceback = traceback.format_exc()
    summary.ended_monotonic_s = time.monotonic()
    contract.write(out_dir / PROFILE_SUMMARY, summary)
    return 0


def _missing_profiler(runtime: str) -> str | None:
    """A note when this runtime's profiler cannot be imported here (e.g. a runtime extra not installed)."""
    module = "onnxruntime" if runtime == "onnxruntime" else "torch.profiler"
    try:
        __import__(module)
    except Exception as exc:
        return f"no profiler for runtime '{runtime}': importing {module} failed ({type(exc).__name__}: {exc})"
    return None


def _profile_here(
    scenario: Scenario, artifact_path: Path, out_dir: Path, spec: ProfileSpec, summary: ProfileSummary
) -> None:
    import torch

    torch.set_num_threads(scenario.threads)
    torch.set_num_interop_threads(scenario.interop_threads)
    iterations, warmup = max(1, spec.iterations), max(0, spec.warmup)
    summary.max_time_s = spec.max_time_s
    batch = runtimes.make_batch(scenario)
    runtime = runtimes.runtime_for(scenario)
    with contextlib.ExitStack() as stack:
        facts, cleanup = runtime.set_up_process(scenario, artifact_path)  # compile: the timed worker's Inductor cache
        stack.callback(cleanup)
        summary.add(facts)
        summary.phase = "load"
        stack.enter_context(torch.inference_mode())
        if runtime.profiler == "onnxruntime":
            summary.add(_profile_onnxruntime(scenario, artifact_path, out_dir, batch, iterations, warmup, summary))
            return
        infer, memory = _load_and_first_call(scenario, artifact_path, batch, out_dir, summary)
        summary.add(_profile_torch(infer, batch, out_dir, iterations, warmup, scenario, summary, memory))


def _load_and_first_call(
    scenario: Scenario, artifact_path: Path, batch: Any, out_dir: Path, summary: ProfileSummary
) -> tuple[Any, list[dict[str, Any]]]:
    """Load and make the first call under a memory-only profiler (load_trace.json): their allocation events."""
    from torch.profiler import ProfilerActivity, profile, record_function

    starts_s = []
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        starts_s.append(time.monotonic())
        summary.load_started_monotonic_s = starts_s[0]
        with record_function(LOAD_RANGE):
            infer, _ = runtimes.load_model(scenario, artifact_path)
        summary.phase = "first_inference"
        starts_s.append(time.monotonic())
        with record_function(FIRST_CALL_RANGE):
            output = infer(batch)
    module = getattr(infer, "module", infer)  # a model fed named inputs is wrapped (inputs.KeywordCall)
    summary.weight_bytes = generation.weight_bytes(module) if hasattr(module, "state_dict") else None
    summary.io_bytes_per_call = generation.tensor_bytes(batch) + generation.tensor_bytes(output)
    del output
    prof.export_chrome_trace(str(out_dir / "load_trace.json"))
    trace = json.loads((out_dir / "load_trace.json").read_text(encoding="utf-8"))["traceEvents"]
    ranges = {LOAD_RANGE: "load", FIRST_CALL_RANGE: "first_inference"}
    return infer, _allocation_events(trace, ranges, starts_s)


def _allocation_events(trace: list[dict[str, Any]], ranges: dict[str, str], starts_s: list[float]) -> list[dict]:
    """The trace's `[memory]` events inside the named ranges: {t_s, phase, call, bytes, allocated_bytes}.

    Trace timestamps are not comparable between profiler sessions, so each range is placed on
    the monotonic clock by `starts_s` (time.monotonic() taken as each range began, in order).
    `allocated_bytes` is torch's running count of live bytes among the CPU allocations made
    while a profiler recorded memory; frees of other allocations are not counted.
    """
    spans = sorted(
        (e["ts"], e["ts"] + e.get("dur", 0), ranges[e["name"]])
        for e in trace
        if e.get("ph") == "X" and e.get("name") in ranges
    )
    begins = [span[0] for span in spans]
    calls: dict[str, int] = {}
    numbered = []
    for span in spans:
        calls[span[2]] = calls.get(span[2], -1) + 1
        numbered.append(calls[span[2]])
    events = []
    for event in trace:
        if event.get("name") != "[memory]":
            continue
        i = bisect.bisect_right(begins, event["ts"]) - 1
        if i < 0 or event["ts"] > spans[i][1] or i >= len(starts_s):
            continue  # outside every range: the profiler's own start and stop
        args = event.get("args", {})
        events.append(
            {
                "t_s": starts_s[i] + (event["ts"] - spans[i][0]) / 1e6,
                "phase": spans[i][2],
                "call": numbered[i] if spans[i][2] == "steady" else None,
                "bytes": int(args.get("Bytes", 0)),
                "allocated_bytes": int(args.get("Total Allocated", 0)),
            }
        )
    return events


def _profile_torch(
    infer: Any,
    batch: Any,
    out_dir: Path,
    iterations: int,
    warmup: int,
    scenario: Scenario,
    summary: ProfileSummary,
    memory: list[dict[str, Any]],
) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    summary.phase = "warmup"
    warm_s = _warm_up(infer, batch, warmup, summary.max_time_s)
    summary.phase = "profile"
    walls_s: list[float] = []
    call_starts_s: list[float] = []
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True) as prof:
        for _ in _iterations(iterations, summary.max_time_s):
            call_starts_s.append(time.monotonic())
            with record_function(ITERATION_RANGE):
                started = time.perf_counter()
                infer(batch)
                walls_s.append(time.perf_counter() - started)
    profiled_to_s = time.monotonic()
    iterations = len(walls_s)
    summary.phase = "export"
    prof.export_chrome_trace(str(out_dir / "trace.json"))
    trace = json.loads((out_dir / "trace.json").read_text(encoding="utf-8"))["traceEvents"]
    memory = memory + _allocation_events(trace, {ITERATION_RANGE: "steady"}, call_starts_s)
    assert summary.load_started_monotonic_s is not None  # _load_and_first_call set it
    _write_memory_csv(memory, out_dir / MEMORY_CSV, summary.load_started_monotonic_s)

    # Per iteration: self time of everything on the calling thread inside the iteration's range.
    events = list(prof.events())
    ranges = sorted((e for e in events if e.name == ITERATION_RANGE), key=lambda e: e.time_range.start)
    main_thread = ranges[0].thread if ranges else None
    starts = [r.time_range.start for r in ranges]
    per_iter_us = [0.0] * len(ranges)
    outside_us = [r.self_cpu_time_total for r in ranges]
    other_threads_us = 0.0
    for event in events:
        if event.thread != main_thread:
            other_threads_us += event.self_cpu_time_total
            continue
        i = bisect.bisect_right(starts, event.time_range.start) - 1
        if i >= 0 and event.time_range.start <= ranges[i].time_range.end:
            per_iter_us[i] += event.self_cpu_time_total

    rows = []
    shapes = _shapes_by_op(prof.key_averages(group_by_input_shape=True))
    for avg in prof.key_averages(group_by_input_shape=False):
        name = OUTSIDE_OPS if avg.key == ITERATION_RANGE else avg.key
        rows.append(
            {
                "op": name,
                "calls": avg.count,
                "self_cpu_s": avg.self_cpu_time_total / 1e6,
                "total_cpu_s": avg.cpu_time_total / 1e6,
                "cpu_memory_bytes": avg.self_cpu_memory_usage,
                "input_shapes": "" if name == OUTSIDE_OPS else shapes.get(avg.key, ""),
            }
        )
    table = _write_ops_csv(rows, out_dir / "ops.csv", iterations)
    median_s = statistics.median(walls_s)
    main_total_s = sum(per_iter_us) / 1e6
    per_iter_s = [u / 1e6 for u in per_iter_us]
    ops_only_s = [(u - o) / 1e6 for u, o in zip(per_iter_us, outside_us, strict=True)]
    return {
        **_common_summary(table, iterations, warmup, walls_s, scenario),
        "calling_thread_self_per_iter_s": statistics.median(per_iter_s),
        "outside_operators_per_iter_s": statistics.median(outside_us) / 1e6,
        "other_threads_self_s": other_threads_us / 1e6,
        "explained_ratio": statistics.median(per_iter_s) / median_s,
        "ops_only_ratio": statistics.median(ops_only_s) / median_s,
        "explained_ratio_mean_based": main_total_s / iterations / median_s,
        "torch_num_threads": torch.get_num_threads(),
        "trace_format": "chrome trace (torch.profiler export_chrome_trace): {'traceEvents': [...]}",
        # The same calls without the profiler, just before it: what profiling costs a call (~1 = little).
        "unprofiled_median_s": statistics.median(warm_s) if warm_s else None,
        "profiler_overhead": median_s / statistics.median(warm_s) if warm_s else None,
        "profiled_from_monotonic_s": call_starts_s[0],
        "profiled_to_monotonic_s": profiled_to_s,
        **allocation_figures(memory, iterations),
    }


def _write_memory_csv(events: list[dict[str, Any]], path: Path, origin_s: float) -> None:
    """memory.csv (MEMORY_COLUMNS), t_s counted from `origin_s` (the start of load in this process)."""
    import pandas as pd

    table = pd.DataFrame(events, columns=MEMORY_COLUMNS)
    table["t_s"] = table["t_s"] - origin_s
    table["call"] = table["call"].astype("Int64")
    table.to_csv(path, index=False, float_format="%.6f")


def allocation_figures(events: list[dict[str, Any]], calls: int) -> dict[str, int | None]:
    """Peak live bytes torch had allocated in each phase, and the median transient peak of a profiled call.

    `events` are memory.csv's rows in time order. A phase's peak is its highest live level,
    counting the level it began at (so a phase that allocated nothing keeps the level before
    it); a call's transient peak is its highest level above the level it began at (0 for a
    call that allocated nothing). All None when there is no event at all (e.g. onnxruntime).
    """
    if not events:
        return dict.fromkeys(ALLOCATION_FIELDS)
    figures: dict[str, int | None] = {}
    level = 0
    for phase in MEMORY_PHASES:
        peak = level
        for event in (e for e in events if e["phase"] == phase):
            level = event["allocated_bytes"]
            peak = max(peak, level)
        figures[f"allocated_{phase}_bytes"] = peak
    per_call: dict[int, tuple[int, int]] = {}  # call -> (level at its start, its peak)
    for event in events:
        if event["call"] is not None:
            start, peak = per_call.get(event["call"], (event["allocated_bytes"] - event["bytes"],) * 2)
            per_call[event["call"]] = (start, max(peak, event["allocated_bytes"]))
    transient = [peak - start for start, peak in per_call.values()] + [0] * max(0, calls - len(per_call))
    figures["allocated_per_call_bytes"] = int(statistics.median(transient)) if transient else None
    return figures


def _warm_up(infer: Any, batch: Any, calls: int, max_time_s: float | None) -> list[float]:
    """Up to `calls` calls (fewer once max_time_s has passed); each call's wall time."""
    walls_s: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        infer(batch)
        walls_s.append(time.perf_counter() - started)
        if max_time_s is not None and sum(walls_s) > max_time_s:
            break
    return walls_s


def _iterations(count: int, max_time_s: float | None) -> Any:
    """0, 1, ... count-1, stopping early once max_time_s has passed (after MIN_ITERATIONS at least)."""
    started = time.perf_counter()
    for i in range(count):
        if i >= MIN_ITERATIONS and max_time_s is not None and time.perf_counter() - started > max_time_s:
            return
        yield i


def _shapes_by_op(averages: Any) -> dict[str, str]:
    """Per op, its input shapes with the most self time first (up to 3 sets)."""
    by_op: dict[str, list[tuple[float, str]]] = {}
    for avg in averages:
        by_op.setdefault(avg.key, []).append((avg.self_cpu_time_total, json.dumps(avg.input_shapes)))
    return {
        op: " | ".join(shape for _, shape in sorted(entries, key=lambda e: -e[0])[:3]) for op, entries in by_op.items()
    }


def _profile_onnxruntime(
    scenario: Scenario,
    artifact_path: Path,
    out_dir: Path,
    batch: Any,
    iterations: int,
    warmup: int,
    summary: ProfileSummary,
) -> dict[str, Any]:
    """The session is made by runtimes.load_model, with profiling switched on in its options."""
    import onnxruntime as ort

    sessions: list[Any] = []
    real_session = ort.InferenceSession

    def profiling_session(path: Any, options: Any = None, *args: Any, **kwargs: Any) -> Any:
        options = options or ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(out_dir / "ort_profile")
        session = real_session(path, options, *args, **kwargs)
        sessions.append(session)
        return session

    ort.InferenceSession = profiling_session  # this process only, and only while loading
    try:
        infer, facts = runtimes.load_model(scenario, artifact_path)
    finally:
        ort.InferenceSession = real_session
    summary.phase = "warmup"
    _warm_up(infer, batch, warmup, summary.max_time_s)
    summary.phase = "profile"
    walls_s: list[float] = []
    for _ in _iterations(iterations, summary.max_time_s):
        started = time.perf_counter()
        infer(batch)
        walls_s.append(time.perf_counter() - started)
    iterations = len(walls_s)
    summary.phase = "export"
    written = Path(sessions[0].end_profiling())
    trace_path = out_dir / "trace.json"
    shutil.move(str(written if written.is_absolute() else Path.cwd() / written), trace_path)
    events = json.loads(trace_path.read_text(encoding="utf-8"))

    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"]
    )[-iterations:]  # the last `iterations`: warmup excluded
    starts = [r["ts"] for r in runs]
    node_us = [0.0] * len(runs)
    ops: dict[str, dict[str, Any]] = {}
    shapes: dict[str, dict[str, float]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, event["ts"]) - 1
        if i < 0 or event["ts"] > runs[i]["ts"] + runs[i]["dur"]:
            continue  # session start-up or warmup
        args = event.get("args", {})
        op = args.get("op_name", event["name"])
        row = ops.setdefault(op, {"op": op, "calls": 0, "self_cpu_s": 0.0, "cpu_memory_bytes": 0})
        row["calls"] += 1
        row["self_cpu_s"] += event["dur"] / 1e6
        row["cpu_memory_bytes"] += int(args.get("output_size", 0) or 0)
        shape = json.dumps(args.get("input_type_shape", []))
        shapes.setdefault(op, {}).setdefault(shape, 0.0)
        shapes[op][shape] += event["dur"]
        node_us[i] += event["dur"]
    run_us = [r["dur"] for r in runs]
    overhead_us = sum(r - n for r, n in zip(run_us, node_us, strict=True))
    rows = []
    for op, row in ops.items():
        best = sorted(shapes[op].items(), key=lambda kv: -kv[1])[:3]
        rows.append({**row, "total_cpu_s": row["self_cpu_s"], "input_shapes": " | ".join(s for s, _ in best)})
    rows.append(
        {
            "op": SESSION_OVERHEAD,
            "calls": len(runs),
            "self_cpu_s": max(overhead_us, 0.0) / 1e6,
            "total_cpu_s": sum(run_us) / 1e6,
            "cpu_memory_bytes": 0,
            "input_shapes": "",
        }
    )
    table = _write_ops_csv(rows, out_dir / "ops.csv", iterations)
    median_s = statistics.median(walls_s)
    return {
        **_common_summary(table, iterations, warmup, walls_s, scenario),
        "calling_thread_self_per_iter_s": statistics.median(run_us) / 1e6,
        "session_overhead_per_iter_s": overhead_us / max(len(runs), 1) / 1e6,
        "explained_ratio": statistics.median(run_us) / 1e6 / median_s,
        "ops_only_ratio": statistics.median(node_us) / 1e6 / median_s,
        "explained_ratio_mean_based": sum(run_us) / 1e6 / iterations / median_s,
        "ort_graph_optimization_level": facts.get("ort_graph_optimization_level"),
        "trace_format": "onnxruntime session profile: a JSON list of events",
    }


def _write_ops_csv(rows: list[dict[str, Any]], path: Path, iterations: int) -> Any:
    import pandas as pd

    table = pd.DataFrame(rows)
    total = table["self_cpu_s"].sum()
    table["self_cpu_pct"] = 100.0 * table["self_cpu_s"] / total if total > 0 else 0.0
    table["self_cpu_per_iter_s"] = table["self_cpu_s"] / iterations
    table["calls_per_iter"] = table["calls"] / iterations
    table = table.sort_values("self_cpu_s", ascending=False, kind="stable")[OPS_COLUMNS].reset_index(drop=True)
    table.to_csv(path, index=False)
    return table


def _common_summary(table: Any, iterations: int, warmup: int, walls_s: list[float], scenario: Scenario) -> dict:
    top = table.head(TOP_OPS)
    return {
        "iterations": iterations,
        "warmup": warmup,
        "threads": scenario.threads,
        "profiled_median_s": statistics.median(walls_s),
        "profiled_mean_s": statistics.fmean(walls_s),
        "self_cpu_total_s": float(table["self_cpu_s"].sum()),
        "self_cpu_per_iter_s": float(table["self_cpu_s"].sum()) / iterations,
        "top_ops": [
            {
                "op": r.op,
                "calls_per_iter": float(r.calls_per_iter),
                "self_cpu_per_iter_s": float(r.self_cpu_per_iter_s),
                "self_cpu_pct": float(r.self_cpu_pct),
                "input_shapes": r.input_shapes,
            }
            for r in top.itertuples()
        ],
    }


# ---------------------------------------------------------------- comparing two profiles


def compare_ops(profile_a_csv: Path | str, profile_b_csv: Path | str, *, tolerance: float = 0.10) -> Any:
    """Op by op, self time per iteration in profile A (e.g. fp32) against B (e.g. int8_dynamic).

    Columns: op, self_per_iter_a_s, self_per_iter_b_s, ratio_b_over_a, delta_s (b - a),
    change (`faster`, `slower`, `same` within `tolerance`, `only_a`, `only_b`) and
    conversion (the op quantizes, dequantizes, converts dtype or copies: a precision's own
    cost). Sorted by |delta_s|, largest first. Pseudo-rows ([outside operators], ...) included.
    """
    a, b = read_ops(profile_a_csv), read_ops(profile_b_csv)
    merged = a[["op", "self_cpu_per_iter_s", "calls_per_iter"]].merge(
        b[["op", "self_cpu_per_iter_s", "calls_per_iter"]],
        on="op",
        how="outer",
        suffixes=("_a", "_b"),
        indicator=True,
    )
    merged = merged.rename(
        columns={"self_cpu_per_iter_s_a": "self_per_iter_a_s", "self_cpu_per_iter_s_b": "self_per_iter_b_s"}
    )
    a_s, b_s = merged["self_per_iter_a_s"], merged["self_per_iter_b_s"]
    merged["ratio_b_over_a"] = b_s / a_s.where(a_s > 0)
    merged["delta_s"] = b_s.fillna(0.0) - a_s.fillna(0.0)

    def change(row: Any) -> str:
        if row["_merge"] == "left_only":
            return "only_a"
        if row["_merge"] == "right_only":
            return "only_b"
        ratio = row["ratio_b_over_a"]
        if ratio != ratio:  # NaN: zero time in A
            return "same" if row["self_per_iter_b_s"] == 0 else "slower"
        return "faster" if ratio < 1 - tolerance else "slower" if ratio > 1 + tolerance else "same"

    merged["change"] = merged.apply(change, axis=1)
    merged["conversion"] = merged["op"].map(lambda op: bool(CONVERSION_OP.search(str(op))))
    merged = merged.drop(columns="_merge")
    order = merged["delta_s"].abs().sort_values(ascending=False, kind="stable").index
    columns = [
        "op",
        "self_per_iter_a_s",
        "self_per_iter_b_s",
        "ratio_b_over_a",
        "delta_s",
        "change",
        "conversion",
        "calls_per_iter_a",
        "calls_per_iter_b",
    ]
    return merged.loc[order, columns].reset_index(drop=True)


# ---------------------------------------------------------------- FLOPs


def flop_count(
    model_name: str, input_shape: tuple[int, ...] | list[int], batch_size: int, seed: int = 0, source: Any = None
) -> dict:
    """FLOPs of one call of the fp32 eager model, and the ops FlopCounterMode saw but has no formula for.

    {'flops': int | None, 'uncounted_ops': [...], 'note': str | None}. Runs in this process
    (no thread change); builds the model on the CPU with seeded random weights.
    """
    try:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import FlopCounterMode, flop_registry

        model = sources.build_module(model_name, source, seed)  # a compiled file has none: not counted
        batch = models.make_input(tuple(input_shape), batch_size, seed)
        counted = set(flop_registry)
        seen: set[str] = set()

        class _Seen(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket not in counted:
                    seen.add(str(func.overloadpacket))
                return func(*args, **(kwargs or {}))

        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), _Seen(), counter:  # _Seen is outside: it sees what the counter passes on
            model(batch)
        heavy = sorted(op for op in seen if re.search(r"attention|conv|mm|matmul|linear|einsum|quantized", op))
        return {"flops": int(counter.get_total_flops()), "uncounted_ops": heavy, "note": None}
    except Exception as exc:
        return {"flops": None, "uncounted_ops": [], "note": f"FLOPs not counted: {type(exc).__name__}: {exc}"}


@functools.lru_cache(maxsize=256)
def _flop_count_cached(model_name: str, input_shape: tuple[int, ...], batch_size: int, seed: int, source: Any) -> str:
    return json.dumps(flop_count(model_name, input_shape, batch_size, seed, source))


def count_flops(
    model_name: str, input_shape: tuple[int, ...] | list[int], batch_size: int, seed: int = 0, source: Any = None
) -> int | None:
    """FLOPs of one call (batch included) of the fp32 model; None when they cannot be counted. See FLOPS_NOTE."""
    return json.loads(_flop_count_cached(model_name, tuple(input_shape), batch_size, seed, source))["flops"]


def achieved_gflops(flops: int | None, median_latency_s: float | None) -> float | None:
    """GFLOP/s achieved by one call taking `median_latency_s`; None when either is unknown."""
    if not flops or not median_latency_s or median_latency_s <= 0:
        return None
    return flops / median_latency_s / 1e9


# ---------------------------------------------------------------- wiring: the runner and the CLI


def profile_for_run(
    scenario: Scenario,
    artifact_path: Path,
    run_dir: Path,
    file_stem: str,
    *,
    timed_median_s: float | None,
    cache_dir: Path,
    fingerprint: str | None,
    bandwidth_bytes_per_s: float | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    workers: ZygoteWorkers | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The profile of a scenario whose timed run has ended: (record.files entries, record.profile fields).

    Runs after the timed worker, in its own process (forked from `workers`' zygote when there is one),
    into run_dir/profile/<file_stem>/; the
    profile is bounded by the scenario's measure.max_time_s (warmup and profiled calls each)
    and timeout_s. FLOPs are counted on the fp32 eager model in this process (cached per
    model, shape and batch) and the peak is measured once per threads and dtype, cached in
    `cache_dir` by environment fingerprint. Never raises.
    """
    out_dir = run_dir / "profile" / file_stem
    result = profile_scenario(
        scenario,
        artifact_path,
        out_dir,
        iterations,
        max_time_s=scenario.measure.max_time_s,
        timeout_s=scenario.timeout_s,
        workers=workers,
    )
    files = {}
    for key, path in (
        ("ops_csv", result.ops_csv),
        ("trace_json", result.trace_json),
        ("profile_json", out_dir / PROFILE_SUMMARY),
        ("memory_csv", out_dir / MEMORY_CSV),
        ("load_trace_json", out_dir / "load_trace.json"),
    ):
        if path is not None and path.exists():
            files[key] = str(path.relative_to(run_dir))
    fields = result.record_fields()
    fields.update(flops_figures(scenario, timed_median_s, cache_dir=cache_dir, fingerprint=fingerprint))
    s = result.summary
    moved = s.weight_bytes + s.io_bytes_per_call if s and s.weight_bytes and s.io_bytes_per_call else None
    fields.update(roofline_figures(fields["flops"], moved, fields["peak_gflops"], bandwidth_bytes_per_s))
    return files, fields


def roofline_figures(
    flops: int | None, bytes_per_call: int | None, peak_gflops: float | None, bandwidth_bytes_per_s: float | None
) -> dict[str, Any]:
    """bytes_per_call, arithmetic_intensity, memory_floor_s and bound for one profiled row (None where unknown)."""
    intensity = flops / bytes_per_call if flops and bytes_per_call else None
    return {
        "bytes_per_call": bytes_per_call,
        "arithmetic_intensity": intensity,
        "memory_floor_s": roofline.floor_s(bytes_per_call, bandwidth_bytes_per_s),
        "bound": roofline.bound(intensity, peak_gflops, bandwidth_bytes_per_s),
    }


def flops_figures(
    scenario: Scenario, median_latency_s: float | None, *, cache_dir: Path | None, fingerprint: str | None
) -> dict[str, Any]:
    """flops, achieved_gflops, peak_gflops, percent_of_peak for one row (None where unknown)."""
    try:
        flops = count_flops(scenario.model, scenario.input_shape, scenario.batch_size, scenario.seed, scenario.source)
        achieved = achieved_gflops(flops, median_latency_s)
        peak = None
        if achieved is not None:
            dtype = scenario.precision if scenario.precision in PEAK_DTYPES else "fp32"
            peak = measure_peak_gflops(scenario.threads, dtype, cache_dir=cache_dir, fingerprint=fingerprint)["gflops"]
        return {
            "flops": flops,
            "achieved_gflops": achieved,
            "peak_gflops": peak,
            "percent_of_peak": percent_of_peak(achieved, peak),
        }
    except Exception:  # an extra figure: never the row's failure
        return {"flops": None, "achieved_gflops": None, "peak_gflops": None, "percent_of_peak": None}


def format_profile(result: ProfileResult, *, top: int = TOP_OPS) -> str:
    """A terminal summary: status, the self-time check, the top ops and where the files are."""
    lines = [f"profile of {result.scenario_id}: {result.status}" + (f" ({result.note})" if result.note else "")]
    s = result.summary
    if result.ok and s is not None:
        lines.append(
            f"{s.iterations} profiled calls after {s.warmup} warmup calls, {s.threads} thread(s); "
            f"median {s.profiled_median_s * 1e3:.3f} ms under the profiler"
            + (f" ({s.profiler_overhead:.2f}x a call without it)" if s.profiler_overhead else "")
        )
        if s.allocated_load_bytes is not None:
            lines.append(
                f"torch's live CPU allocations: {s.allocated_load_bytes / 2**20:.2f} MiB at the peak of load, "
                f"{s.allocated_first_inference_bytes / 2**20:.2f} MiB at the peak of the first call, "
                f"{s.allocated_per_call_bytes / 1024:.1f} KiB working memory per call"
            )
        lines.append(
            f"self time explains {100 * s.explained_ratio:.0f}% of the median call "
            f"(operators alone: {100 * s.ops_only_ratio:.0f}%)"
        )
        lines.append("")
        lines.append(f"{'op':<48} {'calls/it':>8} {'self ms/it':>10} {'self %':>7}  input shapes")
        for op in s.top_ops[:top]:
            lines.append(
                f"{op.op[:48]:<48} {op.calls_per_iter:>8.1f} {op.self_cpu_per_iter_s * 1e3:>10.4f} "
                f"{op.self_cpu_pct:>7.1f}  {op.input_shapes[:60]}"
            )
        lines.append("")
    memory_csv = result.out_dir / MEMORY_CSV if result.out_dir is not None else None
    for label, path in (("ops", result.ops_csv), ("trace", result.trace_json), ("memory", memory_csv)):
        if path is not None and path.exists():
            lines.append(f"{label}: {path}")
    return "\n".join(lines)


# ---------------------------------------------------------------- this CPU's peak


def measure_peak_gflops(
    threads: int,
    dtype: str = "fp32",
    *,
    cache_dir: Path | str | None = None,
    fingerprint: str | None = None,
    size: int = 1024,
    seconds: float = 1.0,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """This CPU's matmul GFLOP/s at `threads`, measured in a fresh process (thread pools sized at start).

    A `size` x `size` matmul in `dtype` (fp32 or bf16) is repeated for about `seconds`; the best
    repetition counts. Cached as JSON in `cache_dir` per environment fingerprint, dtype, threads
    and size: {'gflops': float | None, 'dtype', 'threads', 'size', 'cached': bool, 'note'}.
    Never raises; a failure gives gflops None and a note.
    """
    key = f"peak-{fingerprint or 'nofingerprint'}-{dtype}-t{threads}-n{size}.json"
    cache_path = Path(cache_dir) / key if cache_dir is not None else None
    cached = read_cached(cache_path)
    if cached is not None:
        return {**cached, "cached": True}
    result: dict[str, Any] = {
        "gflops": None,
        "dtype": dtype,
        "threads": threads,
        "size": size,
        "cached": False,
        "note": None,
    }
    if dtype not in PEAK_DTYPES:
        result["note"] = f"no peak measurement for dtype {dtype!r}; expected one of {', '.join(PEAK_DTYPES)}"
        return result
    args = ["bench.profile.profiler", "--peak", dtype, str(size), str(seconds)]
    try:
        result.update(run_probe(args, threads, timeout_s, "peak measurement"))
    except ProbeFailed as exc:
        result["note"] = str(exc)
        return result
    if result["gflops"]:
        keep(cache_path, {k: v for k, v in result.items() if k != "cached"})
    return result


def _peak_child(dtype: str, size: int, seconds: float) -> int:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(torch_dtype)
    b = torch.randn(size, size, generator=generator).to(torch_dtype)
    out = torch.empty(size, size, dtype=torch_dtype)
    with torch.inference_mode():
        for _ in range(3):
            torch.mm(a, b, out=out)
        best_s, started = float("inf"), time.perf_counter()
        repetitions = 0
        while repetitions < 5 or time.perf_counter() - started < seconds:
            t = time.perf_counter()
            torch.mm(a, b, out=out)
            best_s = min(best_s, time.perf_counter() - t)
            repetitions += 1
    gflops = 2 * size**3 / best_s / 1e9
    print(json.dumps({"gflops": gflops, "repetitions": repetitions, "torch_num_threads": torch.get_num_threads()}))
    return 0


def percent_of_peak(achieved: float | None, peak: float | None) -> float | None:
    """Achieved GFLOP/s as a percentage of the measured peak; None when either is unknown."""
    if not achieved or not peak:
        return None
    return 100.0 * achieved / peak


def main(argv: list[str]) -> int:
    """`SPEC`: profile as the spec says; `--peak DTYPE SIZE SECONDS`: measure this CPU's matmul peak."""
    if argv[0] == "--peak":
        return _peak_child(argv[1], int(argv[2]), float(argv[3]))
    return _child_main(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
