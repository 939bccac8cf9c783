"""Building blocks that the report's renderers (html.py, markdown.py) and its sections share:
escaped HTML tables and figures, and figures in Markdown. Sections import these, never the renderers."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.format.markdown import cell
from bench.report.figures import FigureResult


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def section_table(
    table_id: str, headers: Sequence[tuple[str, str]], rows: Iterable[Sequence[str]], classes: Sequence[str]
) -> str:
    """A section's table: (title, unit) headers, and every cell escaped with its column's CSS class."""
    heads = "".join(f'<th>{e(t)}<span class="unit">{e(u)}</span></th>' if u else f"<th>{e(t)}</th>" for t, u in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{e(v)}</td>' for c, v in zip(classes, row, strict=True)) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="table-wrap"><table id="{e(table_id)}"><thead><tr>{heads}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def figure_html(figure: FigureResult) -> str:
    """A figure's heading, notes, images (inlined as data: URLs: one self-contained file) and caption."""
    parts = [f'<h3 id="fig-{e(figure.key)}">{e(figure.title)}</h3>']
    for note in figure.notes:
        parts.append(f'<div class="note">{e(note)}</div>')
    for path in figure.files:
        try:
            data = base64.b64encode(path.read_bytes()).decode("ascii")
        except OSError as exc:
            parts.append(f'<div class="note">{e(path.name)} could not be read: {e(exc)}</div>')
            continue
        parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(figure.title)}"></figure>')
    if figure.files and figure.caption:
        parts.append(f"<figcaption>{e(figure.caption)}</figcaption>")
    fronts = figure.extra.get("fronts")
    if fronts:
        items = "".join(
            f"<li>{e(panel)}: {', '.join(f'<code>{e(s)}</code>' for s in ids)}</li>" for panel, ids in fronts.items()
        )
        parts.append(f'<details><summary class="meta">Pareto front per panel</summary><ul>{items}</ul></details>')
    return "".join(parts)


def figure_markdown(figure: FigureResult, out_dir: Path) -> list[str]:
    """A figure's notes, image links (relative to the report) and caption."""
    parts = [f"> {cell(note)}\n" for note in figure.notes]
    parts += [f"![{figure.title}]({Path(os.path.relpath(p, out_dir)).as_posix()})\n" for p in figure.files]
    if figure.files and figure.caption:
        parts.append(f"_{figure.caption}_\n")
    return parts
