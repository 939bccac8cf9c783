"""Run folders as the report sees them (bench.runfolder reads them, tolerantly).

Nothing here raises on bad content: what cannot be read becomes a warning naming the
file (and the line), and the report says so. Only a folder that is not a run at all is
refused, with a UserError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.record import ResultRecord
from bench.runfolder import read_folder, result_records


@dataclass
class RunData:
    """One run folder as the report sees it."""

    path: Path
    run_id: str
    label: str  # short, unique among the runs of one report
    suite: str | None
    info: dict[str, Any]  # run.json ({} when missing)
    environment: dict[str, Any]  # environment.json ({} when missing)
    records: list[ResultRecord]
    expected_scenarios: list[str]  # from scenarios.json; [] when missing
    warnings: list[str] = field(default_factory=list)
    # scenario ids whose rows lacked fields the current schema has (filled with defaults)
    old_schema_rows: list[str] = field(default_factory=list)
    # fleet runs (bench.fleet): each measuring host's environment.json, by fingerprint
    host_environments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def missing_scenarios(self) -> list[str]:
        """Scenarios the suite expanded to that have no row (an interrupted run)."""
        have = {r.scenario_id for r in self.records}
        return [s for s in self.expected_scenarios if s not in have]


def load_run(path: Path) -> RunData:
    """Read one run folder; raises UserError when `path` is not a run folder."""
    folder = read_folder(Path(path))
    records, old_rows = result_records(folder)
    # In the suite's order, whatever order they ran in (--shuffle, or a fleet's hosts finishing in turn).
    order = {scenario_id: i for i, scenario_id in enumerate(folder.expected_scenarios)}
    records.sort(key=lambda r: order.get(r.scenario_id, len(order)))
    warnings = folder.warnings
    status = folder.info.get("status")
    if status and status != "complete":
        warnings.append(f"{folder.path / 'run.json'}: the run's status is '{status}', not 'complete'")
    run = RunData(
        path=folder.path,
        run_id=folder.run_id,
        label=folder.run_id,
        suite=folder.suite,
        info=folder.info,
        environment=folder.environment,
        records=records,
        expected_scenarios=folder.expected_scenarios,
        warnings=warnings,
        old_schema_rows=old_rows,
        host_environments=folder.host_environments,
    )
    if run.missing_scenarios:
        expected = folder.expected_scenarios
        warnings.append(
            f"{len(run.missing_scenarios)} of {len(expected)} scenarios have no row in {folder.results_path}: "
            + ", ".join(run.missing_scenarios[:10])
            + (" ..." if len(run.missing_scenarios) > 10 else "")
        )
    return run


def label_runs(runs: list[RunData]) -> None:
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


def run_tags(runs: Sequence[RunData]) -> dict[str, str]:
    """Each run's tag in a section's rows: none for one run, "run N" when runs stand side by side."""
    return {run.label: ("" if len(runs) == 1 else f"run {i}") for i, run in enumerate(runs, start=1)}


def tagged_label(tag: str, record: ResultRecord) -> str:
    """A row's scenario id, with its run's tag when there are several runs."""
    return record.scenario_id + (f" ({tag})" if tag else "")
