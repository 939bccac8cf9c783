"""The history in a real PostgreSQL server (tests/support/postgres_server.py): the same behaviour as the
SQLite file, two `bench run`s recording at once, copying an SQLite history in, and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.demo_runs import DEMO, make_run
from support.postgres_server import free_port

from bench.cli import main
from bench.history import store as history
from bench.history.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseUrl,
    HistoryError,
    RecordAsItRuns,
    export_csv,
    import_history,
    latest_run,
    list_runs,
    open_history,
    record_run,
    run_by_id,
    scenario_history,
)

psycopg = pytest.importorskip("psycopg", reason="the [postgres] extra (psycopg) is not installed")

MLP = "tiny_mlp-b1-t1-fp32-eager"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    """The history location: an SQLite file, or a fresh database on the test server."""
    if request.param == "sqlite":
        return tmp_path / "reports" / "history.sqlite"
    return DatabaseUrl(request.getfixturevalue("pg_url"))


def day_runs(root: Path, count: int) -> list[Path]:
    return [make_run(root, run_id=f"202601{i + 1:02d}-120000-demo", scale=1.0 + i / 10) for i in range(count)]


def test_the_same_behaviour_in_either_store(store, tmp_path, capsys):
    runs = day_runs(tmp_path / "runs", 3)
    assert record_run(store, runs[0], label="main").action == "added"
    assert record_run(store, runs[0]).action == "unchanged"  # idempotent; the label stays
    record_run(store, runs[1], label="pr")
    record_run(store, runs[2], label="main")
    assert [(r.run_id, r.label, r.scenarios, r.ok) for r in list_runs(store)] == [
        (runs[0].name, "main", len(DEMO), 7),
        (runs[1].name, "pr", len(DEMO), 7),
        (runs[2].name, "main", len(DEMO), 7),
    ]
    assert [r.run_id for r in list_runs(store, label="main", limit=1)] == [runs[2].name]
    loaded = run_by_id(store, runs[1].name[:8] + "-120000")  # an unambiguous prefix
    folder = history.load_run(runs[1], with_round_times=True)
    assert loaded.run_id == runs[1].name and loaded.results.keys() == folder.results.keys()
    for sid, result in folder.results.items():
        assert loaded.results[sid].record == result.record
        assert loaded.results[sid].round_times == result.round_times  # float64, bit for bit
    assert latest_run(store, "main").run_id == runs[2].name
    assert latest_run(store, "main", exclude_run_id=runs[2].name).run_id == runs[0].name
    with pytest.raises(history.UserError, match="ambiguous"):
        run_by_id(store, "202601")
    points = scenario_history(store, MLP)
    assert [p.run_id for p in points] == [r.name for r in runs]
    assert points[1].value == pytest.approx(points[0].value * 1.1)
    assert points[0].fingerprint == folder.results[MLP].record.environment_fingerprint
    out = tmp_path / "rows.csv"
    assert export_csv(store, out, with_round_times=True) == 3 * len(DEMO)
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["run.run_id"] == runs[0].name and json.loads(rows[0]["round_times_s"]) is not None
    # the command line, on the same history: list, a scenario's trend, compare against a label
    assert main(["history", "--history", store.url if isinstance(store, DatabaseUrl) else str(store)]) == 0
    assert "3 run(s) in" in capsys.readouterr().out
    where = store.url if isinstance(store, DatabaseUrl) else str(store)
    assert main(["history", "--history", where, "--scenario", MLP]) == 0
    assert f"{MLP}: median latency, 3 run(s)" in capsys.readouterr().out
    status = main(["compare", "--history", where, "--baseline", "pr", runs[2].name, "--allow-env-mismatch"])
    assert status in (0, 1) and runs[1].name in capsys.readouterr().out


def test_the_environment_variable_is_the_default_history(pg_url, tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "runs")
    monkeypatch.setenv("BENCH_HISTORY", pg_url)
    assert main(["history", "import", str(run), "--label", "main"]) == 0
    assert main(["history"]) == 0
    assert run.name in capsys.readouterr().out
    assert [r.run_id for r in list_runs(DatabaseUrl(pg_url))] == [run.name]
    monkeypatch.setenv("BENCH_HISTORY", "mysql://u:secret@db/x")
    with pytest.raises(SystemExit) as exit_:
        main(["history"])
    assert exit_.value.code == 2 and "secret" not in capsys.readouterr().err


def test_migrations_upgrade_an_old_database_without_losing_data(pg_url):
    url = DatabaseUrl(pg_url)
    old = history.Db(psycopg.connect(pg_url, autocommit=True), history._Postgres())
    history._migrate(old, url, MIGRATIONS[:1])  # a database written by the first schema
    record = {
        "scenario_id": "s",
        "status": "ok",
        "latency_s": {"median": 0.001, "p90": 0.002},
        "first_inference_s": 0.5,
    }
    old.execute(
        "INSERT INTO runs (run_id, environment_json, run_json, recorded_at, label) "
        "VALUES ('r1', '{}', '{}', 'now', 'keep') RETURNING id"
    )
    old.execute(
        "INSERT INTO results (run, scenario_id, status, median_s, record_json) "
        "SELECT id, 's', 'ok', 0.001, ? FROM runs",
        (json.dumps(record),),
    )
    old.close()
    for _ in range(2):  # upgrading, then opening an up-to-date database, changes nothing more
        with open_history(url) as db:
            assert db.dialect.version(db) == SCHEMA_VERSION
            row = db.execute("SELECT median_s, p90_s, first_inference_s, record_json FROM results").fetchone()
            assert tuple(row)[:3] == (0.001, 0.002, 0.5) and json.loads(row[3]) == record
    assert [(r.run_id, r.label) for r in list_runs(url)] == [("r1", "keep")]


def test_a_database_from_a_newer_bench_is_refused_naming_the_version(pg_url, tmp_path, capsys):
    url = DatabaseUrl(pg_url)
    record_run(url, make_run(tmp_path / "runs"))
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE bench_schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(HistoryError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer bench"):
        list_runs(url)
    with pytest.raises(HistoryError, match="newer bench"):
        record_run(url, make_run(tmp_path / "more", run_id="20260202-000000-x"))
    assert main(["history", "--history", pg_url]) == 2
    with psycopg.connect(pg_url) as db:  # nothing was written
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1


def test_an_empty_database_is_no_history_yet_and_other_tables_are_left_alone(pg_url, tmp_path):
    url = DatabaseUrl(pg_url)
    with pytest.raises(HistoryError, match="no history at postgresql://bench@/"):
        list_runs(url)
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE TABLE runs (name TEXT)")  # someone else's table of the same name
    with pytest.raises(HistoryError, match="a PostgreSQL database but not a bench history"):
        record_run(url, make_run(tmp_path / "runs"))


def test_import_copies_an_sqlite_history_once(pg_url, tmp_path, capsys):
    sqlite_file = tmp_path / "history.sqlite"
    runs = day_runs(tmp_path / "runs", 3)
    for run, label in zip(runs, ["main", "pr", None], strict=True):
        record_run(sqlite_file, run, label=label, branch="dev")
    url = DatabaseUrl(pg_url)
    record_run(url, runs[0], label="main", branch="dev")  # already recorded there by `bench run`
    assert main(["history", "import", str(sqlite_file), "--history", pg_url]) == 0
    out = capsys.readouterr().out
    assert "copied 2 of the 3 run(s)" in out and "already in the history" in out
    assert main(["history", "import", str(sqlite_file), "--history", pg_url]) == 0
    assert "copied 0 of the 3 run(s)" in capsys.readouterr().out
    copied, original = list_runs(url), list_runs(sqlite_file)
    assert copied == original
    for run in runs:
        a, b = run_by_id(url, run.name), run_by_id(sqlite_file, run.name)
        assert {k: (v.record, v.round_times) for k, v in a.results.items()} == {
            k: (v.record, v.round_times) for k, v in b.results.items()
        }
    with psycopg.connect(pg_url) as db:
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 3 * len(DEMO)
    with pytest.raises(HistoryError, match="the history itself"):
        import_history(sqlite_file, sqlite_file)


def test_recording_at_the_same_time_loses_and_doubles_nothing(pg_url, tmp_path):
    url = DatabaseUrl(pg_url)
    runs = [make_run(tmp_path / str(i), run_id=f"2026010{i + 1}-000000-x") for i in range(6)]
    with ThreadPoolExecutor(6) as pool:  # each its own connection, as separate processes would have
        outcomes = list(pool.map(lambda run: record_run(url, run), runs + runs))
    assert sorted(o.action for o in outcomes) == ["added"] * 6 + ["unchanged"] * 6
    with psycopg.connect(pg_url) as db:
        counts = db.execute("SELECT run, count(*) FROM results GROUP BY run").fetchall()
    assert len(counts) == 6 and {count for _, count in counts} == {len(DEMO)}


# --- bad input -----------------------------------------------------------------------------------


def test_a_server_that_cannot_be_reached_is_exit_2_within_seconds_naming_host_and_reason(tmp_path, capsys):
    url = f"postgresql://ci:s3cret-pw@127.0.0.1:{free_port()}/bench"  # nothing listens there
    started = time.monotonic()
    assert main(["history", "--history", url]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10
    assert "cannot connect to the PostgreSQL history" in err and "host 127.0.0.1" in err
    assert "refused" in err.lower() and "s3cret-pw" not in err and "ci:***@127.0.0.1" in err


def test_an_unreachable_history_never_loses_a_run(tmp_path, capsys, monkeypatch):
    """As with an SQLite history that cannot be written: the run goes on, its folder is complete, a
    warning says how to record it later; and the server is not asked again at every row."""
    url = DatabaseUrl(f"postgresql://ci:s3cret-pw@127.0.0.1:{free_port()}/bench")
    run = make_run(tmp_path / "runs")
    before = (run / "results.jsonl").read_bytes()
    attempts = []
    connect = history._Postgres.connect
    monkeypatch.setattr(history._Postgres, "connect", lambda self, *a: attempts.append(1) or connect(self, *a))

    class Quiet:
        def scenario_finished(self, record):
            pass

    recorder = RecordAsItRuns(Quiet(), url, run)
    for _ in range(3):
        recorder.scenario_finished("row")
    assert isinstance(recorder.finish(), history.HistoryUnreachable)  # bench run then exits 2
    assert len(attempts) == 2  # the first row, then finish
    err = capsys.readouterr().err
    assert "was not recorded in the history" in err and "host 127.0.0.1" in err and "s3cret-pw" not in err
    assert "bench history import" in err
    assert (run / "results.jsonl").read_bytes() == before


@pytest.mark.slow
def test_bench_run_keeps_its_run_and_exits_2_when_the_server_cannot_be_reached(run_cli, write_suite, tmp_path):
    suite = write_suite(
        "name: s\ndefaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}\n"
        "matrix: {model: [tiny_mlp]}\n"
    )
    url = f"postgresql://ci:s3cret-pw@127.0.0.1:{free_port()}/bench"
    done = run_cli("run", str(suite), "--history", url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "was not recorded in the history" in done.stderr and "host 127.0.0.1" in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout and "Traceback" not in done.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    (line,) = (run_dir / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["status"] == "ok" and (run_dir / "report.html").exists()


@pytest.mark.parametrize("location", ["mysql://u:pw@db/x", "https://example.com/h.sqlite", "sqlite:h.db"])
def test_an_unsupported_url_is_refused_with_exit_2(location, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["history", "--history", location])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "postgresql://" in err and ":pw@" not in err


def test_without_psycopg_the_extra_is_named(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an environment without the extra sees
    assert main(["history", "--history", "postgresql://bench@localhost/bench"]) == 2
    assert "[postgres]" in capsys.readouterr().err


# --- two real `bench run`s -------------------------------------------------------------------------


@pytest.mark.slow
def test_two_bench_runs_recording_at_once_both_land_whole(pg_url, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: both\n"
        "defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_rounds: 50, max_time_s: 0.05}}\n"
        "matrix: {model: [tiny_mlp], batch_size: [1, 2, 4, 8]}\n"
    )
    command = [
        sys.executable,
        "-m",
        "bench",
        "run",
        str(suite),
        "--reports",
        str(tmp_path / "reports"),
        "--history",
        pg_url,
        "--label",
        "ci",
    ]
    runs = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert "history: recorded run" in err and "(4 scenarios, each as it finished)" in err
    folders = sorted(p for p in (tmp_path / "reports").iterdir() if (p / "results.jsonl").exists())
    assert len(folders) == 2
    url = DatabaseUrl(pg_url)
    assert sorted(r.run_id for r in list_runs(url)) == [f.name for f in folders]
    with psycopg.connect(pg_url) as db:
        stored = db.execute(
            "SELECT runs.run_id, results.scenario_id, results.record_json, results.rounds "
            "FROM results JOIN runs ON results.run = runs.id"
        ).fetchall()
    assert len(stored) == 8 and len({(run_id, sid) for run_id, sid, _, _ in stored}) == 8
    for folder in folders:  # every row on disk is in the history, as written
        lines = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        mine = {sid: (json.loads(record), rounds) for run_id, sid, record, rounds in stored if run_id == folder.name}
        assert {line["scenario_id"]: line for line in lines} == {sid: rec for sid, (rec, _) in mine.items()}
        assert all(rounds and rounds >= 5 for _, rounds in mine.values())
