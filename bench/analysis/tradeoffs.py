"""Trade-offs: per model, what each precision and load mode costs and buys against fp32 eager.

Rows of one model at one batch size and thread count (eval() under inference_mode, dense) are
set side by side: median and p99 latency, the speed-up over fp32 eager, fidelity (cosine to
fp32 eager's outputs), top-1 accuracy when a `data:` folder gave one, peak RSS and the artifact's
size. A row is dominated when another is at least as fast and at least as faithful (and, when
every row has an accuracy, at least as accurate), and better in one of them; the rest form the
Pareto frontier. One sentence per group reads it. `bench tradeoffs RUN` prints the table; the
report's "Trade-offs" section (bench.report.tradeoffs) draws it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.checks.fidelity import INPUT_DEPENDENCE_FLOOR, is_flat
from bench.format.markdown import cell, table
from bench.format.text import format_table
from bench.format.units import MIB
from bench.results.record import ResultRecord

BASELINE = ("fp32", "eager")
FORMATS = ("table", "markdown", "json")
HEADERS = (
    "precision",
    "load",
    "median ms",
    "p99 ms",
    "x fp32 eager",
    "cosine",
    "top-1 acc",
    "peak RSS MiB",
    "artifact MiB",
    "pareto",
    "int8 layers",
)


@dataclass(frozen=True)
class Point:
    """One ok row of a group."""

    scenario_id: str
    precision: str
    load: str
    median_ms: float
    p99_ms: float | None
    cosine: float | None  # to fp32 eager's outputs on the fidelity inputs
    top1_accuracy: float | None  # with `data:`: against the folder's labels
    peak_rss_mib: float | None
    artifact_mib: float | None
    speedup_vs_fp32_eager: float | None  # fp32 eager's median / this row's
    dominated: bool | None  # None: no fidelity, so not placed
    quantized_layers: dict[str, int] = field(default_factory=dict)
    calibration_note: str | None = None  # random calibration: the fidelity is not a real model's
    contended: bool = False  # timed while others took the CPU: its latency is not comparable
    flat_output: bool = False  # its output barely depends on the input (bench.checks.fidelity.input_dependence)
    fidelity_note: str | None = None  # why a fidelity figure is null (bench.checks.fidelity)


@dataclass(frozen=True)
class Group:
    """One model at one batch size and thread count."""

    model: str
    batch_size: int
    threads: int
    input_shape: tuple[int, ...]
    points: list[Point]
    not_ok: list[tuple[str, str, str]]  # (scenario id, status, reason) of rows that did not run
    reading: str


def dominated_flags(objectives: Sequence[Sequence[float] | None]) -> list[bool | None]:
    """Per point, whether another point is no worse in every objective and better in one (all to
    minimise); None for a point without objectives, which neither dominates nor is dominated."""
    flags: list[bool | None] = []
    for i, mine in enumerate(objectives):
        if mine is None:
            flags.append(None)
            continue
        flags.append(
            any(
                other is not None
                and all(o <= m for o, m in zip(other, mine, strict=True))
                and any(o < m for o, m in zip(other, mine, strict=True))
                for j, other in enumerate(objectives)
                if j != i
            )
        )
    return flags


def _peak_rss(record: ResultRecord) -> int | None:
    return record.peak_rss_kernel_bytes or record.rss_bytes.peak


def _is_default(record: ResultRecord) -> bool:
    """Rows called the right way, of the dense model: the ones a trade-off compares."""
    return (record.grad_mode, record.module_mode, record.variant) == ("inference_mode", "eval", "dense")


def build_groups(records: Sequence[ResultRecord], cpu: str | None, model: str | None = None) -> list[Group]:
    """The run's rows grouped by model, batch size, threads and shape, each with its frontier and reading."""
    keyed: dict[tuple[Any, ...], list[ResultRecord]] = {}
    for record in records:
        if _is_default(record) and (model is None or record.model == model):
            key = (record.model, record.batch_size, record.threads, tuple(record.input_shape), record.host_group)
            keyed.setdefault(key, []).append(record)
    groups = []
    for (name, batch, threads, shape, _host), rows in keyed.items():
        ok = [r for r in rows if r.status == "ok" and r.latency_s is not None]
        if not ok:
            continue
        base = next((r for r in ok if (r.precision, r.load) == BASELINE), None)
        base_s = base.latency_s.median if base and base.latency_s else None
        with_accuracy = all(r.pipeline is not None and r.pipeline.top1_accuracy is not None for r in ok)
        objectives = [_objectives(r, with_accuracy) for r in ok]
        points = [_point(r, base_s, flag) for r, flag in zip(ok, dominated_flags(objectives), strict=True)]
        points.sort(key=lambda p: p.median_ms)
        not_ok = [(r.scenario_id, r.status, r.reason or "") for r in rows if r not in ok]
        groups.append(Group(name, batch, threads, shape, points, not_ok, reading(name, batch, points, cpu)))
    return groups


def _objectives(record: ResultRecord, with_accuracy: bool) -> list[float] | None:
    cosine = record.fidelity.cosine_similarity if record.fidelity else None
    if cosine is None or record.latency_s is None:
        return None
    values = [record.latency_s.median, -cosine]
    if with_accuracy and record.pipeline is not None and record.pipeline.top1_accuracy is not None:
        values.append(-record.pipeline.top1_accuracy)
    return values


