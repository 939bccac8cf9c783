"""Where a scenario's wall time goes: the record's `timeline`, and the run's measured-versus-overhead line.

The worker writes a monotonic mark at each phase start (events.jsonl, bench.measure.worker); CLOCK_MONOTONIC
is one clock for every process on Linux, so the runner's own marks (the worker requested, its
exit seen) line up with them. A phase lasts from its mark to the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.results.record import ResultRecord, Timeline

# Worker phases that get their own timeline field (bench.measure.worker.WorkerSession's phase names).
WORKER_PHASES = (
    "load",
    "compile",
    "first_inference",
    "warmup",
    "steady",
    "fidelity",
    "hygiene",
    "generation",
    "pipeline",
    "release",
)


def worker_parts(events: Sequence[dict[str, Any]], requested_s: float, exited_s: float) -> dict[str, float]:
    """Seconds per timeline field of one worker, from its events and the runner's two marks."""
    marks = [(float(e["t_s"]), str(e["phase"])) for e in events]
    first = {}
    for t_s, phase in marks:
        first.setdefault(phase, t_s)
    parts: dict[str, float] = {}
    configured_s, load_s = first.get("configured"), first.get("load")
    if configured_s is not None:
        parts["process_start_s"] = configured_s - requested_s
        if load_s is not None:
            parts["imports_s"] = load_s - configured_s
    for (t_s, phase), (next_s, _) in zip(marks, marks[1:], strict=False):
        if phase in WORKER_PHASES:
            parts[f"{phase}_s"] = parts.get(f"{phase}_s", 0.0) + next_s - t_s
    if marks and marks[-1][1] == "done":
        parts["teardown_s"] = exited_s - marks[-1][0]
    return parts


def build_timeline(wall_s: float, parts: dict[str, float]) -> Timeline:
    """The row's timeline: `parts` (worker_parts plus artifact_s, profile_s, capacity_s) and what is left."""
    covered_s = sum(parts.values())
    steady_s = parts.get("steady_s") or 0.0
    return Timeline(wall_s=wall_s, overhead_s=wall_s - steady_s, other_s=max(wall_s - covered_s, 0.0), **parts)


def overhead_line(records: Sequence[ResultRecord]) -> str | None:
    """'measured N s of M s wall (overhead X s per scenario, fork workers)'; None when no row has a timeline."""
    timelines = [r.timeline for r in records if r.timeline is not None]
    if not timelines:
        return None
    wall_s = sum(t.wall_s for t in timelines)
    measured_s = sum(t.steady_s or 0.0 for t in timelines)
    kinds = sorted({r.worker_kind for r in records if r.timeline is not None and r.worker_kind})
    return (
        f"measured {measured_s:.1f} s of {wall_s:.1f} s wall (overhead {(wall_s - measured_s) / len(timelines):.2f} s "
        f"per scenario{', ' + ' and '.join(kinds) + ' workers' if kinds else ''})"
    )
