"""Reading a run folder (reports/<run-id>/): the one reader of the report, the history and compare.

Tolerant of half-written, old and incomplete runs: nothing here raises on bad content.
What cannot be read becomes a warning that names the file (and the line), appended to
the folder's `warnings`, or a `(None, why)` answer for one raw file. Only a folder that
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
from bench.record import NESTED_FIELDS, RESULTS_FILE, Fidelity, ResultRecord
from bench.stats import LatencyStats

RUN_INFO_FILE = "run.json"
ENVIRONMENT_FILE = "environment.json"
SCENARIOS_FILE = "scenarios.json"

# Defaults for ResultRecord's required fields, for rows written by an older schema.
_REQUIRED_DEFAULTS: dict[str, Any] = {
    "model": "unknown",
    "batch_size": None,
    "threads": None,
    "interop_threads": 1,
    "precision": "fp32",
    "load": "eager",
    "runtime": "torch",
    "input_shape": [],
}


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


@dataclass
class RunFolder:
    """A run folder's small files, read; `lines` are the readable rows of results.jsonl."""

    path: Path
    info: dict[str, Any]  # run.json ({} when missing)
    environment: dict[str, Any]  # environment.json ({} when missing)
    lines: list[ResultLine]
    expected_scenarios: list[str]  # ids from scenarios.json; [] when missing
    warnings: list[str] = field(default_factory=list)
    # fleet runs (bench.fleet): each measuring host's environments/<fingerprint>.json
    host_environments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def run_id(self) -> str:
        first = self.lines[0].data.get("run_id") if self.lines else None
        return str(self.info.get("run_id") or first or self.path.name)

    @property
    def suite(self) -> str | None:
        suite = self.info.get("suite") or (self.lines[0].data.get("suite") if self.lines else None)
        return None if suite is None else str(suite)


def read_folder(path: Path) -> RunFolder:
    """Read run.json, environment.json, scenarios.json and results.jsonl; UserError when not a run folder."""
    path = require_run_folder(Path(path))
    warnings: list[str] = []
    info = read_json_object(path / RUN_INFO_FILE, warnings)
    environment = read_json_object(path / ENVIRONMENT_FILE, warnings)
    expected = _scenario_ids(read_json(path / SCENARIOS_FILE, warnings))
    lines = read_result_lines(path / RESULTS_FILE, warnings)
    hosts = {p.stem: read_json_object(p, warnings) for p in sorted(path.glob("environments/*.json"))}
    return RunFolder(path, info, environment, lines, expected, warnings, hosts)


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
            what = "is truncated (the run was probably cut off while writing it)" if number == last else (
                "is not valid JSON"
            )  # fmt: skip
            warnings.append(f"{path}: line {number} {what}; it was skipped ({exc.msg})")
            continue
        if not isinstance(data, dict):
            warnings.append(f"{path}: line {number} is not a JSON object; it was skipped")
        elif not isinstance(data.get("scenario_id"), str) or not data["scenario_id"]:
            warnings.append(f"{path}: line {number} is not a result record (it has no scenario_id); it was skipped")
        else:
            out.append(ResultLine(number, data))
    return out


def result_records(folder: RunFolder) -> tuple[list[ResultRecord], list[str]]:
    """The folder's rows as ResultRecords, and the ids of rows from an older schema (filled with defaults).

    A row that is still no ResultRecord is skipped with a warning in `folder.warnings`.
    """
    records: list[ResultRecord] = []
    old_rows: list[str] = []
    for line in folder.lines:
        try:
            record, filled = _record_from_dict(line.data, folder)
        except (TypeError, ValueError) as exc:
            folder.warnings.append(
                f"{folder.results_path}: line {line.number} is not a result record; it was skipped ({exc})"
            )
            continue
        if filled:
            old_rows.append(record.scenario_id)
            folder.warnings.append(
                f"{folder.results_path}: line {line.number} ({record.scenario_id}) comes from an older schema "
                f"(schema_version {line.data.get('schema_version', 'missing')}); missing: {', '.join(filled)}"
            )
        records.append(record)
    return records, old_rows


def _record_from_dict(data: dict[str, Any], folder: RunFolder) -> tuple[ResultRecord, list[str]]:
    """ResultRecord.from_dict, after filling what an older schema did not write."""
    data = dict(data)
    filled: list[str] = []
    for key, default in (
        ("run_id", folder.info.get("run_id") or folder.path.name),
        ("suite", folder.info.get("suite") or "unknown"),
        *_REQUIRED_DEFAULTS.items(),
    ):
        if key not in data:
            data[key] = default
            filled.append(key)
    if "status" not in data:
        data["status"] = "ok" if data.get("latency_s") else "failed"
        filled.append("status")
    if data["status"] != "ok" and not data.get("reason"):
        data["reason"] = "(no reason recorded)"
    for key, cls in NESTED_FIELDS.items():
        value = data.get(key)
        if isinstance(value, dict):
            fields = dataclasses.fields(cls)
            required = [f.name for f in fields if f.default is dataclasses.MISSING]
            missing = [n for n in required if n not in value]
            if missing and cls in (LatencyStats, Fidelity):
                filled.extend(f"{key}.{n}" for n in missing)
            # Required fields an older schema lacked become None; optional ones keep their defaults.
            data[key] = {
                f.name: _clean(value.get(f.name), str(f.type))
                for f in fields
                if f.name in value or f.default is dataclasses.MISSING
            }
        elif value is not None and key in data:
            data[key] = None  # an unexpected shape: drop it rather than the row
    if not isinstance(data.get("files"), dict):
        data["files"] = {}
    return ResultRecord.from_dict(data), filled


