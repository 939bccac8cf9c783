"""The trend page of `bench history --html`: a chart per scenario of a metric run after run, with the
fitted levels (bench.analysis.changepoint) and each step marked with the commit where it appeared."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.analysis.changepoint import detect_steps
from bench.errors import UserError
from bench.history.store import DEFAULT_TIMEOUT_S, HistoryLocation, HistoryPoint, scenario_history, scenario_ids
from bench.results.metrics import METRICS, Metric


def _trend_png(scenario_id: str, metric: Metric, points: Sequence[HistoryPoint], threshold: float) -> bytes | None:
    """A chart of one scenario's metric run after run: points, fitted levels, steps marked with their commit."""
    measured = [(i, p) for i, p in enumerate(points) if p.value is not None and p.value > 0]
    if not measured:
        return None
    fit = detect_steps([p.value for _, p in measured], threshold=threshold)
    fig = Figure(figsize=(9, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [i for i, _ in measured]
    ax.plot(xs, [metric.scaled(p.value) for _, p in measured], "o", color="#1f77b4", markersize=4, label=metric.title)
    for segment in fit.segments:
        x0, x1 = measured[segment.start][0], measured[segment.stop - 1][0]
        level = metric.scaled(segment.level)
        ax.hlines(level, x0 - 0.3, x1 + 0.3, colors="#ff7f0e", linewidth=2)
    for step in fit.steps:
        index, point = measured[step.index]
        worse = (step.change > 0) != metric.higher_is_better
        ax.axvline(index - 0.5, color="#d62728" if worse else "#2ca02c", linestyle="--", linewidth=1)
        sha = point.git_sha[:8] if point.git_sha else point.run_id
        ax.annotate(
            f"{step.change:+.1%} at {sha}",
            (index - 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(3, -12),
            fontsize=8,
            color="#d62728" if worse else "#2ca02c",
        )
    for i, p in enumerate(points):
        if p.value is None:
            ax.axvspan(i - 0.4, i + 0.4, color="#cccccc", alpha=0.5)  # not ok in that run
    ticks = list(range(len(points)))
    step_every = max(1, len(points) // 12)
    ax.set_xticks(ticks[::step_every])
    ax.set_xticklabels([(p.git_sha or p.run_id)[:8] for p in points][::step_every], rotation=30, fontsize=7)
    ax.set_ylabel(f"{metric.title} ({metric.display_unit})")
    ax.set_title(scenario_id, fontsize=10)
    ax.set_ylim(0, max(metric.scaled(p.value) for _, p in measured) * 1.25)  # room for the step labels
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_trend_html(
    history_path: HistoryLocation,
    out_path: Path,
    metric: str = "median",
    *,
    scenario_id: str | None = None,
    label: str | None = None,
    branch: str | None = None,
    limit: int | None = None,
    threshold: float = 0.05,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """One self-contained HTML page: a chart per scenario (or the one given) of `metric` over
    the runs, with the fitted levels and the detected steps marked with their commit. Returns
    the number of charts."""
    m = METRICS[metric]
    ids = [scenario_id] if scenario_id else scenario_ids(history_path, timeout_s=timeout_s)
    sections = []
    for sid in ids:
        points = scenario_history(
            history_path, sid, metric, label=label, branch=branch, limit=limit, timeout_s=timeout_s
        )
        png = _trend_png(sid, m, points, threshold)
        measured = [p for p in points if p.value is not None and p.value > 0]
        fit = detect_steps([p.value for p in measured], threshold=threshold)
        steps = "".join(
            f"<li>{html.escape(measured[s.index].run_id)} (sha {html.escape((measured[s.index].git_sha or '-')[:10])})"
            f": {html.escape(m.display(s.before))} &rarr; {html.escape(m.display(s.after))} ({s.change:+.1%})</li>"
            for s in fit.steps
        )
        body = (
            f'<img alt="{html.escape(sid)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            if png
            else "<p>no ok run to chart</p>"
        )
        sections.append(
            f"<section><h2>{html.escape(sid)}</h2>{body}"
            + (f"<ul>{steps}</ul>" if steps else "<p>no step change</p>")
            + "</section>"
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>bench history: {html.escape(m.title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(m.title)} over runs</h1><p>{len(ids)} scenario(s) from {html.escape(str(history_path))}. "
        f"Orange: the fitted levels; dashed: a step change of at least {threshold:.0%} and twice the run-to-run "
        "noise (piecewise-constant L1 fit on log values), labelled with the commit where it appeared; grey: the "
        "scenario was not ok in that run.</p>" + "".join(sections) + "</body></html>"
    )
    out_path = Path(out_path)
    try:
        if out_path.parent != Path():
            out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return len(ids)
