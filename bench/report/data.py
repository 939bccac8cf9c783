"""Reading run folders for a report: tolerant of half-written, old and incomplete runs.

Nothing here raises on bad content: what cannot be read becomes a warning naming the
file (and the line), and the report says so. Only a folder that is not a run at all is
refused, with a UserError.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.record import RESULTS_FILE, Fidelity, KernelPeaks, ResultRecord, RssFigures, require_run_folder
from bench.stats import LatencyStats

RESULTS = RESULTS_FILE

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
_NESTED = {
    "latency_s": LatencyStats,
    "rss_bytes": RssFigures,
    "peak_rss_kernel_phase_bytes": KernelPeaks,
    "fidelity": Fidelity,
}


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
    path = require_run_folder(Path(path))
    results = path / RESULTS
    warnings: list[str] = []
    info = _read_json_object(path / "run.json", warnings, optional=False)
    environment = _read_json_object(path / "environment.json", warnings, optional=False)
    scenarios_json = _read_json_any(path / "scenarios.json", warnings)
    expected = _scenario_ids(scenarios_json)

    records, old_rows = _read_results(results, info, path, warnings)
    run_id = str(info.get("run_id") or (records[0].run_id if records else "") or path.name)
    suite = info.get("suite") or (records[0].suite if records else None)
    status = info.get("status")
    if status and status != "complete":
        warnings.append(f"{path / 'run.json'}: the run's status is '{status}', not 'complete'")
    run = RunData(
        path=path,
        run_id=run_id,
        label=run_id,
        suite=str(suite) if suite is not None else None,
        info=info,
        environment=environment,
        records=records,
        expected_scenarios=expected,
        warnings=warnings,
        old_schema_rows=old_rows,
        host_environments={
            p.stem: _read_json_object(p, warnings, optional=True) for p in sorted(path.glob("environments/*.json"))
        },
    )
    if run.missing_scenarios:
        warnings.append(
            f"{len(run.missing_scenarios)} of {len(expected)} scenarios have no row in {results}: "
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


def _read_json_any(path: Path, warnings: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError) as exc:
        warnings.append(f"{path}: could not be read ({type(exc).__name__}: {exc})")
        return None


def _read_json_object(path: Path, warnings: list[str], *, optional: bool) -> dict[str, Any]:
    if not path.is_file():
        if not optional:
            warnings.append(f"{path.name} is missing from {path.parent}; the report has less context")
        return {}
    value = _read_json_any(path, warnings)
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
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ids.append(item["id"])
            elif isinstance(item, str):
                ids.append(item)
    return ids


def _read_results(
    path: Path, info: dict[str, Any], run_dir: Path, warnings: list[str]
) -> tuple[list[ResultRecord], list[str]]:
    records: list[ResultRecord] = []
    old_rows: list[str] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        warnings.append(f"{path}: could not be read ({exc.strerror or exc})")
        return records, old_rows
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = all(not rest.strip() for rest in lines[number:])
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            what = "is truncated (the run was probably cut off while writing it)" if last else "is not valid JSON"
            warnings.append(f"{path}: line {number} {what}; it was skipped ({exc.msg})")
            continue
        if not isinstance(data, dict):
            warnings.append(f"{path}: line {number} is not a JSON object; it was skipped")
            continue
        try:
            record, filled = _record_from_dict(data, info, run_dir)
        except (TypeError, ValueError) as exc:
            warnings.append(f"{path}: line {number} is not a result record; it was skipped ({exc})")
            continue
        if filled:
            old_rows.append(record.scenario_id)
            warnings.append(
                f"{path}: line {number} ({record.scenario_id}) comes from an older schema "
                f"(schema_version {data.get('schema_version', 'missing')}); missing: {', '.join(filled)}"
            )
        records.append(record)
    return records, old_rows


def _record_from_dict(data: dict[str, Any], info: dict[str, Any], run_dir: Path) -> tuple[ResultRecord, list[str]]:
    """ResultRecord.from_dict, after filling what an older schema did not write."""
    data = dict(data)
    filled: list[str] = []
    if not data.get("scenario_id"):
        raise ValueError("it has no scenario_id")
    for key, default in (
        ("run_id", info.get("run_id") or run_dir.name),
        ("suite", info.get("suite") or "unknown"),
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
    for key, cls in _NESTED.items():
        value = data.get(key)
        if isinstance(value, dict):
            fields = dataclasses.fields(cls)
            required = [f.name for f in fields if f.default is dataclasses.MISSING]
            missing = [n for n in required if n not in value]
            if missing and cls in (LatencyStats, Fidelity):
                filled.extend(f"{key}.{n}" for n in missing)
            # Required fields an older schema lacked become None; optional ones keep their defaults.
            data[key] = {
                f.name: _number_or_none(value.get(f.name))
                for f in fields
                if f.name in value or f.default is dataclasses.MISSING
            }
        elif value is not None and key in data:
            data[key] = None  # an unexpected shape: drop it rather than the row
    if not isinstance(data.get("files"), dict):
        data["files"] = {}
    record = ResultRecord.from_dict(data)
    return record, filled


def _number_or_none(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    return None


def raw_file(run: RunData, record: ResultRecord, key: str, fallback: str) -> tuple[Path | None, str | None]:
    """The path of one of a record's raw files, or None and why not."""
    relative = record.files.get(key) if isinstance(record.files, dict) else None
    if not relative:
        relative = fallback
    candidate = (run.path / relative).resolve()
    root = run.path.resolve()
    if root != candidate and root not in candidate.parents:
        return None, f"{relative} is outside the run folder"
    if not candidate.is_file():
        return None, f"{relative} is missing"
    return candidate, None


def round_times(run: RunData, record: ResultRecord) -> tuple[list[float] | None, str | None]:
    """Every kept round's time in seconds from benchmark/<scenario>.json, or None and why not."""
    path, why = raw_file(run, record, "benchmark_json", f"benchmark/{record.scenario_id}.json")
    if path is None:
        return None, why
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        values = data["benchmarks"][0]["stats"]["data"]
        times = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v) and v >= 0]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        return None, f"{path.relative_to(run.path.resolve())} could not be read ({type(exc).__name__})"
    if not times:
        return None, f"{path.relative_to(run.path.resolve())} has no round times"
    return times, None


def rss_samples(run: RunData, record: ResultRecord):  # -> tuple[pandas.DataFrame | None, str | None]
    """The RSS samples of rss/<scenario>.csv (t_s, phase, rss_bytes, ...), or None and why not."""
    import pandas as pd

    path, why = raw_file(run, record, "rss_csv", f"rss/{record.scenario_id}.csv")
    if path is None:
        return None, why
    shown = path.relative_to(run.path.resolve())
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises many kinds on broken CSVs
        return None, f"{shown} could not be read ({type(exc).__name__})"
    if "t_s" not in frame.columns or "rss_bytes" not in frame.columns:
        return None, f"{shown} has no t_s/rss_bytes columns"
    for column in ("t_s", "rss_bytes", "rss_anon_bytes", "rss_file_bytes"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.dropna(subset=["t_s", "rss_bytes"])
    if frame.empty:
        return None, f"{shown} has no samples"
    if "phase" not in frame.columns:
        frame["phase"] = "unknown"
    frame["phase"] = frame["phase"].fillna("unknown").astype(str)
    return frame.sort_values("t_s").reset_index(drop=True), None
