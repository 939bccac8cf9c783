"""The history store and the step detection, on hand-made run folders (no worker runs).

SQLite files live in tmp_path; every test takes milliseconds.
"""

from __future__ import annotations

import csv
import json
import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.demo_runs import DEMO, Spec, make_run, update_row

from bench.analysis import changepoint
from bench.analysis.changepoint import detect_steps
from bench.cli import main
from bench.errors import UserError
from bench.history import store as history
from bench.history.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    HistoryError,
    RecordAsItRuns,
    export_csv,
    latest_run,
    list_runs,
    open_history,
    record_run,
    run_by_id,
    scenario_history,
    unpack_times,
)
from bench.results.runfolder import load_run

MLP = "tiny_mlp-b1-t1-fp32-eager"


def set_git(run_dir: Path, sha: str, branch: str | None = None) -> Path:
    env_path = run_dir / "environment.json"
    env = json.loads(env_path.read_text())
    env["git"] = {"sha": sha, "branch": branch, "dirty": False}
    env_path.write_text(json.dumps(env))
    return run_dir


def series_runs(root: Path, scales: list[float], specs: list[Spec] | None = None) -> list[Path]:
    """One run per scale, a day apart, each on its own commit (sha c0, c1, ...)."""
    runs = []
    for i, scale in enumerate(scales):
        run_id = f"202601{i + 1:02d}-120000-demo"
        run = make_run(root, specs or [Spec(median_ms=1.0)], run_id=run_id, scale=scale)
        runs.append(set_git(run, f"c{i:02d}" + "f" * 38, "main"))
    return runs


@pytest.fixture
def hist(tmp_path: Path) -> Path:
    return tmp_path / "reports" / "history.sqlite"


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    return make_run(tmp_path / "runs")


# --- recording -----------------------------------------------------------------------------------


def test_record_run_stores_runs_results_and_raw_round_times(hist, demo):
    outcome = record_run(hist, demo, label="main")
    assert outcome.action == "added" and outcome.scenarios == len(DEMO)
    assert outcome.without_round_times == []

    db = sqlite3.connect(hist)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    run = db.execute(
        "SELECT run_id, git_sha, label, environment_fingerprint, status, environment_json FROM runs"
    ).fetchall()
    assert len(run) == 1
    run_id, sha, label, fingerprint, status, env_json = run[0]
    assert (run_id, sha, label, fingerprint, status) == (
        demo.name,
        "abc123def456",
        "main",
        "f00dfeedf00dfeed",
        "complete",
    )
    assert json.loads(env_json)["cpu_model"] == "Test CPU 9000"

    rows = db.execute(
        "SELECT scenario_id, status, median_s, p90_s, threads, round_times, record_json FROM results"
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(s.scenario_id for s in DEMO)
    by_id = {r[0]: r for r in rows}
    mlp = by_id[MLP]
    raw = json.loads((demo / f"benchmark/{MLP}.json").read_text())["benchmarks"][0]["stats"]["data"]
    assert unpack_times(mlp[5]) == raw  # every round, bit for bit
    record = json.loads(mlp[6])
    assert mlp[2] == record["latency_s"]["median"] and mlp[3] == record["latency_s"]["p90"] and mlp[4] == 1
    failed = by_id["tiny_cnn-b2-t2-fp32-eager"]
    assert failed[1] == "failed" and failed[2] is None and failed[5] is None
    db.close()


def test_importing_twice_changes_nothing_but_a_new_label(hist, demo):
    assert record_run(hist, demo).action == "added"
    again = record_run(hist, demo)
    assert again.action == "unchanged" and "already in the history" in again.describe()
    db = sqlite3.connect(hist)
    assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] == len(DEMO)
    assert record_run(hist, demo, label="nightly").action == "unchanged"
    assert record_run(hist, demo).action == "unchanged"  # no label given: the label stays
    assert list_runs(hist)[0].label == "nightly"
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] == len(DEMO)


