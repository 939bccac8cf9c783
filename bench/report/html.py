"""report.html: one self-contained page (inline CSS, figures as base64 PNG, a little inline JS).

The page fetches nothing, so it opens from disk, from a CI artifact or from an e-mail.
Everything that comes from a run (model names, reasons, suite names, paths) goes through
html.escape. The inline scripts sort tables on a header click and fill
<div id="render-check"> with what rendered (images decoded, table rows, script errors),
which the browser test reads back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from bench.report.blocks import e, figure_html, section_table
from bench.report.capacity import capacity_html
from bench.report.hygiene import HEADERS as HYGIENE_HEADERS
from bench.report.hygiene import INTRO as HYGIENE_INTRO
from bench.report.hygiene import TEXT_COLUMNS as HYGIENE_TEXT_COLUMNS
from bench.report.model import Report
from bench.report.pipeline import pipeline_html
from bench.report.profiles import OPS_HEADERS, PROFILE_INTRO, memory_phase_caption, memory_phase_columns
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

CSS = """
:root { --ink:#1d2433; --muted:#5d6778; --line:#dfe3ea; --soft:#f5f7fa; --accent:#1f6fb4;
  --ok:#1e7b45; --ok-bg:#e3f4ea; --bad:#b3261e; --bad-bg:#fbe7e6; --na:#5d6778; --na-bg:#eceff3;
  --warn:#8a5a00; --warn-bg:#fff4dc; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--ink);
  font:14px/1.5 -apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
main { max-width:1440px; margin:0 auto; padding:28px 32px 48px; }
h1 { font-size:24px; margin:0 0 4px; letter-spacing:-0.01em; }
h2 { font-size:18px; margin:36px 0 10px; padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:15px; margin:26px 0 6px; }
p { margin:6px 0; }
.meta { color:var(--muted); font-size:13px; }
#summary { font-size:12.5px; }
#summary th, #summary td { padding:5px 7px; }
#summary td.id { font-size:12px; }
code, .mono, td.id { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size:12.5px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:18px 0 4px; }
.card { border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:130px; background:var(--soft); }
.card .n { font-size:22px; font-weight:700; }
.card .l { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card.bad .n { color:var(--bad); } .card.warn .n { color:var(--warn); } .card.ok .n { color:var(--ok); }
.callout { border-radius:8px; padding:10px 14px; margin:14px 0; border:1px solid; }
.callout.warn { background:var(--warn-bg); border-color:#f0d48a; color:#4d3800; }
.callout.info { background:#eef5fc; border-color:#c4dcf2; color:#17324d; }
.callout ul { margin:4px 0 0; padding-left:20px; }
.table-wrap { overflow-x:auto; border:1px solid var(--line); border-radius:8px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:6px 9px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
thead th { background:var(--soft); font-weight:600; position:sticky; top:0; vertical-align:bottom; }
thead th[data-type=num] { text-align:right; }
th .unit { display:block; color:var(--muted); font-weight:400; font-size:11.5px; }
table.sortable thead th { cursor:pointer; user-select:none; }
table.sortable thead th:hover { background:#e9eef5; }
table.sortable thead th .arrow::after { content:"\\00a0\\2195"; color:#b3bac6; font-size:11px; }
table.sortable thead th[aria-sort=ascending] .arrow::after { content:"\\00a0\\25B2"; color:var(--accent); }
table.sortable thead th[aria-sort=descending] .arrow::after { content:"\\00a0\\25BC"; color:var(--accent); }
tbody tr:nth-child(even) { background:#fafbfc; }
tbody tr:hover { background:#f0f5fb; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.id, td.nowrap { white-space:nowrap; }
tr.failed td.id { color:var(--bad); }
tr.unsupported td { color:var(--na); }
tr.cliff { background:#fff7e6 !important; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; }
.badge.ok { background:var(--ok-bg); color:var(--ok); }
.badge.failed { background:var(--bad-bg); color:var(--bad); }
.badge.unsupported { background:var(--na-bg); color:var(--na); }
.reason { display:-webkit-box; -webkit-box-orient:vertical; -webkit-line-clamp:3; overflow:hidden;
  color:var(--muted); font-size:11.5px; line-height:1.35; width:190px; white-space:normal; margin-top:2px; }
.reason.note-inline { color:var(--warn); }
.cliffmark { color:#a04b00; font-weight:700; }
.slower { color:var(--bad); font-weight:600; } .faster { color:var(--ok); font-weight:600; }
table.env { width:auto; min-width:60%; }
table.env th { width:180px; background:var(--soft); }
pre { background:var(--soft); border:1px solid var(--line); border-radius:6px; padding:8px 10px;
  white-space:pre-wrap; word-break:break-word; font-size:12px; margin:4px 0 12px; }
figure { margin:10px 0 22px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; display:block; }
figcaption { color:var(--muted); font-size:13px; margin:4px 0 8px; max-width:980px; }
.note { color:#4d3800; background:var(--warn-bg); border-radius:6px; padding:6px 10px; margin:6px 0; font-size:13px; }
.empty { color:var(--muted); font-style:italic; padding:12px 0; }
nav.toc { margin:10px 0 0; font-size:13px; }
nav.toc a { color:var(--accent); text-decoration:none; margin-right:14px; }
footer { margin-top:40px; color:var(--muted); font-size:12px; border-top:1px solid var(--line); padding-top:10px; }
"""

# Runs first, before anything else can fail: collects script and resource errors.
HEAD_JS = """
window.__reportErrors = [];
window.addEventListener('error', function (ev) {
  var tag = ev && ev.target && ev.target.tagName;
  var what = ev && ev.message ? ev.message : (tag ? 'failed to load ' + tag : 'error');
  window.__reportErrors.push(String(what));
}, true);
window.addEventListener('load', function () {
  var images = document.images, decoded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) { decoded++; } }
  var table = document.getElementById('summary');
  var rows = table ? table.tBodies[0].rows.length : 0;
  var check = document.getElementById('render-check');
  if (!check) { return; }
  check.setAttribute('data-images', String(images.length));
  check.setAttribute('data-images-loaded', String(decoded));
  check.setAttribute('data-rows', String(rows));
  check.setAttribute('data-errors', String(window.__reportErrors.length));
  check.setAttribute('data-state', 'done');
  var errors = window.__reportErrors;
  check.textContent = 'render check: ' + decoded + '/' + images.length + ' images, ' + rows + ' rows, '
    + errors.length + ' errors' + (errors.length ? ': ' + errors.join('; ') : '');
});
"""

SORT_JS = """
(function () {
  function key(cell, numeric) {
    var v = cell.getAttribute('data-v');
    if (v === null) { v = cell.textContent.trim(); }
    if (numeric) { var n = parseFloat(v); return isNaN(n) ? null : n; }
    return v === '' ? null : v.toLowerCase();
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.setAttribute('title', 'sort by this column');
      th.addEventListener('click', function () {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        var numeric = th.getAttribute('data-type') === 'num';
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.forEach(function (r, i) { r.__i = i; });
        rows.sort(function (a, b) {
          var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
          if (x === null && y === null) { return a.__i - b.__i; }
          if (x === null) { return 1; }
          if (y === null) { return -1; }
          if (x < y) { return -dir; }
          if (x > y) { return dir; }
          return a.__i - b.__i;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def _num_attr(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return ""


def _th(column: Column) -> str:
    numeric = column.digits != "text"
    unit = f' <span class="unit">{e(column.unit)}</span>' if column.unit else ""
    return f'<th data-type="{"num" if numeric else "text"}">{e(column.title)}<span class="arrow"></span>{unit}</th>'


def _summary_table(report: Report) -> str:
    frame = report.frame
    if frame.empty:
        return '<p class="empty">No result rows: results.jsonl has no readable record.</p>'
    multi = len(report.runs) > 1
    columns = display_columns(fidelity=report.fidelity_measured, variants=report.has_variants, status_first=True)
    heads = ([_th(Column("run_id", "run", digits="text"))] if multi else []) + [_th(c) for c in columns]
    tags = {r.label: f"run {i}" for i, r in enumerate(report.runs, start=1)}
    body = []
    for _, row in frame.iterrows():
        classes = [str(row["status"])] + (["cliff"] if row["cliff"] else [])
        cells = []
        if multi:
            tag = tags.get(row["run_id"], row["run_id"])
            cells.append(f'<td class="mono nowrap" data-v="{e(tag)}" title="{e(row["run_id"])}">{e(tag)}</td>')
        for column in columns:
            value = row[column.key]
            if column.key == "scenario_id":
                cells.append(f'<td class="id">{e(value)}</td>')
            elif column.key == "status":
                reason = first_line(row["reason"])
                reason_html = f'<span class="reason" title="{e(row["reason"])}">{e(reason)}</span>' if reason else ""
                reason_html += "".join(f'<span class="reason note-inline">{e(n)}</span>' for n in row_notes(row))
                cells.append(
                    f'<td data-v="{e(value)}"><span class="badge {e(value)}">{e(value)}</span>{reason_html}</td>'
                )
            elif column.key == "vs_fp32":
                text = format_value(value, column.digits)
                if row["cliff"]:
                    text = (
                        f'<span class="cliffmark" title="more than {CLIFF_RATIO:g}× the fp32 median">⚠ {e(text)}</span>'
                    )
                else:
                    text = e(text)
                cells.append(f'<td class="num" data-v="{_num_attr(value)}">{text}</td>')
            else:
                cells.append(f'<td class="num" data-v="{_num_attr(value)}">{e(cell_text(row, column))}</td>')
        body.append(f'<tr class="{" ".join(e(c) for c in classes)}">{"".join(cells)}</tr>')
    return (
        '<div class="table-wrap"><table id="summary" class="sortable">'
        f"<thead><tr>{''.join(heads)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _environment(report: Report) -> str:
    columns = environment_columns(report.runs)
    labels: list[str] = []
    for _, rows in columns:
        labels += [label for label in rows if label not in labels]
    if len(columns) == 1:
        body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in columns[0][1].items())
        return f'<div class="table-wrap" style="display:inline-block"><table class="env">{body}</table></div>'
    head = "<tr><th></th>" + "".join(f"<th>{e(heading)}</th>" for heading, _ in columns) + "</tr>"
    body = ""
    for label in labels:
        values = [rows.get(label, "") for _, rows in columns]
        differs = len(set(values)) > 1 and label not in ("run", "started / finished", "folder")
        style = ' style="background:#fff4dc"' if differs else ""
        body += f"<tr{style}><th>{e(label)}</th>" + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>"
    return (
        '<div class="table-wrap" style="display:inline-block;max-width:100%"><table class="env">'
        f"<thead>{head}</thead><tbody>{body}</tbody></table></div>"
    )


def _model_sources(report: Report) -> str:
    rows = model_source_rows(report.runs)
    if not rows:
        return ""
    headers = [(h, "") for h in MODEL_SOURCE_HEADERS]
    return (
        "<h3>Your models</h3><p>The files and factories the rows measured (sha256: the first 16 hex digits).</p>"
        + section_table("model-sources", headers, rows, [""] * len(headers))
    )


def _problems(report: Report) -> str:
    frame = report.frame
    if frame.empty:
        return ""
    bad = frame[frame["status"].ne("ok")]
    if bad.empty:
        return ""
    multi = len(report.runs) > 1
    tags = {r.label: f"run {i}" for i, r in enumerate(report.runs, start=1)}
    parts = ['<h2 id="problems">Failed and unsupported scenarios</h2>']
    for _, row in bad.iterrows():
        run = f' <span class="meta">({e(tags.get(row["run_id"], ""))}: {e(row["run_id"])})</span>' if multi else ""
        parts.append(
            f'<h3><span class="badge {e(row["status"])}">{e(row["status"])}</span> '
            f"<code>{e(row['scenario_id'])}</code>{run}</h3><pre>{e(row['reason'])}</pre>"
        )
    return "".join(parts)


def _hygiene(report: Report) -> str:
    section = report.hygiene
    if section is None:
        return ""
    classes = ["id" if i == 0 else "" if i in HYGIENE_TEXT_COLUMNS else "num" for i in range(len(HYGIENE_HEADERS))]
    sentences = "".join(f"<li>{e(s)}</li>" for s in section.sentences)
    return (
        f'<h2 id="hygiene">Inference hygiene</h2><p>{e(HYGIENE_INTRO)}</p>'
        + (f"<ul>{sentences}</ul>" if sentences else "")
        + section_table("hygiene-table", HYGIENE_HEADERS, section.rows, classes)
    )


def _comparison(report: Report) -> str:
    comp = report.comparison
    if comp is None:
        return ""
    labels = [r.label for r in report.runs]
    first = labels[0]
    heads = ['<th data-type="text">scenario<span class="arrow"></span></th>']
    for i, label in enumerate(labels, start=1):
        heads.append(
            f'<th data-type="num" title="{e(label)}">run {i} median'
            '<span class="arrow"></span><span class="unit">ms</span></th>'
        )
    for i, label in enumerate(labels[1:], start=2):
        heads.append(
            f'<th data-type="num" title="{e(label)} / {e(first)}">run {i} / run 1<span class="arrow"></span></th>'
        )
    body = []
    for _, row in comp.iterrows():
        cells = [f'<td class="id">{e(row["scenario_id"])}</td>']
        for label in labels:
            value = row[label]
            status = row[f"status:{label}"]
            text = format_value(value) if status == "ok" else status
            cells.append(f'<td class="num" data-v="{_num_attr(value)}">{e(text)}</td>')
        for label in labels[1:]:
            ratio = row[f"{label} / {first}"]
            cls = ""
            if not pd.isna(ratio):
                cls = "slower" if ratio > 1.1 else "faster" if ratio < 1 / 1.1 else ""
            cells.append(f'<td class="num {cls}" data-v="{_num_attr(ratio)}">{e(format_value(ratio, "ratio"))}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    legend = "".join(f"<li>run {i}: <code>{e(label)}</code></li>" for i, label in enumerate(labels, start=1))
    return (
        '<h2 id="comparison">Runs side by side</h2>'
        "<p>Median latency per scenario id in each run, and its ratio to run 1 (above 1: slower than "
        "run 1, red beyond 10 %; below 1: faster). A scenario that is not <em>ok</em> in a run shows "
        f'its status there.</p><ul class="meta">{legend}</ul>'
        f'<div class="table-wrap"><table id="comparison-table" class="sortable"><thead><tr>{"".join(heads)}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _figures(report: Report) -> str:
    if not report.figures:
        return ""
    parts = ['<h2 id="figures">Figures</h2>']
    for figure in report.figures:
        parts.append(figure_html(figure))
        if figure.key == "latency_vs_memory" and not report.fidelity_measured:
            parts.append(
                '<h3 id="fig-latency_vs_fidelity">Latency versus fidelity</h3>'
                '<div class="note">Not drawn: fidelity is not measured yet (every row has '
                "<code>fidelity: null</code>; it is measured against fp32 eager once other precisions "
                "and loading modes exist).</div>"
            )
    return "".join(parts)


def profiles_html(report: Report) -> str:
    """The "Operator profiles" section: per profiled row, its facts, links and top operators."""
    if not report.profiles:
        return ""
    parts = ['<h2 id="profiles">Operator profiles</h2>', f"<p>{e(PROFILE_INTRO)}</p>"]
    for section in report.profiles:
        run = f' <span class="meta">({e(section.run)})</span>' if section.run else ""
        parts.append(f"<h3><code>{e(section.scenario_id)}</code>{run}</h3>")
        if section.status != "ok":
            parts.append(f"<p>Not profiled ({e(section.status)}): {e(section.note)}</p>")
            continue
        links = " · ".join(f'<a href="{e(href)}">{e(label)}</a>' for label, href in section.links)
        parts.append(f"<p>{e('; '.join(section.facts))}. {links}</p>")
        if section.problem:
            parts.append(f'<div class="note">No operator table: {e(section.problem)}</div>')
            continue
        # op name, numbers, input shapes
        kinds = ["id"] + ["num"] * (len(OPS_HEADERS) - 2) + [""]
        heads = "".join(f'<th data-type="{"num" if k == "num" else "text"}">{e(h)}</th>'
                        for k, h in zip(kinds, OPS_HEADERS, strict=True))  # fmt: skip
        rows = "".join(
            "<tr>" + "".join(f'<td class="{k}">{e(c)}</td>' for k, c in zip(kinds, cells, strict=True)) + "</tr>"
            for cells in section.ops_rows
        )
        table = f"<table><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>"
        parts.append(f'<div class="table-wrap">{table}</div>')
    return "".join(parts)


def memory_phases_html(report: Report) -> str:
    """The "Memory by phase" section: one row per ok scenario."""
    frame = report.memory_phases
    if frame.empty:
        return ""
    columns = memory_phase_columns(frame)
    multi = len(report.runs) > 1
    heads = ([_th(Column("run_id", "run", digits="text"))] if multi else []) + [_th(c) for c in columns]
    body = []
    for _, row in frame.iterrows():
        cells = [f'<td class="mono nowrap">{e(row["run_id"])}</td>'] if multi else []
        for column in columns:
            value = row[column.key]
            if column.digits == "text":
                cls = "id" if column.key == "scenario_id" else "nowrap"
                cells.append(f'<td class="{cls}">{e(value)}</td>')
            else:
                text = format_value(value, column.digits)
                cells.append(f'<td class="num" data-v="{_num_attr(value)}">{e(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<h2 id="memory-phases">Memory by phase</h2><p>{e(memory_phase_caption(columns))}</p>'
        f'<div class="table-wrap"><table id="memory-phase-table" class="sortable"><thead><tr>{"".join(heads)}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _cards(report: Report) -> str:
    counts = status_counts(report.frame)
    cliffs = int(report.frame["cliff"].sum()) if not report.frame.empty else 0
    cards = [
        ("", len(report.frame), "scenarios" if len(report.runs) == 1 else f"rows in {len(report.runs)} runs"),
        ("ok", counts["ok"], "ok"),
        ("", counts["unsupported"], "unsupported"),
        ("bad" if counts["failed"] else "", counts["failed"], "failed"),
        ("warn" if cliffs else "", cliffs, f"precision cliffs (&gt;{CLIFF_RATIO:g}× fp32)"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {cls}"><div class="n">{n}</div><div class="l">{label}</div></div>'
            for cls, n, label in cards
        )
        + "</div>"
        + "".join(f'<p class="overhead">Time: {e(line)}</p>' for line in report.overhead_lines)
    )


def _warnings(messages: Sequence[str]) -> str:
    if not messages:
        return ""
    items = "".join(f"<li>{e(m)}</li>" for m in messages)
    return f'<div class="callout warn" id="warnings"><strong>Warnings</strong><ul>{items}</ul></div>'


def _toc(report: Report) -> str:
    links: Iterable[tuple[str, str]] = [("environment", "Environment"), ("results", "Results")]
    links = list(links)
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
    if report.comparison is not None:
        links.append(("comparison", "Runs side by side"))
    if report.figures:
        links.append(("figures", "Figures"))
    return '<nav class="toc">' + "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in links) + "</nav>"


def render_html(report: Report) -> str:
    runs = ", ".join(r.label for r in report.runs)
    fidelity_note = (
        ""
        if report.fidelity_measured or report.frame.empty
        else '<div class="callout info">Fidelity (agreement with fp32 eager) is not measured yet: every '
        "row has <code>fidelity: null</code>, so the table has no fidelity columns and only latency "
        "versus memory is drawn.</div>"
    )
    results_intro = (
        "<p>Latency is per call (one batch), steady state; p90/p99 are nearest-rank percentiles of every "
        "kept round. Throughput is batch size / mean latency. Load is file to ready model; first inference "
        "is timed alone. Click a column header to sort. "
        f'<span class="cliffmark">⚠</span> marks a precision cliff: a median more than {CLIFF_RATIO:g}× the '
        "fp32 row of the same model, batch, threads and loading mode.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(report.title)}</title>
<script>{HEAD_JS}</script>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>{e(report.title)}</h1>
<div class="meta">Run{"s" if len(report.runs) > 1 else ""}: <span class="mono">{e(runs)}</span>
 · generated {e(report.generated_at)} by bench {e(report.bench_version)}</div>
{_toc(report)}
{_warnings(report.warnings)}
{_cards(report)}
<h2 id="environment">Environment</h2>
{_environment(report)}
{_model_sources(report)}
<h2 id="results">Results</h2>
{fidelity_note}
{results_intro if not report.frame.empty else ""}
{_summary_table(report)}
{_problems(report)}
{profiles_html(report)}
{memory_phases_html(report)}
{capacity_html(report.capacity)}
{pipeline_html(report.pipeline)}
{_hygiene(report)}
{text_html(report.text)}
{tradeoffs_html(report.tradeoffs)}
{_comparison(report)}
{_figures(report)}
<footer>Raw data: results.csv (one row per scenario), results.jsonl, benchmark/*.json, rss/*.csv,
profile/*/ (with profile: true).
<div id="render-check" data-state="pending">render check: scripts did not run</div></footer>
</main>
<script>{SORT_JS}</script>
</body>
</html>
"""
