"""The report's "Advice" section: what `bench advise` chose, read from the run folder's advice.json.

Shown only for a run folder with an advice.json (bench.results.advice, `read_advice`): one
paragraph saying what to deploy and why the runner-up lost (or why nothing met both, and the
nearest miss), the candidates ranked as the console ranked them with their verdicts and reasons,
and a figure of cost per million requests (requests/s per host when no price was given) against
the floor's fidelity figure, the floor drawn and the winner marked. A fleet advise over host groups
(advice.json `groups`) shows all of that once per group, tagged with the group, after a note naming
the group that serves the target cheapest.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from bench.format.markdown import cell, table
from bench.report.blocks import figure_html, figure_markdown, section_table
from bench.report.data import run_tags
from bench.report.figures import STYLE, FigureResult, _fixed_grid, _save
from bench.results.advice import Advice, CandidateAdvice, ranked, read_advice
from bench.results.runfolder import RunFolder

FIGURE_PREFIX = "advice_"
HEADERS = [
    "#",
    "candidate",
    "verdict",
    "median ms",
    "fidelity",
    "requests/s per host",
    "hosts",
    "per million requests",
    "why",
]
CLASSES = ["num", "text", "text", "num", "num", "num", "num", "num", "text"]
VERDICT_COLORS = {"chosen": "#d62728", "frontier": "#1f77b4", "slo_missed": "#ff7f0e", "below_fidelity": "#7f7f7f"}


@dataclass
class AdviceView:
    tag: str
    advice: Advice
    paragraph: str
    figure: FigureResult | None = None


@dataclass
class AdviceSection:
    views: list[AdviceView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # an advice.json that could not be read


def paragraph(advice: Advice) -> str:
    """What to deploy and why the runner-up lost; or why nothing met both, with the nearest miss."""
    floor = advice.fidelity_floor.text
    head = (
        f"Asked: p99 <= {advice.slo_p99_ms:g} ms at {advice.target_rps:g} requests/s with fidelity {floor}, within "
        f"{advice.budget_s / 60:.3g} min of measuring ({advice.spent_s / 60:.3g} min spent) on {advice.host}."
    )
    w = advice.winner
    if w is None:
        return f"{head} No configuration meets both: {advice.why}."
    text = (
        f"{head} Deploy {w.scenario_id}: {w.precision} under {w.load}, {w.threads} thread(s) per instance, "
        f"batch {w.batch_size}, as {w.layout} per host; {advice.why}."
    )
    if w.stall_note:
        text += f" Note: {w.stall_note}."
    return text + (f" The runner-up, {advice.runner_up}." if advice.runner_up else " No other candidate met both.")


def build_advice(runs: Sequence[RunFolder], fig_dir: Path) -> AdviceSection | None:
    section = AdviceSection()
    tags = run_tags(runs)
    for run in runs:
        if run.path is None:
            continue
        try:
            advice = read_advice(run.path)
        except ValueError as exc:
            section.notes.append(str(exc))
            continue
        if advice is None:
            continue
        if advice.groups:  # a fleet advise: one view per host group, each at its own price
            section.notes.append(f"Across the host groups: {advice.why}.")
        for group, one in advice.groups.items() if advice.groups else [(None, advice)]:
            tag = "-".join(t for t in (tags[run.label], group) if t)
            head = f"Host group {group}: " if group else ""
            view = AdviceView(tag, one, head + paragraph(one))
            name = f"{FIGURE_PREFIX}frontier{f'_{tag}' if tag else ''}.png"
            try:
                with matplotlib.rc_context(STYLE):
                    view.figure = _draw(one, fig_dir / name)
            except Exception as exc:  # a report with a figure missing beats no report
                view.figure = FigureResult(name, "Advice: the frontier", "", notes=[f"Not drawn: {exc}"])
            section.views.append(view)
    return section if section.views or section.notes else None


def _draw(advice: Advice, path: Path) -> FigureResult:
    priced = any(c.cost_per_million is not None for c in advice.candidates)
    label = "cost per million requests, $" if priced else "requests/s per host at the SLO"
    result = FigureResult(
        path.stem,
        "Advice: cost against fidelity",
        f"Each load-tested candidate: {label} against {advice.fidelity_floor.metric} (the dashed line is the "
        "floor); screened candidates without a rate at the bottom edge. The winner is the red star.",
    )
    fig, axes = _fixed_grid(1, 1, panel_w=6.0, panel_h=3.6, top=0.45, bottom=0.6, gap_w=0.0)
    ax = axes[0][0]

    def y_of(c: CandidateAdvice) -> float | None:
        return c.cost_per_million if priced else c.rate_per_host_per_s

    measured = [c for c in advice.candidates if c.fidelity is not None]
    with_y = [c for c in measured if y_of(c) is not None]
    bottom = min((y_of(c) for c in with_y), default=1.0) or 1.0  # type: ignore[type-var]
    for c in measured:
        y = y_of(c)
        color = VERDICT_COLORS.get(c.verdict, "#bbbbbb")
        if c.verdict == "chosen":
            ax.scatter(c.fidelity, y, marker="*", s=220, color=color, zorder=3)
            ax.annotate(
                c.scenario_id, (c.fidelity, y), fontsize=7, xytext=(-8, 6), textcoords="offset points", ha="right"
            )
        elif y is not None:
            ax.scatter(c.fidelity, y, s=36, color=color)
            # labelled points meet the floor, so they sit on the right: their labels go to their left
            ax.annotate(
                c.scenario_id, (c.fidelity, y), fontsize=6, xytext=(-6, -8), textcoords="offset points", ha="right"
            )
        else:
            ax.scatter(c.fidelity, bottom * 0.9, s=14, marker="|", color=color)
    ax.axvline(advice.fidelity_floor.value, color="#888888", linestyle="--", linewidth=0.8)
    ax.margins(x=0.25, y=0.15)  # room for the labels beside the points
    ax.set_xlabel(f"{advice.fidelity_floor.metric} against fp32 eager")
    ax.set_ylabel(label)
    fig.suptitle("Advice: cost against fidelity", fontsize=10)
    result.files.append(_save(fig, path))
    return result


def _rows(advice: Advice) -> list[list[str]]:
    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    return [
        [
            str(i),
            c.scenario_id,
            c.verdict,
            num(c.median_ms, ".3g"),
            num(c.fidelity, ".4g"),
            num(c.rate_per_host_per_s, ",.1f"),
            "-" if c.hosts is None else str(c.hosts),
            "-" if c.cost_per_million is None else f"${c.cost_per_million:,.4f}",
            c.why,
        ]
        for i, c in enumerate(ranked(advice), start=1)
    ]


def advice_html(section: AdviceSection | None) -> str:
    if section is None:
        return ""
    parts = ['<h2 id="advice">Advice</h2>']
    parts += [f'<div class="note">{html.escape(note)}</div>' for note in section.notes]
    for view in section.views:
        if view.tag:
            parts.append(f"<h3>{html.escape(view.tag)}</h3>")
        parts.append(f"<p>{html.escape(view.paragraph)}</p>")
        parts.append(
            section_table(f"advice-{view.tag or 'run'}", [(h, "") for h in HEADERS], _rows(view.advice), CLASSES)
        )
        if view.figure is not None:
            parts.append(figure_html(view.figure))
    return "".join(parts)


def advice_markdown(section: AdviceSection | None, out_dir: Path) -> str:
    if section is None:
        return ""
    out = ["## Advice\n"]
    out += [f"> {cell(note)}\n" for note in section.notes]
    align = ["r", "l", "l", "r", "r", "r", "r", "r", "l"]
    for view in section.views:
        if view.tag:
            out.append(f"### {cell(view.tag)}\n")
        out.append(cell(view.paragraph) + "\n")
        out.append(table(HEADERS, [[cell(c) for c in row] for row in _rows(view.advice)], align) + "\n")
        if view.figure is not None:
            out += figure_markdown(view.figure, out_dir)
    return "\n".join(out)