def test_a_run_imported_while_running_is_brought_up_to_date(hist, tmp_path):
    run = make_run(tmp_path, DEMO[:2], status="running")
    full = make_run(tmp_path / "later", DEMO[:3])
    assert record_run(hist, run).scenarios == 2
    # the run goes on: a third row is appended and run.json says complete
    (run / "results.jsonl").write_text((full / "results.jsonl").read_text())
    (run / "run.json").write_text((full / "run.json").read_text())
    for path in (full / "benchmark").iterdir():
        (run / "benchmark" / path.name).write_bytes(path.read_bytes())
    outcome = record_run(hist, run)
    assert outcome.action == "updated" and outcome.scenarios == 3
    [row] = list_runs(hist)
    assert (row.scenarios, row.status) == (3, "complete")


def test_a_row_appended_while_the_run_is_recorded_comes_in_next_time(hist, tmp_path, monkeypatch):
    full = make_run(tmp_path / "full", DEMO[:2])
    run = make_run(tmp_path, DEMO[:1], run_id=full.name, status="running")
    for path in (full / "benchmark").iterdir():
        (run / "benchmark" / path.name).write_bytes(path.read_bytes())
    read = history.load_run

    def read_then_append(path, **options):
        snapshot = read(path, **options)
        (run / "results.jsonl").write_text((full / "results.jsonl").read_text())  # the runner's next row
        return snapshot

    monkeypatch.setattr(history, "load_run", read_then_append)
    assert record_run(hist, run).scenarios == 1
    monkeypatch.undo()
    outcome = record_run(hist, run)
    assert (outcome.action, outcome.scenarios) == ("updated", 2)


def test_a_different_run_with_the_same_id_is_refused(hist, tmp_path):
    first = make_run(tmp_path / "a")
    record_run(hist, first)
    other = make_run(tmp_path / "b")
    env = json.loads((other / "environment.json").read_text())
    env["fingerprint"] = "0123456789abcdef"
    (other / "environment.json").write_text(json.dumps(env))
    with pytest.raises(HistoryError, match="different run with the id"):
        record_run(hist, other)


def test_a_failure_while_recording_leaves_nothing_half_written(hist, tmp_path, monkeypatch):
    record_run(hist, make_run(tmp_path / "a", run_id="20260101-000000-a"))
    calls = []

    def broken(db, run_pk, result):
        calls.append(result.scenario_id)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        original(db, run_pk, result)

    original = history._insert_result
    monkeypatch.setattr(history, "_insert_result", broken)
    with pytest.raises(RuntimeError):
        record_run(hist, make_run(tmp_path / "b", run_id="20260102-000000-b"))
    assert [r.run_id for r in list_runs(hist)] == ["20260101-000000-a"]
    assert sqlite3.connect(hist).execute("SELECT count(*) FROM results").fetchone()[0] == len(DEMO)


def test_missing_raw_times_and_a_truncated_line_are_warnings(hist, demo):
    (demo / f"benchmark/{MLP}.json").unlink()
    with open(demo / "results.jsonl", "a") as f:
        f.write('{"scenario_id": "half-writ')
    outcome = record_run(hist, demo)
    assert outcome.without_round_times == [MLP]
    assert any("is missing" in w for w in outcome.warnings)
    assert any("truncated" in w for w in outcome.warnings)
    snapshot = run_by_id(hist, demo.name)
    assert snapshot.results[MLP].round_times is None
    assert snapshot.results["tiny_mlp-b4-t1-fp32-eager"].round_times


def test_not_a_run_folder_is_a_user_error(hist, tmp_path):
    (tmp_path / "empty").mkdir()
    for path, fragment in ((tmp_path / "empty", "not a run folder"), (tmp_path / "nope", "no such folder")):
        with pytest.raises(UserError, match=fragment):
            record_run(hist, path)
    assert not hist.exists()


class Events:
    """The console's side of a runner.Progress: what it was told, in order."""

    def __init__(self):
        self.seen = []

    def scenario_started(self, index, total, scenario_id):
        self.seen.append(("started", scenario_id))

    def scenario_phase(self, phase, elapsed_s):
        self.seen.append(("phase", phase))

    def scenario_finished(self, record):
        self.seen.append(("finished", record))


