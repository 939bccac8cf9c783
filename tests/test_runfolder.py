"""bench.results.runfolder: the one reader of run folders, on hand-made folders (no worker runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.demo_runs import DEMO, RUN_ID, Spec, make_record, make_run

from bench.errors import UserError
from bench.results import runfolder

MLP = DEMO[0].scenario_id


def test_a_complete_run_folder_reads_without_warnings(tmp_path):
    folder = runfolder.load_run(make_run(tmp_path))
    assert folder.warnings == []
    assert folder.run_id == RUN_ID and folder.suite == "demo"
    assert folder.environment["fingerprint"] == "f00dfeedf00dfeed" and folder.info["status"] == "complete"
    assert [line.number for line in folder.lines] == list(range(1, len(DEMO) + 1))
    assert folder.expected_scenarios == [s.scenario_id for s in DEMO]
    records, old = folder.records, folder.old_schema_rows
    assert [r.scenario_id for r in records] == [s.scenario_id for s in DEMO] and old == []


def test_every_kind_of_bad_line_is_a_warning_with_its_line_number(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    good = (run_dir / "results.jsonl").read_text()
    second = make_record(Spec(threads=2))[0].to_json()
    bad = ['{"scenario_id": "x" oops', "", '["a list"]', '{"no_id": 1}', '{"scenario_id": ""}', second]
    (run_dir / "results.jsonl").write_text(good + "\n".join(bad) + "\n" + second[:40])
    folder = runfolder.load_run(run_dir)
    assert [line.number for line in folder.lines] == [1, 7]
    joined = "\n".join(folder.warnings)
    assert "line 2 is not valid JSON" in joined
    assert "line 4 is not a JSON object" in joined
    assert "line 5 is not a result record (it has no scenario_id)" in joined
    assert "line 6 is not a result record" in joined
    assert "line 8 is truncated" in joined  # only the last line is called truncated
    assert len(folder.warnings) == 5


def test_a_line_of_invalid_utf8_is_a_warning_not_a_crash(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    with open(run_dir / "results.jsonl", "ab") as f:
        f.write(b'{"run_id": "\xff\xfe\n')
    folder = runfolder.load_run(run_dir)
    assert [r.scenario_id for r in folder.records] == [MLP]
    assert len(folder.warnings) == 1 and "line 2 is truncated" in folder.warnings[0]


def test_empty_and_missing_small_files(tmp_path):
    run_dir = make_run(tmp_path, [])
    (run_dir / "run.json").unlink()
    (run_dir / "environment.json").write_text("")
    (run_dir / "scenarios.json").write_text('{"scenarios": ["a", {"id": "b"}, 3]}')
    folder = runfolder.load_run(run_dir)
    assert folder.lines == [] and folder.info == {} and folder.environment == {}
    assert folder.run_id == RUN_ID  # the folder's name, when nothing says otherwise
    assert folder.expected_scenarios == ["a", "b"]
    assert any("run.json is missing" in w for w in folder.warnings)
    assert any("environment.json: could not be read (JSONDecodeError" in w for w in folder.warnings)
    (run_dir / "environment.json").write_text("[1, 2]")
    assert any("expected a JSON object, found list" in w for w in runfolder.load_run(run_dir).warnings)


def test_not_a_run_folder_or_an_unreadable_results_file_is_a_user_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a run folder"):
        runfolder.load_run(tmp_path / "empty")
    with pytest.raises(UserError, match="no such folder"):
        runfolder.load_run(tmp_path / "nope")
    run_dir = make_run(tmp_path, DEMO[:1])
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "results.jsonl":
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(UserError, match="results.jsonl could not be read: Permission denied"):
        runfolder.load_run(run_dir)


def test_rows_of_an_older_schema_are_filled_and_named(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    old = json.loads(make_record(Spec(model="tiny_cnn"))[0].to_json())
    for key in ("runtime", "files", "status", "schema_version"):
        del old[key]
    old["latency_s"] = {"median": 0.002, "mean": 0.002}
    old["fidelity"] = "not a dict"
    old["profile"] = {"status": "ok", "flops": "many", "explained_ratio": 1.0, "future_field": 3}
    with open(run_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(old) + "\n" + json.dumps({"scenario_id": "bogus", "status": "nonsense"}) + "\n")
    folder = runfolder.load_run(run_dir)
    records, old_rows = folder.records, folder.old_schema_rows
    assert [r.scenario_id for r in records] == [MLP, "tiny_cnn-b1-t1-fp32-eager"]
    assert old_rows == ["tiny_cnn-b1-t1-fp32-eager"]
    filled = records[1]
    assert filled.status == "ok" and filled.runtime == "torch" and filled.files == {} and filled.fidelity is None
    assert filled.latency_s.median == 0.002 and filled.latency_s.p99 is None
    assert (filled.profile.status, filled.profile.flops, filled.profile.explained_ratio) == ("ok", None, 1.0)
    warning = next(w for w in folder.warnings if "older schema" in w)
    assert "line 2" in warning and "runtime" in warning and "latency_s.p99" in warning
    assert any("line 3 is not a result record" in w and "status must be one of" in w for w in folder.warnings)


def test_round_times_from_the_benchmark_json(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    path = run_dir / "benchmark" / f"{MLP}.json"
    files = {"benchmark_json": f"benchmark/{MLP}.json"}
    times, why = runfolder.round_times(run_dir, files, MLP)
    assert why is None and len(times) == 40

    path.write_text(json.dumps({"benchmarks": [{"stats": {"data": [1e-3, 2e-3]}}, {"stats": {"data": [3e-3]}}]}))
    assert runfolder.round_times(run_dir, None, MLP) == ([1e-3, 2e-3, 3e-3], None)  # conventional name
    assert runfolder.benchmark_round_times(path) == [1e-3, 2e-3, 3e-3]
    cases = [
        ('{"benchmarks": [{"stats": {"data": [0.001, NaN]}}]}', "negative, NaN or infinite"),
        ('{"benchmarks": [{"stats": {"data": []}}]}', "has no round times"),
        ('{"benchmarks": [{"stats": {"dat', "could not be read (JSONDecodeError)"),
        ("[]", "could not be read (TypeError)"),
        ("", "could not be read (JSONDecodeError)"),
    ]
    for text, expected in cases:
        path.write_text(text)
        times, why = runfolder.round_times(run_dir, files, MLP)
        assert times is None and expected in why, (text, why)
    with pytest.raises(ValueError):
        runfolder.benchmark_round_times(path)
    assert runfolder.round_times(run_dir, {"benchmark_json": "../../etc/passwd"}, MLP)[1].endswith(
        "is outside the run folder"
    )
    path.unlink()
    assert runfolder.round_times(run_dir, files, MLP) == (None, f"benchmark/{MLP}.json is missing")
    with pytest.raises(FileNotFoundError):
        runfolder.benchmark_round_times(path)


def test_rss_samples_are_sorted_and_tolerate_odd_csvs(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    path = run_dir / "rss" / f"{MLP}.csv"
    path.write_text("t_s,rss_bytes\n0.2,300\n0.1,200\nx,5\n0.3,\n")
    frame, why = runfolder.rss_samples(run_dir, {}, MLP)
    assert why is None and list(frame["t_s"]) == [0.1, 0.2] and set(frame["phase"]) == {"unknown"}
    path.write_text("t_s,phase\n0.1,load\n")
    assert runfolder.rss_samples(run_dir, {}, MLP) == (None, f"rss/{MLP}.csv has no t_s/rss_bytes columns")
    path.write_text("")
    assert "could not be read" in runfolder.rss_samples(run_dir, {}, MLP)[1]
    path.write_text("t_s,rss_bytes\n")
    assert runfolder.rss_samples(run_dir, {}, MLP)[1].endswith("has no samples")


def test_the_scenarios_bench_run_writes_are_the_expected_ones(tmp_path):
    from bench.suite.scenarios import parse_suite

    suite = parse_suite("name: s\nmatrix: {model: [tiny_mlp], batch_size: [1, 2]}\n")
    run_dir = make_run(tmp_path, DEMO[:1])
    (run_dir / "scenarios.json").write_text(json.dumps([s.to_dict() for s in suite.scenarios]))
    folder = runfolder.load_run(run_dir)
    assert folder.expected_scenarios == ["tiny_mlp-b1-t1-fp32-eager", "tiny_mlp-b2-t1-fp32-eager"]
