"""The one run model, and the one reader of a run folder (reports/<run-id>/).

`load_run` reads a folder into a `RunFolder`: the model the report, compare, plan, export,
resume and the history all use (the history builds the same model from its store, with
`read_rows`). Rows written by older versions are upgraded by bench.results.record's one table of
defaults and its explicit upgrades.

Tolerant of half-written, old and incomplete runs: nothing here raises on bad content.
What cannot be read becomes a warning that names the file (and the line), appended to
the run's `warnings`, or a `(None, why)` answer for one raw file. Only a folder that
is not a run at all, or a results.jsonl that cannot be opened, is a UserError.

`benchmark_round_times` is the strict reader, for a benchmark JSON a worker has just
written (the runner, selfcheck): it raises on anything that is not one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.results.record import RESULTS_FILE, ResultRecord, record_from_row, upgrade_row

_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(ResultRecord))
RUN_INFO_FILE = "run.json"
ENVIRONMENT_FILE = "environment.json"
SCENARIOS_FILE = "scenarios.json"


def require_run_folder(path: Path) -> Path:
    """`path` if it is a run folder (it holds results.jsonl); otherwise a UserError saying what it is."""
    if not path.exists():
        raise UserError(f"{path}: no such folder (expected a run folder containing {RESULTS_FILE})")
    if not path.is_dir():
        raise UserError(f"{path} is a file, not a run folder (expected a folder containing {RESULTS_FILE})")
    if not (path / RESULTS_FILE).is_file():
        raise UserError(
            f"{path} is not a run folder: it has no {RESULTS_FILE}. "
            "Pass a folder written by `bench run`, e.g. reports/<run-id>/"
        )
    return path


@dataclass(frozen=True)
class ResultLine:
    """One readable line of results.jsonl: a JSON object with a scenario_id, as written."""

    number: int  # 1-based line number
    data: dict[str, Any]


def read_json(path: Path, warnings: list[str]) -> Any:
    """The JSON value in `path`; None when the file is missing (silently) or unreadable (a warning)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as exc:  # an empty file is a JSONDecodeError too
        warnings.append(f"{path}: could not be read ({type(exc).__name__}: {exc})")
        return None


def read_json_object(path: Path, warnings: list[str], *, required: bool = True) -> dict[str, Any]:
    """A JSON object file; {} and a warning when it is missing (if required), unreadable or not an object."""
    if not path.is_file():
        if required:
            warnings.append(f"{path.name} is missing from {path.parent}")
        return {}
    value = read_json(path, warnings)
    if value is None:
        return {}
    if not isinstance(value, dict):
        warnings.append(f"{path}: expected a JSON object, found {type(value).__name__}")
        return {}
    return value