def test_bench_run_records_each_row_in_the_history_as_it_finishes(hist, tmp_path, capsys):
    full = make_run(tmp_path / "full", DEMO[:3])
    run = make_run(tmp_path, DEMO[:1], run_id=full.name, status="running")
    events = Events()
    recorder = RecordAsItRuns(events, hist, run, label="main")
    for count in (1, 2, 3):
        # the runner appends the row (and its round times) to the run folder, then says it finished
        lines = (full / "results.jsonl").read_text().splitlines(keepends=True)[:count]
        (run / "results.jsonl").write_text("".join(lines))
        for path in (full / "benchmark").iterdir():
            (run / "benchmark" / path.name).write_bytes(path.read_bytes())
        recorder.scenario_started(count, 3, DEMO[count - 1].scenario_id)
        recorder.scenario_phase("measuring", 0.5)
        recorder.scenario_finished(f"row {count}")
        [row] = list_runs(hist)
        assert (row.scenarios, row.status, row.label) == (count, "running", "main")
    assert events.seen[:3] == [("started", DEMO[0].scenario_id), ("phase", "measuring"), ("finished", "row 1")]
    assert len(events.seen) == 9 and capsys.readouterr().err == ""  # the console's line stays clean
    (run / "run.json").write_text((full / "run.json").read_text())  # the run ended
    recorder.finish()
    [row] = list_runs(hist)
    assert (row.scenarios, row.status, row.label) == (3, "complete", "main")
    assert run_by_id(hist, run.name).info["status"] == "complete"
    assert f"history: recorded run {run.name} (3 scenarios, each as it finished)" in capsys.readouterr().err


def test_recording_as_it_runs_reads_only_each_new_row(hist, tmp_path, monkeypatch):
    # It used to re-hash results.jsonl and re-read every row and its round times after each
    # scenario: quadratic over a run. Now the whole folder is read once, then each new row once.
    full = make_run(tmp_path / "full", DEMO[:4])
    run = make_run(tmp_path, DEMO[:1], run_id=full.name, status="running")
    folder_reads, rounds_read = [], []
    read, round_times = history.load_run, history.runfolder.round_times
    monkeypatch.setattr(history, "load_run", lambda path, **options: folder_reads.append(path) or read(path, **options))
    monkeypatch.setattr(
        history.runfolder, "round_times", lambda d, f, sid: rounds_read.append(sid) or round_times(d, f, sid)
    )
    recorder = RecordAsItRuns(Events(), hist, run)
    for count in (1, 2, 3, 4):
        lines = (full / "results.jsonl").read_text().splitlines(keepends=True)[:count]
        (run / "results.jsonl").write_text("".join(lines))
        for path in (full / "benchmark").iterdir():
            (run / "benchmark" / path.name).write_bytes(path.read_bytes())
        recorder.scenario_finished(f"row {count}")
    assert len(folder_reads) == 1  # the first row only
    ok_ids = [spec.scenario_id for spec in DEMO[:4] if spec.status == "ok"]
    assert rounds_read == ok_ids  # each row's round times read once
    monkeypatch.undo()
    assert record_run(hist, run).action == "unchanged"  # the digest kept row by row is the file's
    imported = tmp_path / "imported.sqlite"
    record_run(imported, run)
    assert run_by_id(hist, run.name).results.keys() == run_by_id(imported, run.name).results.keys()
    for sid, result in run_by_id(imported, run.name).results.items():
        assert run_by_id(hist, run.name).results[sid].round_times == result.round_times


