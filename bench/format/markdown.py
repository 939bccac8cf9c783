"""Markdown that GitHub and a terminal both read: the one cell escaper and the one table writer.

Used by the report (report.md), `bench compare --format markdown|github` and `bench plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_ALIGN_MARKS = {"l": ":--", "r": "--:", "": "---"}


def cell(value: Any) -> str:
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


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    """A table of cells already escaped; `align` per column: 'l', 'r' or '' (the renderer's default)."""
    marks = [_ALIGN_MARKS[a] for a in (align or [""] * len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def unit_headers(headers: Sequence[tuple[str, str]]) -> list[str]:
    """(title, unit) headers as Markdown column titles: 'title (unit)'."""
    return [f"{t} ({u})" if u else t for t, u in headers]