def _scenario_ids(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = value.get("scenarios", [])
    ids: list[str] = []
    if isinstance(value, list):
        for item in value:
            # bench run writes Scenario.to_dict() (`scenario_id`); `id` is kept for hand-made folders.
            scenario_id = item.get("scenario_id", item.get("id")) if isinstance(item, dict) else None
            if isinstance(scenario_id, str):
                ids.append(scenario_id)
            elif isinstance(item, str):
                ids.append(item)
    return ids


def read_result_lines(path: Path, warnings: list[str]) -> list[ResultLine]:
    """Every line of results.jsonl that is a JSON object with a scenario_id; a warning for each other line.

    A line that is not valid JSON is called truncated when it is the last one (a run cut off
    while writing it). Raises UserError only when the file cannot be read at all.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{path} could not be read: {exc.strerror or exc}") from None
    return result_lines_of(text, path, warnings)


def result_lines_of(text: str, path: Path, warnings: list[str]) -> list[ResultLine]:
    """read_result_lines on text already read (e.g. only the lines appended since the last read)."""
    lines = text.split("\n")
    last = max((n for n, line in enumerate(lines, start=1) if line.strip()), default=0)
    out: list[ResultLine] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            what = (
                "is truncated (the run was probably cut off while writing it)"
                if number == last
                else ("is not valid JSON")
            )
            warnings.append(f"{path}: line {number} {what}; it was skipped ({exc.msg})")
            continue
        if not isinstance(data, dict):
            warnings.append(f"{path}: line {number} is not a JSON object; it was skipped")
        elif not isinstance(data.get("scenario_id"), str) or not data["scenario_id"]:
            warnings.append(f"{path}: line {number} is not a result record (it has no scenario_id); it was skipped")
        else:
            out.append(ResultLine(number, data))
    return out


# --- a row's raw files ------------------------------------------------------------------------------


def raw_file(run_dir: Path, files: Any, key: str, fallback: str) -> tuple[Path | None, str | None]:
    """The path of one of a row's raw files (`files[key]`, else the conventional `fallback`), or None and why not."""
    relative = files.get(key) if isinstance(files, Mapping) else None
    if not relative or not isinstance(relative, str):
        relative = fallback
    candidate = (run_dir / relative).resolve()
    root = run_dir.resolve()
    if root != candidate and root not in candidate.parents:
        return None, f"{relative} is outside the run folder"
    if not candidate.is_file():
        return None, f"{relative} is missing"
    return candidate, None


def benchmark_round_times(path: Path) -> list[float]:
    """Every round's time in seconds from a pytest-benchmark JSON, all its benchmarks in order.

    Strict: raises (OSError, ValueError, KeyError, TypeError) on a file that is missing or not one.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    return [float(t) for entry in data["benchmarks"] for t in entry["stats"]["data"]]


def round_times(run_dir: Path, files: Any, scenario_id: str) -> tuple[list[float] | None, str | None]:
    """A row's steady-state round times (benchmark/<scenario>.json), or None and why not."""
    path, why = raw_file(run_dir, files, "benchmark_json", f"benchmark/{scenario_id}.json")
    if path is None:
        return None, why
    shown = path.relative_to(run_dir.resolve())
    try:
        times = benchmark_round_times(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return None, f"{shown} could not be read ({type(exc).__name__})"
    if not times:
        return None, f"{shown} has no round times"
    if not all(math.isfinite(t) and t >= 0 for t in times):
        return None, f"{shown} holds round times that are negative, NaN or infinite"
    return times, None


def _read_csv(
    run_dir: Path, files: Any, key: str, fallback: str, needed: tuple[str, ...], numeric: tuple[str, ...]
):  # -> tuple[pandas.DataFrame | None, str | None]
    """A CSV raw file with `needed` columns, `numeric` ones coerced (rows without a needed number dropped)."""
    import pandas as pd

    path, why = raw_file(run_dir, files, key, fallback)
    if path is None:
        return None, why
    shown = path.relative_to(run_dir.resolve())
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises many kinds on broken CSVs
        return None, f"{shown} could not be read ({type(exc).__name__})"
    if not set(needed) <= set(frame.columns):
        return None, f"{shown} has no {'/'.join(needed)} columns"
    for column in numeric:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=[c for c in needed if c in numeric])
    if frame.empty:
        return None, f"{shown} has no samples"
    if "phase" not in frame.columns:
        frame["phase"] = "unknown"
    frame["phase"] = frame["phase"].fillna("unknown").astype(str)
    return frame.sort_values("t_s", kind="stable").reset_index(drop=True), None


def rss_samples(run_dir: Path, files: Any, scenario_id: str):  # -> tuple[pandas.DataFrame | None, str | None]
    """A row's RSS samples (rss/<scenario>.csv: t_s, phase, rss_bytes, ...), sorted by time, or None and why not."""
    return _read_csv(
        run_dir,
        files,
        "rss_csv",
        f"rss/{scenario_id}.csv",
        ("t_s", "rss_bytes"),
        ("t_s", "rss_bytes", "rss_anon_bytes", "rss_file_bytes"),
    )


def allocation_events(run_dir: Path, files: Any, scenario_id: str):  # -> tuple[pandas.DataFrame | None, str | None]
    """A profiled row's allocation events (profile/<scenario>/memory.csv, by bench.profile), or None and why not."""
    return _read_csv(
        run_dir,
        files,
        "memory_csv",
        f"profile/{scenario_id}/memory.csv",
        ("t_s", "allocated_bytes"),
        ("t_s", "allocated_bytes", "bytes", "call"),
    )


# --- the one run model --------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """One scenario of one run as compare and the history use it: its last row as a record (upgraded to this
    version's shape by bench.results.record) and its raw round times (None when unknown)."""

    scenario_id: str
    record: ResultRecord
    round_times: list[float] | None = None
    # Top-level fields of the row that this version's ResultRecord has no place for (a row a newer bench
    # wrote), as written: the history stores them beside the record, so importing a newer run loses nothing.
    newer_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def reason(self) -> str | None:
        return self.record.reason


@dataclass
class RunFolder:
    """A run as every reader sees it: the report, compare, plan, export, resume and the history.

    Read from its folder by `load_run`, or read back from the history store (bench.history.store), which
    keeps the records (as JSON) and round times but no raw files: then `path` is None. Rows of an older
    schema are upgraded by bench.results.record (one table of defaults); a row that is still no record is
    left out of `records` and `results`, with a warning. Readers get typed records (`records`, and
    `results[...].record`); `lines`, the rows as written, are what resume reads to tell a fleet run.
    """

    path: Path | None  # the run folder; None: read back from the history
    source: str  # the folder, or "history:<location>"
    run_id: str
    suite: str | None
    info: dict[str, Any]  # run.json ({} when missing)
    environment: dict[str, Any]  # environment.json ({} when missing)
    lines: list[ResultLine]  # the rows as written: results.jsonl's readable lines, or the history's rows
    records: list[ResultRecord]  # the rows as records, in the suite's order (whatever order they ran in)
    results: dict[str, ScenarioResult]  # per scenario its last row, for compare and the history
    expected_scenarios: list[str]  # ids from scenarios.json; [] when missing
    started_at: str | None
    git_sha: str | None
    branch: str | None
    history_label: str | None = None  # the label the history recorded the run under
    warnings: list[str] = field(default_factory=list)
    # scenario ids whose rows lacked fields the current schema requires (filled from bench.results.record.ROW_DEFAULTS)
    old_schema_rows: list[str] = field(default_factory=list)
    # fleet runs (bench.measure.fleet): each measuring host's environments/<fingerprint>.json (the history keeps none)
    host_environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    label: str = ""  # the report's name for the run, unique among its runs (bench.report.data.label_runs)

    def __post_init__(self) -> None:
        self.label = self.label or self.run_id

    @property
    def results_path(self) -> Path:
        assert self.path is not None, "a run read back from the history has no results.jsonl"
        return self.path / RESULTS_FILE

    @property
    def missing_scenarios(self) -> list[str]:
        """Scenarios the suite expanded to that have no row (an interrupted run)."""
        have = {r.scenario_id for r in self.records}
        return [s for s in self.expected_scenarios if s not in have]

    @property
    def fingerprint(self) -> str | None:
        fp = self.environment.get("fingerprint")
        if fp:
            return str(fp)
        for result in self.results.values():
            if result.record.environment_fingerprint:
                return str(result.record.environment_fingerprint)
        return None

    def describe(self) -> str:
        parts = [self.run_id]
        if self.git_sha:
            parts.append(f"sha {self.git_sha[:10]}")
        if self.history_label:
            parts.append(f"label {self.history_label}")
        if self.branch:
            parts.append(f"branch {self.branch}")
        return ", ".join(parts)


def load_run(path: Path, *, with_round_times: bool = False) -> RunFolder:
    """Read a run folder: run.json, environment.json, scenarios.json, results.jsonl and each fleet host's
    environment; UserError when `path` is not a run folder.

    `with_round_times`: also read each ok row's raw round times (benchmark/<scenario>.json), for compare and
    the history; a missing one, and a scenario that appears twice (they use its last row), are warnings.
    """
    path = require_run_folder(Path(path))
    warnings: list[str] = []
    info = read_json_object(path / RUN_INFO_FILE, warnings)
    environment = read_json_object(path / ENVIRONMENT_FILE, warnings)
    expected = _scenario_ids(read_json(path / SCENARIOS_FILE, warnings))
    lines = read_result_lines(path / RESULTS_FILE, warnings)
    hosts = {p.stem: read_json_object(p, warnings) for p in sorted(path.glob("environments/*.json"))}
    first = lines[0].data if lines else {}
    run_id = str(info.get("run_id") or first.get("run_id") or path.name)
    suite = info.get("suite") or first.get("suite")
    identity = {"run_id": info.get("run_id") or path.name, "suite": info.get("suite") or "unknown"}
    records, results, old_rows = read_rows(lines, identity, path / RESULTS_FILE, expected, warnings)
    if with_round_times:
        seen: set[str] = set()
        for record in records:
            if record.scenario_id in seen:
                warnings.append(
                    f"{path / RESULTS_FILE}: scenario {record.scenario_id} appears twice; the last row is used"
                )
            seen.add(record.scenario_id)
        for sid, result in results.items():
            if result.status == "ok":
                result.round_times, why = round_times(path, result.record.files, sid)
                if why:
                    warnings.append(f"{sid}: {why}; no raw round times")
    raw = [line.data for line in lines]
    git = environment.get("git") if isinstance(environment.get("git"), dict) else {}
    branch = git.get("branch")
    return RunFolder(
        path=path,
        source=str(path),
        run_id=run_id,
        suite=None if suite is None else str(suite),
        info=info,
        environment=environment,
        lines=lines,
        records=records,
        results=results,
        expected_scenarios=expected,
        started_at=info.get("started_at") or _started_from(raw, run_id),
        git_sha=git.get("sha") or next((r.get("git_sha") for r in raw if r.get("git_sha")), None),
        branch=None if branch in (None, "HEAD") else str(branch),
        warnings=warnings,
        old_schema_rows=old_rows,
        host_environments=hosts,
    )


def read_rows(
    lines: list[ResultLine], identity: dict[str, Any], where: Path | str, expected: list[str], warnings: list[str]
) -> tuple[list[ResultRecord], dict[str, ScenarioResult], list[str]]:
    """The rows as records in the suite's order (`expected`), per scenario its last row, and the ids of rows
    from an older schema; a warning naming `where` and the line for each older row and each row that is no
    record. `identity`: the run_id and suite for rows without them."""
    records: list[ResultRecord] = []
    results: dict[str, ScenarioResult] = {}
    old_rows: list[str] = []
    for line in lines:
        row, filled = upgrade_row(line.data, identity)
        try:
            record, nested = record_from_row(row)
        except (TypeError, ValueError) as exc:
            warnings.append(f"{where}: line {line.number} is not a result record; it was skipped ({exc})")
            continue
        filled += nested
        if filled:
            old_rows.append(record.scenario_id)
            warnings.append(
                f"{where}: line {line.number} ({record.scenario_id}) comes from an older schema "
                f"(schema_version {line.data.get('schema_version', 'missing')}); missing: {', '.join(filled)}"
            )
        records.append(record)
        newer = {key: value for key, value in row.items() if key not in _RECORD_FIELDS}
        results[record.scenario_id] = ScenarioResult(record.scenario_id, record, newer_fields=newer)
    order = {scenario_id: i for i, scenario_id in enumerate(expected)}
    records.sort(key=lambda r: order.get(r.scenario_id, len(order)))
    return records, results, old_rows


def _started_from(records: list[dict[str, Any]], run_id: str) -> str | None:
    times = sorted(str(r["started_at"]) for r in records if r.get("started_at"))
    if times:
        return times[0]
    try:  # run ids start with the UTC time: 20261123-143725-suite
        stamp = dt.datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return stamp.isoformat(timespec="seconds")
