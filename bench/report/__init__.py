"""Reports: one or more run folders in; report.html, report.md, results.csv and figures/ out.

    from bench.report import write_report
    result = write_report([Path("reports/20261123-143725-quickstart")])
    print(result.html)

`write_report` raises bench.errors.UserError for a folder that is not a run; anything a
run folder lacks or holds half-written becomes a warning in the report, never a traceback.
"""

from __future__ import annotations

from bench.report.core import ReportResult, write_report
from bench.report.model import Report, build_report
from bench.report.tables import comparison_frame, pareto_front, summary_frame

__all__ = [
    "Report",
    "ReportResult",
    "build_report",
    "comparison_frame",
    "pareto_front",
    "summary_frame",
    "write_report",
]
