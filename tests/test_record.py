"""ResultRecord: the JSON contract, appending rows to results.jsonl, and rows of older schemas upgraded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results.record import (
    NESTED_FIELDS,
    ROW_DEFAULTS,
    SCHEMA_VERSION,
    UPGRADES,
    Fidelity,
    KernelPeaks,
    ResultRecord,
    RssFigures,
    append_record,
    record_from_row,
    upgrade_row,
)
from bench.results.runfolder import load_run
from bench.results.stats import LatencyStats

REQUIRED = dict(
    run_id="20250101-000000-demo",
    scenario_id="tiny_mlp-b1-t1-fp32-eager",
    suite="demo",
    model="tiny_mlp",
    batch_size=1,
    threads=1,
    interop_threads=1,
    precision="fp32",
    load="eager",
    runtime="torch",
    input_shape=[64],
)


def minimal(**overrides) -> ResultRecord:
    values = {**REQUIRED, "status": "ok", **overrides}
    return ResultRecord(**values)


def full() -> ResultRecord:
    return ResultRecord(
        **REQUIRED,
        status="ok",
        artifact_bytes=123_456,
        artifact_sha256="ab" * 32,
        load_s=0.125,
        first_inference_s=0.0625,
        latency_s=LatencyStats.from_times([0.001, 0.002, 0.003, 0.0041]),
        throughput_samples_per_s=412.5,
        rss_bytes=RssFigures(
            before_load=100,
            after_load=200,
            after_first_inference=300,
            peak=400,
            peak_anon=350,
            peak_file=50,
            peak_uss=380,
            peak_worker_lifetime=410,
        ),
        peak_rss_kernel_bytes=405,
        peak_rss_kernel_phase_bytes=KernelPeaks(load=250, first_inference=320, steady=405),
        peak_rss_rusage_bytes=420,
        torch_num_threads=1,
        torch_num_interop_threads=1,
        cpu_utilization=0.97,
        fidelity=Fidelity(max_abs_error=1e-6, cosine_similarity=0.999999, top1_agreement=1.0),
        percentile_rule="nearest-rank",
        rss_samples=321,
        rss_interval_s=0.01,
        environment_fingerprint="f" * 16,
        started_at="2025-01-01T00:00:00+00:00",
        duration_s=3.5,
        git_sha="0123456789abcdef",
        files={"rss": "raw/x/rss.csv", "stderr": "raw/x/stderr.log"},
    )


def test_full_record_round_trips_through_json():
    record = full()
    text = record.to_json()
    assert "\n" not in text  # one record per line
    data = json.loads(text)
    assert data["latency_s"]["p99"] == record.latency_s.p99
    assert data["rss_bytes"]["peak"] == 400
    assert data["schema_version"] == SCHEMA_VERSION
    again = ResultRecord.from_dict(data)
    assert again == record
    assert isinstance(again.latency_s, LatencyStats)
    assert isinstance(again.rss_bytes, RssFigures)
    assert isinstance(again.peak_rss_kernel_phase_bytes, KernelPeaks)
    assert isinstance(again.fidelity, Fidelity)


def test_minimal_record_round_trips():
    record = minimal()
    assert ResultRecord.from_dict(json.loads(record.to_json())) == record
    assert record.latency_s is None
    assert record.rss_bytes == RssFigures()
    assert record.files == {}


def test_non_ok_record_with_reason_round_trips():
    record = minimal(status="unsupported", reason="fp16 matmul is not supported on this CPU")
    assert ResultRecord.from_dict(json.loads(record.to_json())) == record


def test_to_json_refuses_nan():
    record = minimal(throughput_samples_per_s=float("nan"))
    with pytest.raises(ValueError):
        record.to_json()


@pytest.mark.parametrize("status", ["OK", "passed", "", None])
def test_invalid_status_rejected(status):
    with pytest.raises(ValueError, match="status must be one of"):
        minimal(status=status, reason="x")


@pytest.mark.parametrize("status", ["failed", "unsupported"])
@pytest.mark.parametrize("reason", [None, ""])
def test_non_ok_status_needs_a_reason(status, reason):
    with pytest.raises(ValueError, match=f"a '{status}' record needs a reason"):
        minimal(status=status, reason=reason)


def test_from_dict_rejects_invalid_status():
    data = json.loads(minimal().to_json())
    data["status"] = "exploded"
    with pytest.raises(ValueError, match="status must be one of"):
        ResultRecord.from_dict(data)


def test_from_dict_ignores_unknown_keys_from_newer_schema():
    record = full()
    data = json.loads(record.to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    data["energy_joules"] = 12.5
    data["latency_s"]["p999"] = 0.5
    data["rss_bytes"]["peak_swap"] = 7
    data["peak_rss_kernel_phase_bytes"]["export"] = 9
    data["fidelity"]["top5_agreement"] = 1.0
    again = ResultRecord.from_dict(data)
    assert again.schema_version == SCHEMA_VERSION + 1
    assert dataclass_without_version(again) == dataclass_without_version(record)
    assert not hasattr(again, "energy_joules")


def dataclass_without_version(record: ResultRecord) -> dict:
    data = record.to_dict()
    data.pop("schema_version")
    return data


def test_from_dict_fills_missing_optional_keys_from_older_schema():
    data = {**REQUIRED, "status": "failed", "reason": "worker crashed", "latency_s": None}
    data["rss_bytes"] = {"peak": 1234}  # an older nested block with fewer fields
    record = ResultRecord.from_dict(data)
    assert record.status == "failed"
    assert record.reason == "worker crashed"
    assert record.rss_bytes == RssFigures(peak=1234)
    assert record.peak_rss_kernel_phase_bytes == KernelPeaks()
    assert record.fidelity is None
    assert record.latency_s is None
    assert record.files == {}
    assert record.schema_version == SCHEMA_VERSION
    assert record.cpu_utilization is None


def test_from_dict_missing_required_key_raises_type_error():
    data = dict(REQUIRED, status="ok")
    del data["model"]
    with pytest.raises(TypeError):
        ResultRecord.from_dict(data)


def test_appended_records_read_back_through_the_run_model_as_they_were(tmp_path: Path):
    path = tmp_path / "results.jsonl"
    records = [full(), minimal(status="failed", reason="boom"), minimal(scenario_id="x", threads=2)]
    for record in records:
        append_record(path, record)
    assert path.read_text(encoding="utf-8").count("\n") == 3
    run = load_run(tmp_path)
    assert run.records == records and run.old_schema_rows == []
    assert [w for w in run.warnings if "results.jsonl" in w] == []


def test_an_unversioned_row_is_upgraded_to_version_1_and_filled_from_the_one_table():
    row = {"scenario_id": "old", "model": "tiny_mlp", "latency_s": {"median": 0.002}}
    upgraded, lacking = upgrade_row(row, {"run_id": "r", "suite": "s"})
    assert upgraded["status"] == "ok" and upgraded["schema_version"] == SCHEMA_VERSION  # _update_to_1
    assert {key: upgraded[key] for key in ROW_DEFAULTS if key != "model"} == {
        key: value for key, value in ROW_DEFAULTS.items() if key != "model"
    }
    assert (upgraded["run_id"], upgraded["suite"], upgraded["model"]) == ("r", "s", "tiny_mlp")
    assert lacking == [
        "run_id",
        "suite",
        "batch_size",
        "threads",
        "interop_threads",
        "precision",
        "load",
        "runtime",
        "input_shape",
        "status",
    ]
    assert row == {"scenario_id": "old", "model": "tiny_mlp", "latency_s": {"median": 0.002}}  # not changed
    upgraded["input_shape"].append(3)
    assert ROW_DEFAULTS["input_shape"] == []  # each row gets its own copy of a mutable default


def test_a_current_row_is_unchanged_and_a_row_without_worker_kind_predates_kinds():
    row = minimal(worker_kind=None).to_dict()
    assert upgrade_row(row, {}) == (row, [])  # null is what a row without a worker holds today
    del row["worker_kind"], row["variant"], row["grad_mode"]
    upgraded, lacking = upgrade_row(row, {})
    assert (upgraded["worker_kind"], upgraded["variant"], upgraded["grad_mode"], lacking) == (
        "fresh",
        "dense",
        "inference_mode",
        [],
    )


def test_upgrades_run_in_order_from_the_row_version(monkeypatch):
    seen = []
    monkeypatch.setattr("bench.results.record.SCHEMA_VERSION", 3)
    monkeypatch.setitem(UPGRADES, 2, lambda row: seen.append((2, row.get("renamed"))) or row.update(renamed=True))
    monkeypatch.setitem(UPGRADES, 3, lambda row: seen.append((3, row.get("renamed"))))
    upgraded, _ = upgrade_row(minimal().to_dict(), {})
    assert seen == [(2, None), (3, True)] and upgraded["schema_version"] == 3
    seen.clear()
    upgrade_row({**minimal().to_dict(), "schema_version": 2}, {})
    assert seen == [(3, None)]  # a version-2 row skips the upgrade to 2


def test_nested_fields_are_every_dataclass_field_and_from_dict_types_them():
    assert NESTED_FIELDS["latency_s"] is LatencyStats and NESTED_FIELDS["rss_bytes"] is RssFigures
    assert "files" not in NESTED_FIELDS and "named_inputs" not in NESTED_FIELDS and "status" not in NESTED_FIELDS
    record, filled = record_from_row(
        {**minimal().to_dict(), "latency_s": {"median": 0.002, "p99": float("nan")}, "fidelity": "odd"}
    )
    assert isinstance(record.latency_s, LatencyStats) and record.latency_s.p99 is None and record.fidelity is None
    assert "latency_s.mean" in filled
