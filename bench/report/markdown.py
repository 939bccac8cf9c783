"""report.md: the same report as GitHub-flavoured Markdown, for pull requests and terminals.

Figures are linked as figures/*.png (relative to report.md). Text from a run is put in
code spans or escaped, so a reason or a model name cannot break a table or inject HTML.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.report.capacity import capacity_markdown
from bench.report.core import Report
from bench.report.tables import (
    CLIFF_RATIO,
    cell_text,
    display_columns,
    environment_rows,
    first_line,
    format_value,
    row_notes,
    status_counts,
)


def text(value: Any) -> str:
    """Plain text safe in a Markdown table cell: no HTML, no pipes, no line breaks."""
    s = "" if value is None else str(value)
    s = s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "*`[]":  # intraword _ (avx512_vnni) is no emphasis in GFM: left alone for terminals
        s = s.replace(ch, "\\" + ch)
    return " ".join(s.split())


def code(value: Any) -> str:
    """A code span (literal in GitHub and readable in a terminal); pipes escaped for tables."""
    s = " ".join(("" if value is None else str(value)).split())
    fence = "``" if "`" in s else "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    escaped = s.replace("|", "\\|")
    return f"{fence}{pad}{escaped}{pad}{fence}" if s else ""


def _table(headers: list[str], rows: list[list[str]], align: list[str]) -> str:
    marks = {"l": ":--", "r": "--:"}
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(report: Report) -> str:
    frame = report.frame
    if frame.empty:
        return "_No result rows: results.jsonl has no readable record._"
    columns = display_columns(fidelity=report.fidelity_measured, status_first=False)
    multi = len(report.runs) > 1
    tags = {r.label: f"run {i}" for i, r in enumerate(report.runs, start=1)}
    headers = (["run"] if multi else []) + [c.title + (f" ({c.unit})" if c.unit else "") for c in columns]
    align = (["l"] if multi else []) + ["l" if c.digits == "text" else "r" for c in columns]
    rows = []
    for _, row in frame.iterrows():
        cells = [tags.get(row["run_id"], text(row["run_id"]))] if multi else []
        for column in columns:
            value = row[column.key]
            if column.key == "scenario_id":
                cells.append(code(value))
            elif column.key == "status":
                reason = first_line(row["reason"], 100)
                notes = "".join(f"; {text(n)}" for n in row_notes(row))
                cells.append((f"**{text(value)}**: {code(reason)}" if reason else text(value)) + notes)
            elif column.key == "vs_fp32":
                shown = format_value(value, column.digits)
                cells.append(f"⚠ **{shown}**" if row["cliff"] else shown)
            else:
                cells.append(cell_text(row, column))
        rows.append(cells)
    return _table(headers, rows, align)


def _environment(report: Report) -> str:
    per_run = [dict(environment_rows(run)) for run in report.runs]
    labels: list[str] = []
    for rows in per_run:
        labels += [k for k in rows if k not in labels]
    if len(report.runs) == 1:
        return _table(["", "value"], [[text(k), text(v)] for k, v in per_run[0].items()], ["l", "l"])
    headers = [""] + [f"run {i}" for i in range(1, len(report.runs) + 1)]
    rows = [[text(label)] + [text(r.get(label, "")) for r in per_run] for label in labels]
    return _table(headers, rows, ["l"] * len(headers))


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
            cells.append(format_value(row[label]) if status == "ok" else text(status))
        for label in labels[1:]:
            cells.append(format_value(row[f"{label} / {labels[0]}"], "ratio"))
        rows.append(cells)
    legend = "\n".join(f"- run {i}: {code(label)}" for i, label in enumerate(labels, start=1))
    return (
        "## Runs side by side\n\nMedian latency per scenario id in each run and its ratio to run 1 "
        "(above 1: slower than run 1).\n\n"
        f"{legend}\n\n{_table(headers, rows, ['l'] + ['r'] * (len(headers) - 1))}\n"
    )


def _figures(report: Report) -> str:
    parts = []
    for figure in report.figures:
        parts.append(f"### {figure.title}\n")
        for note in figure.notes:
            parts.append(f"> {text(note)}\n")
        for path in figure.files:
            rel = Path(os.path.relpath(path, report.out_dir)).as_posix()
            parts.append(f"![{figure.title}]({rel})\n")
        if figure.files and figure.caption:
            parts.append(f"_{figure.caption}_\n")
        for panel, ids in (figure.extra.get("fronts") or {}).items():
            parts.append(f"- Pareto front, {text(panel)}: " + ", ".join(code(s) for s in ids))
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
    out = [f"# {text(report.title)}\n", f"Run{'s' if len(report.runs) > 1 else ''}: {runs}  "]
    out.append(f"Generated {report.generated_at} by bench {report.bench_version}\n")
    if report.warnings:
        out.append("> **Warnings**\n>")
        out += [f"> - {text(w)}" for w in report.warnings]
        out.append("")
    out.append(
        f"**{len(frame)}** rows: **{counts['ok']}** ok, **{counts['unsupported']}** unsupported, "
        f"**{counts['failed']}** failed; **{cliffs}** precision cliff(s) (median > {CLIFF_RATIO:g}× fp32).\n"
    )
    out.append("## Environment\n")
    out.append(_environment(report) + "\n")
    out.append("## Results\n")
    if not frame.empty and not report.fidelity_measured:
        out.append("_Fidelity is not measured yet (every row has `fidelity: null`); no fidelity columns._\n")
    if not frame.empty:
        out.append(
            "Latency per call (one batch), steady state; p90/p99 are nearest-rank percentiles. "
            f"⚠ marks a median more than {CLIFF_RATIO:g}× the fp32 row of the same model, batch, "
            "threads and loading mode.\n"
        )
    out.append(_summary(report) + "\n")
    if not frame.empty and frame["status"].ne("ok").any():
        out.append("## Failed and unsupported scenarios\n")
        multi = len(report.runs) > 1
        for _, row in frame[frame["status"].ne("ok")].iterrows():
            where = f" ({code(row['run_id'])})" if multi else ""
            reason = str(row["reason"] or "(no reason)")
            fence = "~~~~" if "```" in reason else "```"
            block = "\n".join("  " + line for line in [fence + "text", *reason.splitlines(), fence])
            out.append(f"- **{text(row['status'])}** {code(row['scenario_id'])}{where}:\n\n{block}\n")
    out.append(capacity_markdown(report.capacity, report.out_dir))
    out.append(_comparison(report))
    out.append(_figures(report))
    return "\n".join(part for part in out if part is not None).rstrip() + "\n"