def _point(record: ResultRecord, base_s: float | None, dominated: bool | None) -> Point:
    latency = record.latency_s
    assert latency is not None
    peak = _peak_rss(record)
    quantization = record.quantization
    return Point(
        scenario_id=record.scenario_id,
        precision=record.precision,
        load=record.load,
        median_ms=latency.median * 1e3,
        p99_ms=latency.p99 * 1e3 if latency.p99 is not None else None,
        cosine=record.fidelity.cosine_similarity if record.fidelity else None,
        top1_accuracy=record.pipeline.top1_accuracy if record.pipeline else None,
        peak_rss_mib=peak / MIB if peak else None,
        artifact_mib=record.artifact_bytes / MIB if record.artifact_bytes else None,
        speedup_vs_fp32_eager=base_s / latency.median if base_s and latency.median else None,
        dominated=dominated,
        # int8_dynamic records a total only
        quantized_layers=dict(quantization.layers_by_kind)
        if quantization
        else ({"total": record.quantized_layers} if record.quantized_layers else {}),
        calibration_note=quantization.calibration_note if quantization else None,
        contended=record.contended,
        flat_output=is_flat(record.fidelity.input_dependence if record.fidelity else None),
        fidelity_note=record.fidelity.note if record.fidelity else None,
    )


def reading(model: str, batch_size: int, points: Sequence[Point], cpu: str | None) -> str:
    """One sentence: the frontier's rows against fp32 eager, fastest first."""
    where = f"On {cpu}" if cpu else "On this CPU"
    if not any((p.precision, p.load) == BASELINE for p in points):
        return f"{where}, {model} at batch {batch_size} has no fp32 eager row to compare against."
    if all((p.precision, p.load) == BASELINE for p in points):
        return (
            f"{where}, {model} at batch {batch_size} was measured in fp32 eager only: nothing to trade off "
            "(add precisions or load modes to the suite to compare them)."
        )
    frontier = [p for p in points if p.dominated is False and (p.precision, p.load) != BASELINE]
    if not frontier:
        return f"{where}, nothing beats fp32 eager for {model} at batch {batch_size}: every other row is dominated."
    parts = [
        f"{p.precision} under {p.load} is {p.speedup_vs_fp32_eager:.2f}x fp32 eager's speed at cosine {p.cosine:.4f}"
        for p in frontier[:3]
    ]
    caveat = (
        " (random calibration: int8_static's fidelity is not a real model's)"
        if any(p.calibration_note for p in frontier[:3])
        else ""
    )
    if any(p.flat_output for p in frontier[:3]):
        caveat += " (flat: that output barely depends on the input, so its cosine says nothing)"
    contended = sum(p.contended for p in points)
    noisy = (
        f" {contended} of {len(points)} rows were timed on a contended host: their latencies are not comparable."
        if contended
        else ""
    )
    return f"{where}, {model} at batch {batch_size}: " + "; ".join(parts) + caveat + "." + noisy


def cells(point: Point) -> list[str]:
    """A point as the table's cells (HEADERS)."""

    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    pareto = {None: "-", True: "dominated", False: "frontier"}[point.dominated]
    layers = ", ".join(f"{n} {kind}" for kind, n in point.quantized_layers.items()) or "-"
    return [
        point.precision,
        point.load,
        num(point.median_ms, ".3f"),
        num(point.p99_ms, ".3f"),
        num(point.speedup_vs_fp32_eager, ".2f"),
        num(point.cosine, ".4f") + (" flat" if point.flat_output else ""),
        num(point.top1_accuracy, ".3f"),
        num(point.peak_rss_mib, ".0f"),
        num(point.artifact_mib, ".1f"),
        pareto,
        layers,
    ]


def title(group: Group) -> str:
    return f"{group.model}, batch {group.batch_size}, {group.threads} thread(s), input {list(group.input_shape)}"


_TEXT_COLUMNS = (0, 1, len(HEADERS) - 2, len(HEADERS) - 1)  # precision, load and the last two; the rest are numbers


def render_table(groups: Sequence[Group]) -> str:
    out = []
    right = [i for i in range(len(HEADERS)) if i not in _TEXT_COLUMNS]
    for group in groups:
        out += [title(group), format_table(HEADERS, [cells(p) for p in group.points], right), *_footer(group), ""]
    return "\n".join(out)


def render_markdown(groups: Sequence[Group]) -> str:
    out = []
    align = ["l" if i in _TEXT_COLUMNS else "r" for i in range(len(HEADERS))]
    for group in groups:
        rows = [[cell(c) for c in cells(p)] for p in group.points]
        out += [f"### {cell(title(group))}", "", table(list(HEADERS), rows, align), "", *map(cell, _footer(group)), ""]
    return "\n".join(out)


def _footer(group: Group) -> list[str]:
    lines = [group.reading]
    if any(p.flat_output for p in group.points):
        lines.append(
            f"flat: the output's spread over the fidelity inputs is under {INPUT_DEPENDENCE_FLOOR:.0%} of "
            "fp32 eager's (it barely depends on the input): its cosine is noise."
        )
    lines += [f"{p.precision} under {p.load}: {p.fidelity_note}" for p in group.points if p.fidelity_note]
    if group.not_ok:
        counts: dict[str, int] = {}
        for _, status, _ in group.not_ok:
            counts[status] = counts.get(status, 0) + 1
        lines.append(
            "Not measured: "
            + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            + " (their reasons are in the report and results.jsonl)."
        )
    return lines


def render_json(groups: Sequence[Group]) -> str:
    return json.dumps([asdict(g) for g in groups], indent=2) + "\n"
