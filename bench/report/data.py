"""The report's view of the runs it shows (bench.results.runfolder's RunFolder, read by its load_run): their
labels, the tags of their rows, and the warnings the report adds about each run.

Nothing here raises on bad content: what cannot be read is a warning naming the file (and the
line), and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.results.record import ResultRecord
from bench.results.runfolder import RUN_INFO_FILE, RunFolder


def report_warnings(run: RunFolder) -> list[str]:
    """The run's warnings, and what the report adds: a run that did not complete, scenarios with no row."""
    warnings = list(run.warnings)
    status = run.info.get("status")
    if status and status != "complete":
        warnings.append(f"{run.source}/{RUN_INFO_FILE}: the run's status is '{status}', not 'complete'")
    missing = run.missing_scenarios
    if missing:
        warnings.append(
            f"{len(missing)} of {len(run.expected_scenarios)} scenarios have no row in {run.results_path}: "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
        )
    return warnings


def label_runs(runs: list[RunFolder]) -> None:
    """Give every run a unique label (its run id; the folder path when two ids collide)."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.run_id] = seen.get(run.run_id, 0) + 1
    counters: dict[str, int] = {}
    for run in runs:
        if seen[run.run_id] == 1:
            run.label = run.run_id
        else:
            counters[run.run_id] = counters.get(run.run_id, 0) + 1
            run.label = f"{run.run_id} (#{counters[run.run_id]})"


def run_tags(runs: Sequence[RunFolder]) -> dict[str, str]:
    """Each run's tag in a section's rows: none for one run, "run N" when runs stand side by side."""
    return {run.label: ("" if len(runs) == 1 else f"run {i}") for i, run in enumerate(runs, start=1)}


def tagged_label(tag: str, record: ResultRecord) -> str:
    """A row's scenario id, with its run's tag when there are several runs."""
    return record.scenario_id + (f" ({tag})" if tag else "")
