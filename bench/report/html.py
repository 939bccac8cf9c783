"""report.html: one self-contained page (inline CSS, figures as base64 PNG, a little inline JS).

The page fetches nothing, so it opens from disk, from a CI artifact or from an e-mail. It is
rendered from the Jinja2 templates in bench/report/templates/ (shipped as package data), with
autoescape on: everything that comes from a run (scenario and model names, reasons, suite
names, paths) is HTML-escaped by the template. This module turns a Report into a Page of typed
rows and cells; the sections that other modules render (capacity, pipeline, text, trade-offs,
the section tables and figures of bench.report.blocks) arrive as Markup, built there with
html.escape on every value. The inline scripts sort tables on a header click and fill
<div id="render-check"> with what rendered (images decoded, table rows, script errors),
which the browser test reads back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from bench.report.advice import advice_html
from bench.report.blocks import figure_html, section_table
from bench.report.capacity import capacity_html
from bench.report.hygiene import HEADERS as HYGIENE_HEADERS
from bench.report.hygiene import INTRO as HYGIENE_INTRO
from bench.report.hygiene import TEXT_COLUMNS as HYGIENE_TEXT_COLUMNS
from bench.report.model import Report
from bench.report.pipeline import pipeline_html
from bench.report.profiles import (
    OPS_HEADERS,
    PROFILE_INTRO,
    ProfileSection,
    memory_phase_caption,
    memory_phase_columns,
)
from bench.report.roofline import roofline_html
from bench.report.tables import (
    CLIFF_RATIO,
    MODEL_SOURCE_HEADERS,
    Column,
    cell_text,
    display_columns,
    environment_columns,
    first_line,
    format_value,
    model_source_rows,
    row_notes,
    status_counts,
)
from bench.report.text import text_html
from bench.report.tradeoffs import tradeoffs_html

TEMPLATES = Environment(
    loader=PackageLoader("bench.report", "templates"),
    autoescape=True,
    undefined=StrictUndefined,  # a misspelt name in a template fails the render, never shows as ""
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Head:
    """A table header: numeric columns sort as numbers; `unit` is a second line under the title."""

    title: str
    numeric: bool
    unit: str = ""
    tooltip: str = ""
    sortable: bool = True  # shows the sort arrow (the script sorts every table.sortable)


@dataclass(frozen=True)
class Cell:
    """A table cell. `sort_key` (data-v) is what the sort script compares, where the text is not it."""

    text: str
    cls: str = ""
    sort_key: str | None = None
    tooltip: str = ""
    cliff: bool = False  # the text is a ratio marked as a precision cliff
    badge: bool = False  # the text is a status, drawn as a badge, with its reason's first line and the notes below
    reason: str = ""
    reason_line: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    cells: list[Cell]
    cls: str = ""


@dataclass(frozen=True)
class Table:
    table_id: str
    heads: list[Head]
    rows: list[Row]
    sortable: bool = True


@dataclass(frozen=True)
class Card:
    cls: str  # "", ok, bad or warn
    count: int
    label: str


@dataclass(frozen=True)
class EnvironmentRow:
    label: str
    values: list[str]  # one per environment column
    differs: bool = False  # highlighted: the environments differ here


@dataclass(frozen=True)
class EnvironmentTable:
    headings: list[str]  # one per environment; [] when there is one (then a plain label: value table)
    rows: list[EnvironmentRow]


@dataclass(frozen=True)
class Problem:
    """A failed or unsupported row, with its whole reason."""

    status: str
    scenario_id: str
    reason: str
    run_tag: str | None  # "run i", when the report shows several runs
    run_id: str


@dataclass(frozen=True)
class ProfileView:
    section: ProfileSection
    ops: Table | None  # its top operators; None when not profiled or without an operator table


@dataclass(frozen=True)
class FigureView:
    html: Markup
    fidelity_note: bool  # followed by the note that latency versus fidelity is not drawn


@dataclass(frozen=True)
class Page:
    """Everything report.html.j2 shows beside the Report itself."""

    run_labels: str
    cliff_ratio: str
    toc: list[tuple[str, str]]  # (anchor, link text)
    cards: list[Card]
    environment: EnvironmentTable
    model_sources: Markup | None
    summary: Table | None  # None: no result rows
    problems: list[Problem]
    profile_intro: str
    profiles: list[ProfileView]
    memory_phases: Table | None
    memory_phase_caption: str
    capacity: Markup
    pipeline: Markup
    hygiene_intro: str
    hygiene_table: Markup | None
    text: Markup
    roofline: Markup
    tradeoffs: Markup
    advice: Markup
    comparison: Table | None
    figures: list[FigureView]


def _num_attr(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return ""


def _head(column: Column) -> Head:
    return Head(column.title, numeric=column.digits != "text", unit=column.unit or "")


def _run_tags(report: Report) -> dict[str, str]:
    return {r.label: f"run {i}" for i, r in enumerate(report.runs, start=1)}


def _summary_table(report: Report) -> Table | None:
    frame = report.frame
    if frame.empty:
        return None
    multi = len(report.runs) > 1
    columns = display_columns(fidelity=report.fidelity_measured, variants=report.has_variants, status_first=True)
    heads = ([_head(Column("run_id", "run", digits="text"))] if multi else []) + [_head(c) for c in columns]
    tags = _run_tags(report)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        if multi:
            tag = tags.get(row["run_id"], row["run_id"])
            cells.append(Cell(tag, cls="mono nowrap", sort_key=tag, tooltip=row["run_id"]))
        for column in columns:
            value = row[column.key]
            if column.key == "scenario_id":
                cells.append(Cell(value, cls="id"))
            elif column.key == "status":
                notes = tuple(row_notes(row))
                reason = row["reason"] or ""
                cells.append(
                    Cell(value, sort_key=value, badge=True, reason=reason, reason_line=first_line(reason), notes=notes)
                )
            elif column.key == "vs_fp32":
                text = format_value(value, column.digits)
                cells.append(Cell(text, cls="num", sort_key=_num_attr(value), cliff=bool(row["cliff"])))
            else:
                cells.append(Cell(cell_text(row, column), cls="num", sort_key=_num_attr(value)))
        rows.append(Row(cells, cls=" ".join([str(row["status"])] + (["cliff"] if row["cliff"] else []))))
    return Table("summary", heads, rows)


def _environment(report: Report) -> EnvironmentTable:
    columns = environment_columns(report.runs)
    if len(columns) == 1:
        return EnvironmentTable([], [EnvironmentRow(k, [v]) for k, v in columns[0][1].items()])
    labels: list[str] = []
    for _, rows in columns:
        labels += [label for label in rows if label not in labels]
    table_rows = []
    for label in labels:
        values = [rows.get(label, "") for _, rows in columns]
        differs = len(set(values)) > 1 and label not in ("run", "started / finished", "folder")
        table_rows.append(EnvironmentRow(label, values, differs))
    return EnvironmentTable([heading for heading, _ in columns], table_rows)


def _model_sources(report: Report) -> Markup | None:
    rows = model_source_rows(report.runs)
    if not rows:
        return None
    headers = [(h, "") for h in MODEL_SOURCE_HEADERS]
    return Markup(section_table("model-sources", headers, rows, [""] * len(headers)))


def _problems(report: Report) -> list[Problem]:
    frame = report.frame
    if frame.empty:
        return []
    multi = len(report.runs) > 1
    tags = _run_tags(report)
    problems = []
    for _, row in frame[frame["status"].ne("ok")].iterrows():
        run_tag = tags.get(row["run_id"], "") if multi else None
        problems.append(Problem(row["status"], row["scenario_id"], row["reason"] or "", run_tag, row["run_id"]))
    return problems


def _hygiene_table(report: Report) -> Markup | None:
    section = report.hygiene
    if section is None:
        return None
    classes = ["id" if i == 0 else "" if i in HYGIENE_TEXT_COLUMNS else "num" for i in range(len(HYGIENE_HEADERS))]
    return Markup(section_table("hygiene-table", HYGIENE_HEADERS, section.rows, classes))


def _comparison(report: Report) -> Table | None:
    comp = report.comparison
    if comp is None:
        return None
    labels = [r.label for r in report.runs]
    first = labels[0]
    heads = [Head("scenario", numeric=False)]
    heads += [Head(f"run {i} median", True, unit="ms", tooltip=label) for i, label in enumerate(labels, start=1)]
    heads += [
        Head(f"run {i} / run 1", True, tooltip=f"{label} / {first}") for i, label in enumerate(labels[1:], start=2)
    ]
    rows = []
    for _, row in comp.iterrows():
        cells = [Cell(row["scenario_id"], cls="id")]
        for label in labels:
            value = row[label]
            status = row[f"status:{label}"]
            cells.append(Cell(format_value(value) if status == "ok" else status, "num", _num_attr(value)))
        for label in labels[1:]:
            ratio = row[f"{label} / {first}"]
            cls = "num"
            if not pd.isna(ratio):
                cls += " slower" if ratio > 1.1 else " faster" if ratio < 1 / 1.1 else ""
            cells.append(Cell(format_value(ratio, "ratio"), cls, _num_attr(ratio)))
        rows.append(Row(cells))
    return Table("comparison-table", heads, rows)


def _profiles(report: Report) -> list[ProfileView]:
    kinds = ["id"] + ["num"] * (len(OPS_HEADERS) - 2) + [""]  # op name, numbers, input shapes
    heads = [Head(h, numeric=k == "num", sortable=False) for k, h in zip(kinds, OPS_HEADERS, strict=True)]
    views = []
    for section in report.profiles:
        ops = None
        if section.status == "ok" and not section.problem:
            rows = [Row([Cell(c, k) for k, c in zip(kinds, cells, strict=True)]) for cells in section.ops_rows]
            ops = Table("", heads, rows, sortable=False)
        views.append(ProfileView(section, ops))
    return views


def _memory_phases(report: Report) -> tuple[Table | None, str]:
    """The memory-by-phase table and its caption; (None, "") without rows."""
    frame = report.memory_phases
    if frame.empty:
        return None, ""
    columns = memory_phase_columns(frame)
    multi = len(report.runs) > 1
    heads = ([_head(Column("run_id", "run", digits="text"))] if multi else []) + [_head(c) for c in columns]
    rows = []
    for _, row in frame.iterrows():
        cells = [Cell(row["run_id"], cls="mono nowrap")] if multi else []
        for column in columns:
            value = row[column.key]
            if column.digits == "text":
                cells.append(Cell(value, cls="id" if column.key == "scenario_id" else "nowrap"))
            else:
                cells.append(Cell(format_value(value, column.digits), cls="num", sort_key=_num_attr(value)))
        rows.append(Row(cells))
    return Table("memory-phase-table", heads, rows), memory_phase_caption(columns)


def _cards(report: Report) -> list[Card]:
    counts = status_counts(report.frame)
    cliffs = int(report.frame["cliff"].sum()) if not report.frame.empty else 0
    return [
        Card("", len(report.frame), "scenarios" if len(report.runs) == 1 else f"rows in {len(report.runs)} runs"),
        Card("ok", counts["ok"], "ok"),
        Card("", counts["unsupported"], "unsupported"),
        Card("bad" if counts["failed"] else "", counts["failed"], "failed"),
        Card("warn" if cliffs else "", cliffs, f"precision cliffs (>{CLIFF_RATIO:g}× fp32)"),
    ]


def _toc(report: Report) -> list[tuple[str, str]]:
    links = [("environment", "Environment"), ("results", "Results")]
    if report.advice is not None:
        links.insert(0, ("advice", "Advice"))
    if not report.frame.empty and report.frame["status"].ne("ok").any():
        links.append(("problems", "Failed / unsupported"))
    if report.profiles:
        links.append(("profiles", "Operator profiles"))
    if not report.memory_phases.empty:
        links.append(("memory-phases", "Memory by phase"))
    if report.capacity is not None:
        links.append(("capacity", "Capacity"))
    if report.pipeline is not None:
        links.append(("pipeline", "Input pipeline"))
    if report.hygiene is not None:
        links.append(("hygiene", "Inference hygiene"))
    if report.text is not None:
        links.append(("text", "Text models"))
    if report.roofline is not None:
        links.append(("roofline", "Roofline"))
    if report.comparison is not None:
        links.append(("comparison", "Runs side by side"))
    if report.figures:
        links.append(("figures", "Figures"))
    return links


def _page(report: Report) -> Page:
    memory_phases, memory_caption = _memory_phases(report)
    return Page(
        run_labels=", ".join(r.label for r in report.runs),
        cliff_ratio=f"{CLIFF_RATIO:g}",
        toc=_toc(report),
        cards=_cards(report),
        environment=_environment(report),
        model_sources=_model_sources(report),
        summary=_summary_table(report),
        problems=_problems(report),
        profile_intro=PROFILE_INTRO,
        profiles=_profiles(report),
        memory_phases=memory_phases,
        memory_phase_caption=memory_caption,
        capacity=Markup(capacity_html(report.capacity)),
        pipeline=Markup(pipeline_html(report.pipeline)),
        hygiene_intro=HYGIENE_INTRO,
        hygiene_table=_hygiene_table(report),
        text=Markup(text_html(report.text)),
        roofline=Markup(roofline_html(report.roofline)),
        tradeoffs=Markup(tradeoffs_html(report.tradeoffs)),
        advice=Markup(advice_html(report.advice)),
        comparison=_comparison(report),
        figures=[
            FigureView(
                Markup(figure_html(f)), fidelity_note=f.key == "latency_vs_memory" and not report.fidelity_measured
            )
            for f in report.figures
        ],
    )


def render_html(report: Report) -> str:
    return TEMPLATES.get_template("report.html.j2").render(report=report, page=_page(report))
