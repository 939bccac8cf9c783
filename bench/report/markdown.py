"""report.md: the same report as GitHub-flavoured Markdown, for pull requests and terminals.

Figures are linked as figures/*.png (relative to report.md). Text from a run is put in
code spans or escaped, so a reason or a model name cannot break a table or inject HTML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from bench.format.markdown import cell, code, table, unit_headers
from bench.report.advice import advice_markdown
from bench.report.blocks import figure_markdown
from bench.report.capacity import capacity_markdown
from bench.report.hygiene import HEADERS as HYGIENE_HEADERS
from bench.report.hygiene import INTRO as HYGIENE_INTRO
from bench.report.hygiene import TEXT_COLUMNS as HYGIENE_TEXT_COLUMNS
from bench.report.model import Report
from bench.report.pipeline import pipeline_markdown
from bench.report.profiles import OPS_HEADERS, PROFILE_INTRO, memory_phase_caption, memory_phase_columns
from bench.report.roofline import roofline_markdown
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
from bench.report.text import text_markdown
from bench.report.tradeoffs import tradeoffs_markdown


def _summary(report: Report) -> str:
    frame = report.frame
    if frame.empty:
        return "_No result rows: results.jsonl has no readable record._"
    columns = display_columns(fidelity=report.fidelity_measured, variants=report.has_variants, status_first=False)
    return _row_table(report, frame, columns, _summary_cell)


def _summary_cell(row: Any, column: Column) -> str:
    value = row[column.key]
    if column.key == "scenario_id":
        return code(value)
    if column.key == "status":
        reason = first_line(row["reason"], 100)
        notes = "".join(f"; {cell(n)}" for n in row_notes(row))
        return (f"**{cell(value)}**: {code(reason)}" if reason else cell(value)) + notes
    if column.key == "vs_fp32":
        shown = format_value(value, column.digits)
        return f"⚠ **{shown}**" if row["cliff"] else shown
    return cell_text(row, column)


def _row_table(report: Report, frame: Any, columns: list[Column], render: Callable[[Any, Column], str]) -> str:
    """A table of one row per scenario per run: a `run N` column first when the report has several runs."""
    multi = len(report.runs) > 1
    tags = {r.label: f"run {i}" for i, r in enumerate(report.runs, start=1)}
    headers = (["run"] if multi else []) + [c.title + (f" ({c.unit})" if c.unit else "") for c in columns]
    align = (["l"] if multi else []) + ["l" if c.digits == "text" else "r" for c in columns]
    rows = []
    for _, row in frame.iterrows():
        cells = [tags.get(row["run_id"], cell(row["run_id"]))] if multi else []
        rows.append(cells + [render(row, column) for column in columns])
    return table(headers, rows, align)


def _hygiene(report: Report) -> str:
    section = report.hygiene
    if section is None:
        return ""
    align = ["l" if i in HYGIENE_TEXT_COLUMNS else "r" for i in range(len(HYGIENE_HEADERS))]
    rows = [[code(cells[0]), *(cell(c) for c in cells[1:])] for cells in section.rows]
    out = ["## Inference hygiene\n", cell(HYGIENE_INTRO) + "\n"]
    if section.sentences:
        out.append("\n".join(f"- {cell(s)}" for s in section.sentences) + "\n")
    out.append(table(unit_headers(HYGIENE_HEADERS), rows, align) + "\n")
    return "\n".join(out)


def _environment(report: Report) -> str:
    columns = environment_columns(report.runs)
    labels: list[str] = []
    for _, rows in columns:
        labels += [k for k in rows if k not in labels]
    if len(columns) == 1:
        return table(["", "value"], [[cell(k), cell(v)] for k, v in columns[0][1].items()], ["l", "l"])
    headers = [""] + [cell(heading) for heading, _ in columns]
    rows = [[cell(label)] + [cell(r.get(label, "")) for _, r in columns] for label in labels]
    return table(headers, rows, ["l"] * len(headers))


def _comparison(report: Report) -> str:
    comp = report.comparison
    if comp is None:
        return ""
    labels = [r.label for r in report.runs]
    headers = ["scenario"] + [f"run {i} median (ms)" for i in range(1, len(labels) + 1)]
    headers += [f"run {i} / run 1" for i in range(2, len(labels) + 1)]
    rows = []
    for _, row in comp.iterrows():
        cells = [code(row["scenario_id"])]
        for label in labels:
            status = row[f"status:{label}"]
            cells.append(format_value(row[label]) if status == "ok" else cell(status))
        for label in labels[1:]:
            cells.append(format_value(row[f"{label} / {labels[0]}"], "ratio"))
        rows.append(cells)
    legend = "\n".join(f"- run {i}: {code(label)}" for i, label in enumerate(labels, start=1))
    return (
        "## Runs side by side\n\nMedian latency per scenario id in each run and its ratio to run 1 "
        "(above 1: slower than run 1).\n\n"
        f"{legend}\n\n{table(headers, rows, ['l'] + ['r'] * (len(headers) - 1))}\n"
    )


def profiles_markdown(report: Report) -> str:
    """The "Operator profiles" section: per profiled row, its facts, links and top operators."""
    if not report.profiles:
        return ""
    parts = ["## Operator profiles\n", f"{cell(PROFILE_INTRO)}\n"]
    for section in report.profiles:
        run = f" ({code(section.run)})" if section.run else ""
        parts.append(f"### {code(section.scenario_id)}{run}\n")
        if section.status != "ok":
            parts.append(f"Not profiled ({cell(section.status)}): {code(first_line(section.note, 300))}\n")
            continue
        links = " · ".join(f"[{cell(label)}]({quote(href)})" for label, href in section.links)
        parts.append(f"{cell('; '.join(section.facts))}. {links}\n")
        if section.problem:
            parts.append(f"> No operator table: {cell(section.problem)}\n")
            continue
        rows = [[code(cells[0]), *cells[1:-1], code(cells[-1])] for cells in section.ops_rows]
        parts.append(table(OPS_HEADERS, rows, ["l"] + ["r"] * (len(OPS_HEADERS) - 2) + ["l"]) + "\n")
    return "\n".join(parts)


def memory_phases_markdown(report: Report) -> str:
    """The "Memory by phase" section: one row per ok scenario."""
    frame = report.memory_phases
    if frame.empty:
        return ""
    columns = memory_phase_columns(frame)

    def phase_cell(row: Any, column: Column) -> str:
        value = format_value(row[column.key], column.digits)
        return code(value) if column.key == "scenario_id" else cell(value)

    rows = _row_table(report, frame, columns, phase_cell)
    return f"## Memory by phase\n\n{cell(memory_phase_caption(columns))}\n\n{rows}\n"


def _figures(report: Report) -> str:
    parts = []
    for figure in report.figures:
        parts.append(f"### {figure.title}\n")
        parts += figure_markdown(figure, report.out_dir)
        for panel, ids in (figure.extra.get("fronts") or {}).items():
            parts.append(f"- Pareto front, {cell(panel)}: " + ", ".join(code(s) for s in ids))
        if figure.extra.get("fronts"):
            parts.append("")
        if figure.key == "latency_vs_memory" and not report.fidelity_measured:
            parts.append(
                "### Latency versus fidelity\n\n> Not drawn: fidelity is not measured yet "
                "(every row has `fidelity: null`).\n"
            )
    return "## Figures\n\n" + "\n".join(parts) if parts else ""


def render_markdown(report: Report) -> str:
    frame = report.frame
    counts = status_counts(frame)
    cliffs = int(frame["cliff"].sum()) if not frame.empty else 0
    runs = ", ".join(code(r.label) for r in report.runs)
    out = [f"# {cell(report.title)}\n", f"Run{'s' if len(report.runs) > 1 else ''}: {runs}  "]
    out.append(f"Generated {report.generated_at} by bench {report.bench_version}\n")
    if report.warnings:
        out.append("> **Warnings**\n>")
        out += [f"> - {cell(w)}" for w in report.warnings]
        out.append("")
    out.append(
        f"**{len(frame)}** rows: **{counts['ok']}** ok, **{counts['unsupported']}** unsupported, "
        f"**{counts['failed']}** failed; **{cliffs}** precision cliff(s) (median > {CLIFF_RATIO:g}× fp32).\n"
    )
    out += [f"Time: {cell(line)}\n" for line in report.overhead_lines]
    out.append("## Environment\n")
    out.append(_environment(report) + "\n")
    if sources := model_source_rows(report.runs):
        out.append("### Your models\n")
        out.append(table(MODEL_SOURCE_HEADERS, [[cell(c) for c in row] for row in sources], ["l"] * 6) + "\n")
    out.append("## Results\n")
    if not frame.empty and not report.fidelity_measured:
        out.append("_Fidelity is not measured yet (every row has `fidelity: null`); no fidelity columns._\n")
    if not frame.empty:
        out.append(
            "Latency per call (one batch), steady state; p90/p99 are nearest-rank percentiles. "
            f"⚠ marks a median more than {CLIFF_RATIO:g}× the fp32 row of the same model, batch, "
            "threads and loading mode.\n"
        )
    if report.advice is not None:  # no empty part: a report without advice reads as before
        out.append(advice_markdown(report.advice, report.out_dir))
    out.append(_summary(report) + "\n")
    if not frame.empty and frame["status"].ne("ok").any():
        out.append("## Failed and unsupported scenarios\n")
        multi = len(report.runs) > 1
        for _, row in frame[frame["status"].ne("ok")].iterrows():
            where = f" ({code(row['run_id'])})" if multi else ""
            reason = str(row["reason"] or "(no reason)")
            fence = "~~~~" if "```" in reason else "```"
            block = "\n".join("  " + line for line in [fence + "text", *reason.splitlines(), fence])
            out.append(f"- **{cell(row['status'])}** {code(row['scenario_id'])}{where}:\n\n{block}\n")
    out.append(profiles_markdown(report))
    out.append(memory_phases_markdown(report))
    out.append(capacity_markdown(report.capacity, report.out_dir))
    out.append(pipeline_markdown(report.pipeline, report.out_dir))
    out.append(_hygiene(report))
    out.append(text_markdown(report.text, report.out_dir))
    if report.roofline is not None:  # no empty part: a report without one reads as before
        out.append(roofline_markdown(report.roofline, report.out_dir))
    out.append(tradeoffs_markdown(report.tradeoffs, report.out_dir))
    out.append(_comparison(report))
    out.append(_figures(report))
    return "\n".join(part for part in out if part is not None).rstrip() + "\n"