def _clean(value: Any, kind: str) -> Any:
    """A finite number, or a string where the field is one (`kind`: its annotation); else None.

    Lists and mappings (capacity layouts, fleet attempts) pass as they are: from_dict types them."""
    if isinstance(value, bool | list | dict) or value is None:
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, str) and "str" in kind else None


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
        run_dir, files, "rss_csv", f"rss/{scenario_id}.csv", ("t_s", "rss_bytes"),
        ("t_s", "rss_bytes", "rss_anon_bytes", "rss_file_bytes"),
    )  # fmt: skip


def allocation_events(run_dir: Path, files: Any, scenario_id: str):  # -> tuple[pandas.DataFrame | None, str | None]
    """A profiled row's allocation events (profile/<scenario>/memory.csv, bench.profiling), or None and why not."""
    return _read_csv(
        run_dir, files, "memory_csv", f"profile/{scenario_id}/memory.csv", ("t_s", "allocated_bytes"),
        ("t_s", "allocated_bytes", "bytes", "call"),
    )  # fmt: skip


# --- the readers' run model: a run folder as history and compare see it ---------------------------


@dataclass
class ScenarioResult:
    """One scenario of one run: the record as written and its raw round times (None when unknown)."""

    scenario_id: str
    record: dict[str, Any]
    round_times: list[float] | None = None

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "failed")

    @property
    def reason(self) -> str | None:
        return self.record.get("reason")


@dataclass
class RunSnapshot:
    """Everything compare needs of a run, whether read from a run folder or from the history."""

    run_id: str
    source: str  # the folder, or "history:<path>"
    started_at: str | None
    git_sha: str | None
    branch: str | None
    label: str | None
    suite: str | None
    environment: dict[str, Any]
    info: dict[str, Any]
    results: dict[str, ScenarioResult]
    warnings: list[str] = field(default_factory=list)
    # a fleet run folder's environments/<fingerprint>.json (the history keeps none)
    host_environments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        fp = self.environment.get("fingerprint")
        if fp:
            return str(fp)
        for result in self.results.values():
            if result.record.get("environment_fingerprint"):
                return str(result.record["environment_fingerprint"])
        return None

    def describe(self) -> str:
        parts = [self.run_id]
        if self.git_sha:
            parts.append(f"sha {self.git_sha[:10]}")
        if self.label:
            parts.append(f"label {self.label}")
        if self.branch:
            parts.append(f"branch {self.branch}")
        return ", ".join(parts)


def read_run_folder(path: Path) -> RunSnapshot:
    """A run folder written by `bench run`; UserError when it is not one.

    Tolerant like the report (bench.runfolder): a truncated last line or a missing
    benchmark JSON becomes a warning, not an error. Records are kept as written.
    """
    folder = read_folder(Path(path))
    warnings = folder.warnings
    records = [line.data for line in folder.lines]
    results: dict[str, ScenarioResult] = {}
    for record in records:
        sid = record["scenario_id"]
        if sid in results:
            warnings.append(f"{folder.results_path}: scenario {sid} appears twice; the last row is used")
        rounds = None
        if record.get("status") == "ok":
            rounds, why = round_times(folder.path, record.get("files"), sid)
            if why:
                warnings.append(f"{sid}: {why}; no raw round times")
        results[sid] = ScenarioResult(sid, record, rounds)
    environment, info = folder.environment, folder.info
    git = environment.get("git") if isinstance(environment.get("git"), dict) else {}
    sha = git.get("sha") or next((r.get("git_sha") for r in records if r.get("git_sha")), None)
    branch = git.get("branch")
    return RunSnapshot(
        run_id=folder.run_id,
        source=str(folder.path),
        started_at=info.get("started_at") or _started_from(records, folder.run_id),
        git_sha=sha,
        branch=None if branch in (None, "HEAD") else str(branch),
        label=None,
        suite=folder.suite,
        environment=environment,
        info=info,
        results=results,
        warnings=warnings,
        host_environments=folder.host_environments,
    )


def _started_from(records: list[dict[str, Any]], run_id: str) -> str | None:
    times = sorted(str(r["started_at"]) for r in records if r.get("started_at"))
    if times:
        return times[0]
    try:  # run ids start with the UTC time: 20261123-143725-suite
        stamp = dt.datetime.strptime(run_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return stamp.isoformat(timespec="seconds")