def test_a_history_problem_never_stops_the_run(hist, demo, capsys, tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database at all" * 100)
    recorder = RecordAsItRuns(Events(), bad, demo)
    recorder.scenario_finished("row")  # said once, at the end
    assert capsys.readouterr().err == ""
    recorder.finish()
    err = capsys.readouterr().err
    assert "was not recorded in the history" in err and "bench history import" in err
    assert bad.read_bytes() == b"this is not a database at all" * 100


# --- reading -------------------------------------------------------------------------------------


def test_list_runs_filters_and_orders(hist, tmp_path):
    runs = series_runs(tmp_path, [1.0, 1.0, 1.0])
    record_run(hist, runs[0], label="main")
    record_run(hist, runs[2], label="pr")
    record_run(hist, runs[1], label="main", branch="feature")
    assert [r.run_id for r in list_runs(hist)] == [r.name for r in runs]  # by start time, not import order
    assert [r.run_id for r in list_runs(hist, label="main")] == [runs[0].name, runs[1].name]
    assert [r.run_id for r in list_runs(hist, branch="feature")] == [runs[1].name]
    assert record_run(hist, runs[1]).action == "unchanged"  # neither label nor branch given: both stay
    assert [(r.label, r.branch) for r in list_runs(hist, branch="feature")] == [("main", "feature")]
    assert [r.run_id for r in list_runs(hist, limit=2)] == [runs[1].name, runs[2].name]
    row = list_runs(hist)[0]
    assert (row.ok, row.scenarios, row.git_sha[:3], row.branch) == (1, 1, "c00", "main")


def test_a_run_read_back_from_the_history_is_the_run_model_with_older_rows_upgraded(hist, demo):
    rows = [json.loads(line) for line in (demo / "results.jsonl").read_text().splitlines()]
    del rows[0]["runtime"], rows[0]["variant"], rows[0]["worker_kind"]  # written before these fields existed
    rows[0]["from_a_newer_bench"] = {"figure": 1}  # a field this version does not know: kept beside the record
    (demo / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    old_id = rows[0]["scenario_id"]
    record_run(hist, demo)  # the history keeps rows upgraded
    run, folder = run_by_id(hist, demo.name), load_run(demo, with_round_times=True)
    with sqlite3.connect(hist) as db:  # ... as the records the run model holds
        stored = db.execute("SELECT record_json FROM results WHERE scenario_id = ?", (old_id,)).fetchone()[0]
    assert json.loads(stored) == {**folder.results[old_id].record.to_dict(), "from_a_newer_bench": {"figure": 1}}
    assert run.path is None and run.source == f"history:{hist}"
    assert folder.old_schema_rows == [old_id] and run.old_schema_rows == []
    assert [r.scenario_id for r in run.records] == [r["scenario_id"] for r in rows]
    assert {sid: r.record for sid, r in run.results.items()} == {sid: r.record for sid, r in folder.results.items()}
    assert (run.results[old_id].record.runtime, run.results[old_id].record.worker_kind) == ("torch", "fresh")
    # a row an older bench stored as it was written is upgraded when it is read back
    with sqlite3.connect(hist) as db:
        db.execute("UPDATE results SET record_json = ? WHERE scenario_id = ?", (json.dumps(rows[0]), old_id))
    run = run_by_id(hist, demo.name)
    assert run.old_schema_rows == [old_id] and run.results[old_id].record == folder.results[old_id].record
    assert any(f"history:{hist}: line 1 ({old_id}) comes from an older schema" in w for w in run.warnings)


def test_run_by_id_prefix_and_latest_by_label_or_branch(hist, tmp_path):
    runs = series_runs(tmp_path, [1.0, 1.1, 1.2])
    for run, label in zip(runs, ["main", "main", "pr"], strict=True):
        record_run(hist, run, label=label)
    snapshot = run_by_id(hist, runs[1].name)
    assert snapshot.run_id == runs[1].name and snapshot.history_label == "main"
    assert snapshot.results[MLP].round_times == load_run(runs[1], with_round_times=True).results[MLP].round_times
    assert run_by_id(hist, "20260102").run_id == runs[1].name
    with pytest.raises(UserError, match="ambiguous"):
        run_by_id(hist, "202601")
    with pytest.raises(UserError, match="unknown run id 'nope'"):
        run_by_id(hist, "nope")
    with pytest.raises(UserError, match="did you mean 20260102-120000-demo"):
        run_by_id(hist, "20260102-120000-dmeo")
    assert latest_run(hist, "main").run_id == runs[1].name
    # newer `main` runs still going (or killed) or interrupted hold part of the suite: a complete one
    # comes first, then an interrupted one
    for day, status in ((9, "running"), (8, "interrupted")):
        partial = make_run(tmp_path, [Spec(median_ms=1.0)], run_id=f"202601{day:02d}-120000-demo", status=status)
        record_run(hist, partial, label="main")
    assert latest_run(hist, "main").run_id == runs[1].name
    assert latest_run(hist, "main", exclude_run_id=runs[1].name).run_id == runs[0].name
    for day in (9, 8):
        record_run(hist, tmp_path / f"202601{day:02d}-120000-demo", label="wip")
    assert latest_run(hist, "wip").run_id == "20260108-120000-demo"  # interrupted, before the newer one going
    assert latest_run(hist, "pr").run_id == runs[2].name
    assert latest_run(hist, "main").branch == "main"
    with pytest.raises(UserError, match="no run in the history .* has the label or branch 'nightly'.*Labels: main, pr"):
        latest_run(hist, "nightly")


def test_scenario_history_follows_a_metric(hist, tmp_path):
    runs = series_runs(
        tmp_path, [1.0, 1.5], [Spec(median_ms=1.0), Spec(model="tiny_cnn", status="failed", reason="boom")]
    )
    for run in runs:
        record_run(hist, run)
    points = scenario_history(hist, MLP)
    assert [p.run_id for p in points] == [r.name for r in runs]
    assert points[1].value / points[0].value == pytest.approx(1.5)
    rss = scenario_history(hist, MLP, "peak_rss")
    assert rss[0].value == 540 * 1024 * 1024
    # a fleet row carries its host's fingerprint, which is the one its trend point shows
    assert points[0].fingerprint == load_run(runs[0], with_round_times=True).fingerprint
    fleet_run = make_run(tmp_path / "fleet", [Spec(median_ms=1.0)], run_id="20260109-120000-demo")
    update_row(fleet_run, MLP, {"environment_fingerprint": "h0s7f1ngerpr1nt0"})
    record_run(hist, fleet_run)
    assert scenario_history(hist, MLP)[-1].fingerprint == "h0s7f1ngerpr1nt0"
    failed = scenario_history(hist, "tiny_cnn-b1-t1-fp32-eager")
    assert [p.status for p in failed] == ["failed", "failed"] and failed[0].value is None
    with pytest.raises(UserError, match="did you mean tiny_mlp-b1-t1-fp32-eager"):
        scenario_history(hist, "tiny_mlp-b1-t1-fp32-eagre")
    with pytest.raises(UserError, match="unknown metric 'fastness'"):
        scenario_history(hist, MLP, "fastness")


def test_export_csv_flattens_every_field(hist, demo, tmp_path):
    record_run(hist, demo, label="main")
    out = tmp_path / "out" / "history.csv"
    assert export_csv(hist, out, with_round_times=True) == len(DEMO)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(DEMO)
    row = next(r for r in rows if r["scenario_id"] == MLP)
    assert row["run.run_id"] == demo.name and row["run.label"] == "main"
    assert float(row["latency_s.median"]) > 0 and row["rss_bytes.peak"] == str(540 * 1024 * 1024)
    assert row["input_shape"] == "[64]"
    assert len(json.loads(row["round_times_s"])) == 40
    assert export_csv(hist, tmp_path / "one.csv", scenario_id=MLP) == 1


# --- the file itself: migrations, corruption, locks ----------------------------------------------


def test_migrations_upgrade_old_files_without_losing_data(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    history._migrate(history.Db(db, history._SQLite()), path, MIGRATIONS[:1])  # a file written by the first schema
    record = {
        "scenario_id": "s",
        "status": "ok",
        "latency_s": {"median": 0.001, "p90": 0.002},
        "first_inference_s": 0.5,
    }
    db.execute(
        "INSERT INTO runs (run_id, environment_json, run_json, recorded_at, label) "
        "VALUES ('r1', '{}', '{}', 'now', 'keep')"
    )
    db.execute(
        "INSERT INTO results (run, scenario_id, status, median_s, record_json) VALUES (1, 's', 'ok', 0.001, ?)",
        (json.dumps(record),),
    )
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    db.close()

    for _ in range(2):  # upgrading, then opening an up-to-date file, changes nothing more
        with open_history(path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            row = db.execute("SELECT median_s, p90_s, first_inference_s, record_json FROM results").fetchone()
            assert tuple(row)[:3] == (0.001, 0.002, 0.5)
            assert json.loads(row[3]) == record
            assert db.execute("SELECT label FROM runs").fetchone()[0] == "keep"
    assert [r.run_id for r in list_runs(path)] == ["r1"]


def test_a_file_from_a_newer_bench_is_refused_untouched(hist, demo):
    record_run(hist, demo)
    db = sqlite3.connect(hist)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = hist.read_bytes()
    with pytest.raises(HistoryError, match="newer bench"):
        list_runs(hist)
    assert hist.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"SQLite format 3\x00" + b"\xff" * 4000, b"hello, not a database\n" * 50], ids=["garbled", "text"]
)
def test_a_corrupted_history_is_a_clear_error_and_stays_as_it_was(tmp_path, demo, content):
    path = tmp_path / "history.sqlite"
    path.write_bytes(content)
    for call in (lambda: list_runs(path), lambda: record_run(path, demo), lambda: run_by_id(path, "x")):
        with pytest.raises(HistoryError, match="corrupted or not an SQLite file.*bench history import"):
            call()
    assert path.read_bytes() == content


def test_another_sqlite_database_is_not_taken_for_a_history(tmp_path, demo):
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE customers (name TEXT)").connection.commit()
    with pytest.raises(HistoryError, match="not a bench history"):
        record_run(path, demo)


def test_a_missing_history_is_a_clear_error(tmp_path):
    with pytest.raises(HistoryError, match="no history at .*bench history import"):
        list_runs(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()


def test_a_locked_history_waits_then_says_so_and_readers_still_read(hist, tmp_path):
    record_run(hist, make_run(tmp_path / "a", run_id="20260101-000000-a"))
    other = sqlite3.connect(hist, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another `bench run` is writing
    try:
        with pytest.raises(HistoryError, match=r"locked by another process .*waited 0.2 s"):
            record_run(hist, make_run(tmp_path / "b", run_id="20260102-000000-b"), timeout_s=0.2)
        assert [r.run_id for r in list_runs(hist, timeout_s=0.2)] == ["20260101-000000-a"]  # WAL: readers go on
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert record_run(hist, tmp_path / "b" / "20260102-000000-b").action == "added"
    assert sqlite3.connect(hist).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_runs_recorded_at_the_same_time_all_arrive(hist, tmp_path):
    """Several `bench run`s ending together on a fresh file: each waits for the others, none is lost."""
    from concurrent.futures import ThreadPoolExecutor

    runs = [make_run(tmp_path / str(i), run_id=f"2026010{i + 1}-000000-x") for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda run: record_run(hist, run), runs))
    assert [o.action for o in outcomes] == ["added"] * 4
    assert [r.run_id for r in list_runs(hist)] == [r.name for r in runs]
    db = sqlite3.connect(hist)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 4 * len(DEMO)


# --- the command line ----------------------------------------------------------------------------


def test_cli_import_list_show_export(hist, tmp_path, capsys):
    runs = series_runs(tmp_path / "runs", [1.0, 1.01, 0.99, 1.0, 1.3, 1.31, 1.29, 1.3])
    assert main(["history", "import", *map(str, runs), "--history", str(hist), "--label", "main"]) == 0
    out = capsys.readouterr().out
    assert out.count("recorded run") == 8
    assert main(["history", "import", str(runs[0]), "--history", str(hist)]) == 0
    assert "already in the history" in capsys.readouterr().out

    assert main(["history", "--history", str(hist)]) == 0
    out = capsys.readouterr().out
    assert all(r.name in out for r in runs) and "8 run(s)" in out and "c00ffffff" in out

    assert main(["history", "--history", str(hist), "--scenario", MLP]) == 0
    out = capsys.readouterr().out
    step_line = next(line for line in out.splitlines() if "step +" in line)
    assert runs[4].name in step_line and "worse" in step_line
    assert "1 step change(s)" in out and "sha c04ffffff" in out  # the commit where it happened
    assert main(["history", "--history", str(hist), "--scenario", MLP, "--metric", "throughput"]) == 0
    out = capsys.readouterr().out
    step_line = next(line for line in out.splitlines() if "step -" in line)  # throughput fell: worse
    assert runs[4].name in step_line and "worse" in step_line

    page = tmp_path / "trends.html"
    assert main(["history", "--history", str(hist), "--html", str(page)]) == 0
    assert "wrote 1 chart(s) of median latency" in capsys.readouterr().out
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 1 and f"<h2>{MLP}</h2>" in text
    assert f"{runs[4].name} (sha c04ffffff" in text and "+30" in text

    out_csv = tmp_path / "h.csv"
    assert main(["history", "export", str(out_csv), "--history", str(hist)]) == 0
    assert "wrote 8 rows" in capsys.readouterr().out and out_csv.exists()


def test_cli_history_errors_are_one_paragraph_with_status_2(tmp_path, capsys):
    missing = tmp_path / "none.sqlite"
    assert main(["history", "--history", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: no history at") and "Traceback" not in err
    assert main(["history", "import", str(tmp_path / "nope"), "--history", str(missing)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_history_help_reads_well(capsys):
    with pytest.raises(SystemExit):
        main(["history", "--help"])
    out = capsys.readouterr().out
    for fragment in ("import", "export", "--scenario", "--metric", "--history", "examples:"):
        assert fragment in out
    with pytest.raises(SystemExit):
        main(["history", "import", "--help"])
    assert "RUN_DIR" in capsys.readouterr().out


def test_cli_debug_and_history_flags_work_on_either_side_of_the_subcommand(hist, demo, capsys):
    assert main(["history", "--history", str(hist), "import", str(demo)]) == 0
    assert main(["history", "import", str(demo), "--history", str(hist), "--debug"]) == 0
    assert capsys.readouterr().out.count(str(hist)) == 2


# --- step detection ------------------------------------------------------------------------------


def _noisy(rng: random.Random, levels: list[tuple[int, float]], noise: float) -> list[float]:
    return [level * (1 + rng.gauss(0, noise)) for count, level in levels for _ in range(count)]


def test_no_step_in_noise_alone():
    rng = random.Random(1)
    false_steps = sum(len(detect_steps(_noisy(rng, [(40, 1.0)], 0.02)).steps) for _ in range(50))
    assert false_steps <= 2


def test_a_step_is_found_where_it_happened():
    rng = random.Random(2)
    fit = detect_steps(_noisy(rng, [(15, 1.0), (10, 1.2)], 0.01))
    assert [s.index for s in fit.steps] == [15]
    assert fit.steps[0].change == pytest.approx(0.2, abs=0.03)
    assert [(s.start, s.stop) for s in fit.segments] == [(0, 15), (15, 25)]


def test_two_steps_up_and_down():
    rng = random.Random(3)
    fit = detect_steps(_noisy(rng, [(10, 1.0), (10, 0.7), (10, 1.0)], 0.01))
    assert [s.index for s in fit.steps] == [10, 20]
    assert fit.steps[0].change < -0.25 and fit.steps[1].change > 0.35


def test_a_single_odd_run_is_not_a_step_and_small_steps_are_ignored():
    values = [1.0] * 10 + [1.8] + [1.0] * 10
    assert detect_steps(values).steps == []
    small = [1.0] * 10 + [1.03] * 10  # 3 %: below the 5 % threshold
    assert detect_steps(small).steps == []
    assert len(detect_steps(small, threshold=0.02).steps) == 1


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(0.5, 2.0), min_size=0, max_size=30),
    scale=st.floats(1e-6, 1e6),
)
def test_steps_do_not_depend_on_the_unit(values, scale):
    """ms or s, bytes or MiB: the same series gives the same steps."""
    a, b = detect_steps(values), detect_steps([v * scale for v in values])
    assert [s.index for s in a.steps] == [s.index for s in b.steps]
    assert all(s.index > 0 for s in a.steps) and [seg.stop for seg in a.segments][-1:] in ([], [len(values)])


def test_step_detection_edge_cases():
    assert detect_steps([]).steps == [] and detect_steps([1.0]).steps == []
    assert detect_steps([1.0, 2.0, 3.0]).steps == []  # too short for two segments of 2
    assert detect_steps([1.0, 1.0, 2.0, 2.0]).steps[0].index == 2
    assert changepoint.noise_scale([0.0] * 5) == changepoint.NOISE_FLOOR
    with pytest.raises(ValueError):
        detect_steps([1.0, 0.0, 1.0])
