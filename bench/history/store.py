"""The history store: every run's rows and raw round times in one SQLite file.

    from bench.history.store import record_run, list_runs, scenario_history
    record_run(Path("reports/history.sqlite"), Path("reports/20261123-143725-quickstart"), label="main")

Schema (versioned with ``PRAGMA user_version`` and the MIGRATIONS list below; a migration
only ever adds, never drops, user data):

- ``runs``: one row per run: run id, start and end time, suite, git sha / branch / dirty,
  label, environment fingerprint, the whole environment.json and run.json, where it was
  imported from, and a digest of its results.jsonl (re-importing an unchanged run is a no-op;
  a run imported while it was still running is brought up to date).
- ``results``: one row per scenario of a run: indexed key columns (scenario id, model,
  batch, threads, precision, load...), the main figures as columns (median, p90, p99,
  mean latency, throughput, load, first inference, peak RSS), the whole ResultRecord as read
  (``record_json``: its ``to_dict``, so a row of an older version is stored upgraded, and the keys
  of a newer version that this one does not know, as written: nothing a newer bench measured is
  lost), and every steady-state round time (``round_times``: little-endian float64 seconds, from
  the run's benchmark/<scenario>.json), so statistics can be recomputed.

The file is opened in WAL mode (readers never wait for a writer); every write is one
``BEGIN IMMEDIATE`` transaction, so a crash or a second writer never leaves a half-written
run. A writer waits up to `timeout_s` for another one, then gives up with a clear message.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import difflib
import hashlib
import json
import re
import sqlite3
import struct
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.results import runfolder
from bench.results.metrics import METRICS
from bench.results.nospace import NoSpaceLeft, is_no_space
from bench.results.record import RESULTS_FILE
from bench.results.runfolder import ResultLine, RunFolder, ScenarioResult, load_run, read_rows

DEFAULT_HISTORY = Path("reports") / "history.sqlite"
DEFAULT_TIMEOUT_S = 30.0
APPLICATION_ID = 0x62656E63  # "benc": marks the file as a bench history


class HistoryError(UserError):
    """A history file that cannot be used: missing, corrupted, locked, from a newer bench."""


class HistoryUnreachable(HistoryError):
    """A database server that cannot be connected to (down, wrong host, refused credentials)."""


HISTORY_ENV = "BENCH_HISTORY"  # the default history location, for every command (a path or a URL)
POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT_S = 5  # a server that does not answer: a clear error within seconds, not a hang
_URL_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")  # postgresql://..., sqlite:..., https://...


@dataclass(frozen=True)
class DatabaseUrl:
    """A PostgreSQL history: its URL as given (a password included), written masked everywhere."""

    url: str

    @property
    def host(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        # no host: libpq's default, the local Unix socket (or ?host=/folder)
        return parts.hostname or urllib.parse.parse_qs(parts.query).get("host", ["the local socket"])[0]

    def __str__(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@" + netloc.rpartition("@")[2]
        query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


HistoryLocation = Path | DatabaseUrl


def history_location(text: str) -> HistoryLocation:
    """--history's value checked: the one place that decides what a history location may be.

    An SQLite file path, or a postgresql:// (postgres://) URL. Any other URL is refused (it used
    to become a local folder named after its scheme). (An argparse `type`: the error is printed
    with the usage, exit 2.)"""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected the path of an SQLite file, e.g. reports/history.sqlite, or a postgresql:// URL"
        )
    scheme = _URL_SCHEME_RE.match(text)
    if scheme and scheme.group(1).lower() in POSTGRES_SCHEMES:
        return DatabaseUrl(text)
    if scheme:
        shown = str(DatabaseUrl(text))  # whatever the scheme, a password stays out of the message
        raise argparse.ArgumentTypeError(
            f"{shown!r} is a URL bench cannot use: the history is an SQLite file (give its path, e.g. "
            "reports/history.sqlite) or a PostgreSQL database (postgresql://USER@HOST/DB); "
            "for a file whose name has a colon, write ./NAME"
        )
    return Path(text)


def refuse_folder(location: HistoryLocation) -> None:
    """A HistoryError for a history path that is a folder: opening refuses it, and `bench run` says so
    before it measures anything (the run would be complete, and unrecorded)."""
    if isinstance(location, Path) and location.is_dir():
        raise HistoryError(
            f"the history {location} is a folder; --history takes an SQLite file, e.g. reports/history.sqlite"
        )


def history_exists(location: HistoryLocation) -> bool:
    """Whether there may be a history to read: a file that exists, or any database (opening it says)."""
    return isinstance(location, DatabaseUrl) or Path(location).exists()


# --- the database --------------------------------------------------------------------------------


def _psycopg() -> Any:
    try:
        import psycopg  # optional: only a PostgreSQL history needs it
    except ImportError:
        raise HistoryError(
            "a PostgreSQL history needs psycopg 3, which is not installed: "
            "pip install 'cpu-inference-bench[postgres]' (the [postgres] extra)"
        ) from None
    return psycopg


class _Row(tuple):
    """A PostgreSQL row read by position or by column name, as sqlite3.Row is."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._index[key] if isinstance(key, str) else key)


def _pg_row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> _Row:
        row = _Row(values)
        row._index = index
        return row

    return make


class _SQLite:
    """The SQLite file: the schema is written in its types; the version is PRAGMA user_version."""

    name = "an SQLite database"

    def connect(self, path: Path, timeout_s: float) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys = ON")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            with contextlib.suppress(sqlite3.OperationalError):  # e.g. a read-only folder
                db.execute("PRAGMA journal_mode = WAL")
        return db

    def query(self, text: str) -> str:
        return text

    def ddl(self, text: str) -> str:
        return text

    def json_path(self, column: str, keys: Sequence[str], kind: str = "TEXT") -> str:
        return f"json_extract({column}, '$.{'.'.join(keys)}')"

    def begin_write(self, db: Db) -> None:
        db.execute("BEGIN IMMEDIATE")  # the write lock at once, waiting up to the connection's timeout

    def version(self, db: Db) -> int:
        return db.execute("PRAGMA user_version").fetchone()[0]

    def set_version(self, db: Db, number: int) -> None:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {int(number)}")

    def has_tables(self, db: Db) -> bool:
        return db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0

    def is_ours(self, db: Db) -> bool:
        return db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


class _Postgres:
    """A PostgreSQL database: the SQLite types translated, the version in a table, writers taking
    one transaction-scoped advisory lock (as SQLite's BEGIN IMMEDIATE: one writer at a time)."""

    name = "a PostgreSQL database"
    _PLACEHOLDER_RE = re.compile(r"\?|:(\w+)|%")
    _TYPES = (
        (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
        (re.compile(r"\bINTEGER\b"), "BIGINT"),  # byte counts pass 2**31
        (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),  # SQLite's REAL is 8 bytes, PostgreSQL's 4
        (re.compile(r"\bBLOB\b"), "BYTEA"),
    )

    def connect(self, url: DatabaseUrl, timeout_s: float) -> Any:
        psycopg = _psycopg()
        try:
            return psycopg.connect(
                url.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, row_factory=_pg_row_factory
            )
        except psycopg.Error as exc:
            reason = str(exc).strip().replace(urllib.parse.urlsplit(url.url).password or "\0", "***")
            raise HistoryUnreachable(
                f"cannot connect to the PostgreSQL history {url} (host {url.host}): {reason}"
            ) from None

    def query(self, text: str) -> str:
        """? and :name as psycopg's %s and %(name)s (a literal % doubled)."""

        def placeholder(match: re.Match) -> str:
            if match.group(0) == "?":
                return "%s"
            if match.group(0) == "%":
                return "%%"
            return f"%({match.group(1)})s"

        return self._PLACEHOLDER_RE.sub(placeholder, text)

    def ddl(self, text: str) -> str:
        for pattern, replacement in self._TYPES:
            text = pattern.sub(replacement, text)
        return text

    def json_path(self, column: str, keys: Sequence[str], kind: str = "TEXT") -> str:
        path = "{" + ",".join(keys) + "}"
        return f"CAST(CAST({column} AS json) #>> '{path}' AS {self.ddl(kind)})"

    def begin_write(self, db: Db) -> None:
        db.execute("BEGIN")
        db.execute("SELECT set_config('lock_timeout', ?, true)", (f"{int(db.timeout_s * 1000)}ms",))
        db.execute("SELECT pg_advisory_xact_lock(?)", (APPLICATION_ID,))

    def version(self, db: Db) -> int:
        # pg_tables, not to_regclass: a table another writer created while this one waited for the
        # lock is seen by a fresh catalog read, not by the session's name cache
        exists = db.execute(
            "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
            "AND tablename = 'bench_schema_version'"
        )
        if exists.fetchone()[0] == 0:
            return 0
        return db.execute("SELECT coalesce(max(version), 0) FROM bench_schema_version").fetchone()[0]

    def set_version(self, db: Db, number: int) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS bench_schema_version (version INTEGER NOT NULL)")
        db.execute("DELETE FROM bench_schema_version")
        db.execute("INSERT INTO bench_schema_version (version) VALUES (?)", (number,))

    def has_tables(self, db: Db) -> bool:
        # a shared database holds other tables: only bench's own names are in the way
        found = db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_name IN ('runs', 'results')"
        )
        return found.fetchone()[0] > 0

    def is_ours(self, db: Db) -> bool:
        return True  # the version table is bench's mark


class Db:
    """A connection to a history and its dialect: the queries are written once (SQLite's ? and
    :name placeholders, its types in DDL), the dialect translates what differs."""

    def __init__(self, connection: Any, dialect: _SQLite | _Postgres, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.connection, self.dialect, self.timeout_s = connection, dialect, timeout_s

    def execute(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self.connection.execute(self.dialect.query(query), params)

    def ddl(self, statement: str) -> None:
        self.connection.execute(self.dialect.ddl(statement))

    def close(self) -> None:
        self.connection.close()


_METRIC_COLUMNS = {m.column: m for m in METRICS.values()}


def _migration_1(db: Db) -> None:
    db.ddl(
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            started_at TEXT,
            finished_at TEXT,
            status TEXT,
            suite TEXT,
            git_sha TEXT,
            git_dirty INTEGER,
            branch TEXT,
            label TEXT,
            environment_fingerprint TEXT,
            environment_json TEXT NOT NULL,
            run_json TEXT NOT NULL,
            source_path TEXT,
            results_digest TEXT,
            recorded_at TEXT NOT NULL
        )"""
    )
    db.ddl("CREATE INDEX runs_by_time ON runs(started_at)")
    db.ddl("CREATE INDEX runs_by_label ON runs(label, started_at)")
    db.ddl("CREATE INDEX runs_by_branch ON runs(branch, started_at)")
    db.ddl(
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            run INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            scenario_id TEXT NOT NULL,
            status TEXT NOT NULL,
            reason TEXT,
            model TEXT,
            batch_size INTEGER,
            threads INTEGER,
            interop_threads INTEGER,
            precision TEXT,
            load TEXT,
            runtime TEXT,
            input_shape TEXT,
            median_s REAL,
            p99_s REAL,
            mean_s REAL,
            throughput_samples_per_s REAL,
            load_s REAL,
            peak_rss_bytes INTEGER,
            rounds INTEGER,
            round_times BLOB,
            record_json TEXT NOT NULL,
            UNIQUE (run, scenario_id)
        )"""
    )
    db.ddl("CREATE INDEX results_by_scenario ON results(scenario_id)")


def _migration_2(db: Db) -> None:
    """More figures as columns, filled from the records already stored (nothing is dropped)."""
    for column, kind, keys in (
        ("p90_s", "REAL", ("latency_s", "p90")),
        ("first_inference_s", "REAL", ("first_inference_s",)),
        ("peak_rss_kernel_bytes", "INTEGER", ("peak_rss_kernel_bytes",)),
    ):
        db.ddl(f"ALTER TABLE results ADD COLUMN {column} {kind}")
        db.execute(f"UPDATE results SET {column} = {db.dialect.json_path('record_json', keys, kind)}")
    db.ddl("CREATE INDEX results_by_model ON results(model, precision, load)")


# Append only: the position in this list is the schema version (PRAGMA user_version in SQLite,
# the bench_schema_version table in PostgreSQL).
MIGRATIONS: list[tuple[str, Callable[[Db], None]]] = [
    ("runs and results", _migration_1),
    ("p90, first inference and kernel peak RSS columns", _migration_2),
]
SCHEMA_VERSION = len(MIGRATIONS)


def _corrupted(path: Path, exc: Exception) -> HistoryError:
    return HistoryError(
        f"{path} is not a usable bench history: it is corrupted or not an SQLite file ({exc}). "
        "Your run folders are untouched: move the file aside and rebuild the history with "
        f"`bench history import reports/*/ --history {path}`"
    )


def _locked(location: HistoryLocation, timeout_s: float) -> HistoryError:
    return HistoryError(
        f"the history {location} is locked by another process writing to it (waited {timeout_s:g} s). "
        "Try again when it has finished, or give a longer wait with --history-timeout"
    )


@contextlib.contextmanager
def _errors(location: HistoryLocation, timeout_s: float) -> Iterator[None]:
    """The database's exceptions as messages a person can act on."""
    if isinstance(location, DatabaseUrl):
        psycopg = _psycopg()
        try:
            yield
        except psycopg.errors.LockNotAvailable:
            raise _locked(location, timeout_s) from None
        except psycopg.OperationalError as exc:  # the server went away, was shut down, ...
            raise HistoryError(f"the PostgreSQL history {location} (host {location.host}) failed: {exc}") from None
        return
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise _locked(location, timeout_s) from None
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            raise HistoryError(f"the history {location} cannot be opened for writing: {text}") from None
        if "no such table" in text or "no such column" in text:
            raise _corrupted(location, exc) from None
        raise
    except sqlite3.DatabaseError as exc:  # malformed image, not a database, ...
        raise _corrupted(location, exc) from None


def _no_history(location: HistoryLocation) -> HistoryError:
    return HistoryError(
        f"no history at {location}: runs are recorded there by `bench run`, or imported with "
        f"`bench history import RUN_DIR...` (choose another with --history PATH or ${HISTORY_ENV})"
    )


@contextlib.contextmanager
def open_history(
    location: HistoryLocation, *, create: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[Db]:
    """A connection to an up-to-date history (migrated if needed), closed on exit.

    With create=False a missing file (a database without bench's tables) is a HistoryError;
    with create=True it is created, a file with its folder.
    """
    if isinstance(location, DatabaseUrl):
        dialect: _SQLite | _Postgres = _Postgres()
    else:
        dialect = _SQLite()
        location = Path(location)
        if not location.exists():
            if not create:
                raise _no_history(location)
            try:
                location.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryError(
                    f"cannot create the folder of the history {location}: {exc.strerror or exc}"
                ) from None
        else:
            refuse_folder(location)
    with _errors(location, timeout_s):
        db = Db(dialect.connect(location, timeout_s), dialect, timeout_s)
        try:
            if isinstance(location, DatabaseUrl) and not create and dialect.version(db) == 0:
                raise _no_history(location)  # a database server, without a history in it yet
            _migrate(db, location)
            yield db
        finally:
            db.close()


def _migrate(db: Db, location: HistoryLocation, migrations: Sequence[tuple[str, Callable]] | None = None) -> None:
    migrations = MIGRATIONS if migrations is None else migrations
    version = db.dialect.version(db)
    if version >= len(migrations):
        _check_ours(db, location, version, len(migrations))
        return
    # Another process may be creating or upgrading the history right now: look again, and decide,
    # inside the write transaction.
    with _write(db):
        version = db.dialect.version(db)  # another process may have migrated
        _check_ours(db, location, version, len(migrations))
        for number in range(version + 1, len(migrations) + 1):
            migrations[number - 1][1](db)
            db.dialect.set_version(db, number)


def _check_ours(db: Db, location: HistoryLocation, version: int, known: int) -> None:
    kind = db.dialect.name
    if version == 0:
        if db.dialect.has_tables(db):
            raise HistoryError(
                f"{location} is {kind} but not a bench history (it has tables and no bench schema "
                "version); give another with --history"
            )
        return
    if not db.dialect.is_ours(db):
        raise HistoryError(f"{location} is {kind} but not a bench history; give another with --history")
    if version > known:
        raise HistoryError(
            f"the history {location} has schema version {version}, written by a newer bench (this one knows up to "
            f"{known}); upgrade bench to read it. The history was not changed"
        )


@contextlib.contextmanager
def _write(db: Db) -> Iterator[Db]:
    """One transaction that takes the write lock at once (waiting up to the history timeout)."""
    db.dialect.begin_write(db)
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# --- recording runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordOutcome:
    run_id: str
    action: str  # "added", "updated" (the folder had changed since), "unchanged" (already there)
    scenarios: int
    without_round_times: list[str]  # ok scenarios whose raw round times could not be read
    warnings: list[str]

    def describe(self) -> str:
        text = {
            "added": f"recorded run {self.run_id} ({self.scenarios} scenarios)",
            "updated": f"updated run {self.run_id} ({self.scenarios} scenarios; its folder had changed)",
            "unchanged": f"run {self.run_id} is already in the history",
        }[self.action]
        if self.without_round_times and self.action != "unchanged":
            text += f"; {len(self.without_round_times)} ok scenario(s) without raw round times"
        return text


def record_run(
    history_path: HistoryLocation,
    run_dir: Path,
    label: str | None = None,
    *,
    branch: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RecordOutcome:
    """Record one run folder in the history (created if missing). Idempotent.

    Recording a run that is already there with the same results.jsonl changes nothing
    (except its label or branch, when given); one whose results.jsonl changed since (it was
    imported while still running) has its rows replaced, in one transaction. A different
    run with the same run id (another machine) is refused.
    """
    run_dir = runfolder.require_run_folder(Path(run_dir))
    # Hashed before it is read: a row appended in between makes the digest stale, so the next
    # recording brings the row in (the other way round, the digest would claim a row never stored).
    digest = hashlib.sha256((run_dir / RESULTS_FILE).read_bytes()).hexdigest()
    snapshot = load_run(run_dir, with_round_times=True)
    if label is not None:
        label = label.strip() or None
    git = snapshot.environment.get("git") if isinstance(snapshot.environment.get("git"), dict) else {}
    run_row = {
        "run_id": snapshot.run_id,
        "started_at": snapshot.started_at,
        "finished_at": snapshot.info.get("finished_at"),
        "status": snapshot.info.get("status"),
        "suite": snapshot.suite,
        "git_sha": snapshot.git_sha,
        "git_dirty": None if git.get("dirty") is None else int(bool(git.get("dirty"))),
        "branch": branch or snapshot.branch,
        "label": label,
        "environment_fingerprint": snapshot.fingerprint,
        "environment_json": json.dumps(snapshot.environment, sort_keys=True),
        "run_json": json.dumps(snapshot.info, sort_keys=True),
        "source_path": str(run_dir.resolve()),
        "results_digest": digest,
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    without_rounds = [s.scenario_id for s in snapshot.results.values() if s.status == "ok" and s.round_times is None]
    with (
        open_history(history_path, create=True, timeout_s=timeout_s) as db,
        _errors(history_path, timeout_s),
        _write(db),
    ):
        existing = db.execute(
            "SELECT id, results_digest, environment_fingerprint, started_at, label, branch, run_json FROM runs "
            "WHERE run_id = ?",
            (snapshot.run_id,),
        ).fetchone()
        if existing is not None:
            _refuse_a_different_run(history_path, existing, run_row, run_dir)
            if label is None:
                run_row["label"] = existing["label"]
            if branch is None and existing["branch"] is not None:
                run_row["branch"] = existing["branch"]
            if existing["results_digest"] == digest:
                # the rows stand; run.json may have moved on (a run that ended since: status, finished_at)
                info_changed = existing["run_json"] != run_row["run_json"]
                db.execute(
                    "UPDATE runs SET label = ?, branch = ?, status = ?, finished_at = ?, run_json = ? WHERE id = ?",
                    (
                        run_row["label"],
                        run_row["branch"],
                        run_row["status"],
                        run_row["finished_at"],
                        run_row["run_json"],
                        existing["id"],
                    ),
                )
                return RecordOutcome(
                    snapshot.run_id,
                    "updated" if info_changed else "unchanged",
                    len(snapshot.results),
                    without_rounds,
                    snapshot.warnings,
                )
        run_pk = _write_run_row(db, run_row, None if existing is None else existing["id"])
        for result in snapshot.results.values():
            _insert_result(db, run_pk, result)
    action = "added" if existing is None else "updated"
    return RecordOutcome(snapshot.run_id, action, len(snapshot.results), without_rounds, snapshot.warnings)


def _refuse_a_different_run(
    history_path: HistoryLocation, existing: Any, run_row: dict[str, Any], source: Path
) -> None:
    """Run ids are made per machine: the same id from another machine is another run."""
    if (existing["environment_fingerprint"], existing["started_at"]) != (
        run_row["environment_fingerprint"],
        run_row["started_at"],
    ):
        raise HistoryError(
            f"the history {history_path} already holds a different run with the id {run_row['run_id']} "
            f"(started {existing['started_at']}, environment {existing['environment_fingerprint']}); "
            f"this one ({source}) was not recorded"
        )


def _write_run_row(db: Db, run_row: dict[str, Any], run_pk: int | None) -> int:
    """The run's row added (run_pk None), or replaced with its results cleared; its primary key."""
    if run_pk is None:
        columns = ", ".join(run_row)
        marks = ", ".join(f":{k}" for k in run_row)
        return db.execute(f"INSERT INTO runs ({columns}) VALUES ({marks}) RETURNING id", run_row).fetchone()[0]
    assignments = ", ".join(f"{k} = :{k}" for k in run_row)
    db.execute(f"UPDATE runs SET {assignments} WHERE id = :pk", {**run_row, "pk": run_pk})
    db.execute("DELETE FROM results WHERE run = ?", (run_pk,))
    return run_pk


def import_history(
    source: Path, history_path: HistoryLocation, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[RecordOutcome]:
    """Copy every run of an SQLite history into another history (a PostgreSQL one, say): rows, raw
    round times, labels and branches as they are. Idempotent like record_run: a run already there
    with the same results is left alone, one whose results changed since is replaced (one
    transaction per run), a different run with the same id is refused."""
    if isinstance(history_path, Path) and Path(source).resolve() == history_path.resolve():
        raise HistoryError(f"{source} is the history itself: give --history another one to copy it into")
    outcomes = []
    with (
        open_history(Path(source), timeout_s=timeout_s) as src,
        _errors(source, timeout_s),
        open_history(history_path, create=True, timeout_s=timeout_s) as db,
        _errors(history_path, timeout_s),
    ):
        for run in src.execute("SELECT * FROM runs ORDER BY id").fetchall():
            run_row = {key: value for key, value in dict(run).items() if key != "id"}
            rows = src.execute("SELECT * FROM results WHERE run = ? ORDER BY id", (run["id"],)).fetchall()
            with _write(db):
                existing = db.execute(
                    "SELECT id, results_digest, environment_fingerprint, started_at FROM runs WHERE run_id = ?",
                    (run_row["run_id"],),
                ).fetchone()
                if existing is not None:
                    _refuse_a_different_run(history_path, existing, run_row, source)
                if existing is not None and existing["results_digest"] == run_row["results_digest"]:
                    action = "unchanged"
                else:
                    run_pk = _write_run_row(db, run_row, None if existing is None else existing["id"])
                    for row in rows:
                        copied = {key: value for key, value in dict(row).items() if key != "id"}
                        _upsert_result(db, copied | {"run": run_pk})
                    action = "added" if existing is None else "updated"
            without_rounds = [r["scenario_id"] for r in rows if r["status"] == "ok" and r["round_times"] is None]
            outcomes.append(RecordOutcome(run_row["run_id"], action, len(rows), without_rounds, []))
    return outcomes


def record_rows(
    history_path: HistoryLocation,
    run_dir: Path,
    lines: Sequence[ResultLine],
    results_digest: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Add rows just appended to a run already in the history, with their round times, and bring
    the run's run.json and digest up to date: the cost of those rows, not of the whole run.

    `lines`: the rows appended, read into records as load_run reads them (a line that is no record is
    left out, as load_run leaves it out). `results_digest`: the sha256 of results.jsonl with these rows
    (kept by the caller as the file grows, so that a later record_run of the folder finds it unchanged).
    HistoryError when the run is not in the history yet (record_run adds it)."""
    info = runfolder.read_json_object(run_dir / runfolder.RUN_INFO_FILE, [])
    run_id = str(info.get("run_id") or run_dir.name)
    identity = {"run_id": run_id, "suite": info.get("suite") or "unknown"}  # as load_run fills them
    _, results, _ = read_rows(list(lines), identity, run_dir / RESULTS_FILE, [], [])
    for sid, result in results.items():
        if result.status == "ok":
            result.round_times = runfolder.round_times(run_dir, result.record.files, sid)[0]
    with (
        open_history(history_path, timeout_s=timeout_s) as db,
        _errors(history_path, timeout_s),
        _write(db),
    ):
        found = db.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if found is None:
            raise HistoryError(f"run {run_id} is not in the history {history_path} yet")
        for result in results.values():
            _insert_result(db, found["id"], result)
        run_json = json.dumps(info, sort_keys=True)
        db.execute(
            "UPDATE runs SET results_digest = ?, status = ?, finished_at = ?, run_json = ? WHERE id = ?",
            (results_digest, info.get("status"), info.get("finished_at"), run_json, found["id"]),
        )


def _insert_result(db: Db, run_pk: int, result: ScenarioResult) -> None:
    """One scenario's row in `results`: the record's key fields and figures as columns, and the record itself as
    JSON (`record_json`, the one place a record becomes a dict: SQL stores it as text)."""
    record = result.record

    def scalar(key: str) -> Any:
        value = getattr(record, key)  # a hand-made row may hold anything: a column takes a plain scalar only
        return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None

    row: dict[str, Any] = {
        "run": run_pk,
        "scenario_id": result.scenario_id,
        "status": result.status,
        "reason": scalar("reason"),
        "model": scalar("model"),
        "batch_size": scalar("batch_size"),
        "threads": scalar("threads"),
        "interop_threads": scalar("interop_threads"),
        "precision": scalar("precision"),
        "load": scalar("load"),
        "runtime": scalar("runtime"),
        "input_shape": json.dumps(record.input_shape),
        "rounds": len(result.round_times) if result.round_times is not None else None,
        "round_times": pack_times(result.round_times) if result.round_times is not None else None,
        "record_json": json.dumps({**record.to_dict(), **result.newer_fields}, sort_keys=False),
    }
    for column, metric in _METRIC_COLUMNS.items():
        row[column] = metric.of(record)
    _upsert_result(db, row)


def _upsert_result(db: Db, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    updates = ", ".join(f"{k} = excluded.{k}" for k in row)
    # an upsert: recording a row again (a retried transaction, a second recorder) replaces it, never doubles it
    db.execute(
        f"INSERT INTO results ({columns}) VALUES ({marks}) ON CONFLICT (run, scenario_id) DO UPDATE SET {updates}", row
    )


def pack_times(times: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(times)}d", *times)


def unpack_times(blob: bytes | None) -> list[float] | None:
    if blob is None:
        return None
    return list(struct.unpack(f"<{len(blob) // 8}d", blob))


# --- reading the history -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    run_id: str
    started_at: str | None
    suite: str | None
    git_sha: str | None
    git_dirty: bool | None
    branch: str | None
    label: str | None
    fingerprint: str | None
    status: str | None
    scenarios: int
    ok: int


def list_runs(
    history_path: HistoryLocation,
    *,
    label: str | None = None,
    branch: str | None = None,
    limit: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[RunRow]:
    """Runs in the history, oldest first (the newest `limit` of them when given)."""
    where, params = _run_filter(label, branch)
    query = f"""
        SELECT runs.*, count(results.id) AS scenarios, sum(CASE WHEN results.status = 'ok' THEN 1 ELSE 0 END) AS ok
        FROM runs LEFT JOIN results ON results.run = runs.id {where}
        GROUP BY runs.id ORDER BY runs.started_at DESC, runs.id DESC"""
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    with open_history(history_path, timeout_s=timeout_s) as db, _errors(history_path, timeout_s):
        rows = db.execute(query, params).fetchall()
    return [
        RunRow(
            run_id=r["run_id"],
            started_at=r["started_at"],
            suite=r["suite"],
            git_sha=r["git_sha"],
            git_dirty=None if r["git_dirty"] is None else bool(r["git_dirty"]),
            branch=r["branch"],
            label=r["label"],
            fingerprint=r["environment_fingerprint"],
            status=r["status"],
            scenarios=r["scenarios"] or 0,
            ok=r["ok"] or 0,
        )
        for r in reversed(rows)
    ]


def _run_filter(label: str | None, branch: str | None, prefix: str = "WHERE") -> tuple[str, list[Any]]:
    clauses, params = [], []
    if label is not None:
        clauses.append("runs.label = ?")
        params.append(label)
    if branch is not None:
        clauses.append("runs.branch = ?")
        params.append(branch)
    return (f"{prefix} " + " AND ".join(clauses)) if clauses else "", params


def run_by_id(history_path: HistoryLocation, run_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> RunFolder:
    """A run from the history by its id (or an unambiguous prefix of it)."""
    with open_history(history_path, timeout_s=timeout_s) as db, _errors(history_path, timeout_s):
        row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            matches = db.execute(
                "SELECT * FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY started_at", (len(run_id), run_id)
            ).fetchall()
            if len(matches) == 1:
                row = matches[0]
            elif len(matches) > 1:
                names = ", ".join(m["run_id"] for m in matches[:5])
                raise UserError(f"the run id {run_id!r} is ambiguous in {history_path}: it starts {names}")
            else:
                ids = [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 200")]
                hint = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.6)
                recent = ", ".join(ids[:3]) or "none"
                raise UserError(
                    f"unknown run id {run_id!r}: it is not in the history {history_path} and is not a run folder"
                    + (f"; did you mean {', '.join(hint)}?" if hint else f" (most recent runs: {recent})")
                )
        return _run_from_row(db, row, history_path)


# a run imported from a folder without a status counts as complete
_UNFINISHED_LAST = "CASE coalesce(status, 'complete') WHEN 'complete' THEN 0 WHEN 'interrupted' THEN 1 ELSE 2 END"


def latest_run(
    history_path: HistoryLocation,
    name: str,
    *,
    exclude_run_id: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> RunFolder:
    """The most recent run whose label is `name`, or failing that whose branch is `name`.

    Complete runs come first, then interrupted ones, then runs still going (or whose process
    was killed): `bench run` records rows as they finish, so the latter hold part of a suite."""
    with open_history(history_path, timeout_s=timeout_s) as db, _errors(history_path, timeout_s):
        for column in ("label", "branch"):
            row = db.execute(
                f"SELECT * FROM runs WHERE {column} = ? AND run_id IS DISTINCT FROM ? "
                f"ORDER BY {_UNFINISHED_LAST}, started_at DESC, id DESC LIMIT 1",
                (name, exclude_run_id),
            ).fetchone()
            if row is not None:
                return _run_from_row(db, row, history_path)
        labels = [r[0] for r in db.execute("SELECT DISTINCT label FROM runs WHERE label IS NOT NULL")]
        branches = [r[0] for r in db.execute("SELECT DISTINCT branch FROM runs WHERE branch IS NOT NULL")]
    known = ", ".join(sorted(labels)) or "none"
    known_b = ", ".join(sorted(branches)) or "none"
    raise UserError(
        f"no run in the history {history_path} has the label or branch {name!r}"
        + (" (other than the candidate itself)" if exclude_run_id else "")
        + f". Labels: {known}; branches: {known_b}. Record one with `bench run SUITE --label {name}` or "
        f"`bench history import RUN_DIR --label {name}`"
    )


def _run_from_row(db: Db, row: sqlite3.Row, history_path: HistoryLocation) -> RunFolder:
    """The run model (bench.results.runfolder) from the history's rows: the same upgrade of older rows as a folder's."""
    source = f"history:{history_path}"
    lines, rounds = [], {}
    for number, r in enumerate(
        db.execute("SELECT scenario_id, record_json, round_times FROM results WHERE run = ? ORDER BY id", (row["id"],)),
        start=1,
    ):
        lines.append(ResultLine(number, json.loads(r["record_json"])))
        rounds[r["scenario_id"]] = unpack_times(r["round_times"])
    info = json.loads(row["run_json"])
    warnings: list[str] = []
    identity = {"run_id": row["run_id"], "suite": row["suite"] or "unknown"}
    records, results, old_rows = read_rows(lines, identity, source, [], warnings)
    for sid, result in results.items():
        result.round_times = rounds[sid]
    return RunFolder(
        path=None,
        source=source,
        run_id=row["run_id"],
        suite=row["suite"],
        info=info,
        environment=json.loads(row["environment_json"]),
        lines=lines,
        records=records,
        results=results,
        expected_scenarios=[],
        started_at=row["started_at"],
        git_sha=row["git_sha"],
        branch=row["branch"],
        history_label=row["label"],
        warnings=warnings,
        old_schema_rows=old_rows,
    )


@dataclass(frozen=True)
class HistoryPoint:
    run_id: str
    started_at: str | None
    git_sha: str | None
    branch: str | None
    label: str | None
    fingerprint: str | None
    status: str
    value: float | None  # None when the scenario was not ok in that run


def scenario_ids(history_path: HistoryLocation, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[str]:
    with open_history(history_path, timeout_s=timeout_s) as db, _errors(history_path, timeout_s):
        return [r[0] for r in db.execute("SELECT DISTINCT scenario_id FROM results ORDER BY scenario_id")]


def scenario_history(
    history_path: HistoryLocation,
    scenario_id: str,
    metric: str = "median",
    *,
    label: str | None = None,
    branch: str | None = None,
    limit: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[HistoryPoint]:
    """One metric of one scenario in every run that has it, oldest first (the newest `limit`)."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    column = METRICS[metric].column
    where, params = _run_filter(label, branch, prefix="AND")
    with open_history(history_path, timeout_s=timeout_s) as db, _errors(history_path, timeout_s):
        query = f"""
            SELECT runs.run_id, runs.started_at, runs.git_sha, runs.branch, runs.label,
                   coalesce({db.dialect.json_path("results.record_json", ["environment_fingerprint"])},
                            runs.environment_fingerprint) AS environment_fingerprint,
                   results.status, results.{column} AS value
            FROM results JOIN runs ON results.run = runs.id
            WHERE results.scenario_id = ? {where}
            ORDER BY runs.started_at DESC, runs.id DESC"""
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        rows = db.execute(query, [scenario_id, *params]).fetchall()
        if not rows:
            known = [r[0] for r in db.execute("SELECT DISTINCT scenario_id FROM results")]
    if not rows:
        hint = difflib.get_close_matches(scenario_id, known, n=3, cutoff=0.5)
        raise UserError(
            f"no run in the history {history_path} has the scenario {scenario_id!r}"
            + (" with that label/branch" if where else "")
            + (
                f"; did you mean {', '.join(hint)}?"
                if hint
                else f" ({len(known)} scenario ids are known; `bench history export FILE.csv` lists them all)"
            )
        )
    return [
        HistoryPoint(
            run_id=r["run_id"],
            started_at=r["started_at"],
            git_sha=r["git_sha"],
            branch=r["branch"],
            label=r["label"],
            fingerprint=r["environment_fingerprint"],
            status=r["status"],
            value=float(r["value"]) if r["status"] == "ok" and r["value"] is not None else None,
        )
        for r in reversed(rows)
    ]


_RUN_CSV_COLUMNS = (
    "run_id",
    "started_at",
    "suite",
    "git_sha",
    "git_dirty",
    "branch",
    "label",
    "environment_fingerprint",
)


def export_csv(
    history_path: HistoryLocation,
    out_path: Path,
    *,
    scenario_id: str | None = None,
    with_round_times: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> int:
    """Every result row (of one scenario, when given) as CSV: run columns, then every record
    field flattened with dots (latency_s.median, rss_bytes.peak, ...). Returns the row count."""
    query = f"""
        SELECT {", ".join(f"runs.{c}" for c in _RUN_CSV_COLUMNS)}, results.record_json, results.round_times
        FROM results JOIN runs ON results.run = runs.id
        {"WHERE results.scenario_id = ?" if scenario_id else ""}
        ORDER BY runs.started_at, runs.id, results.id"""
    with open_history(history_path, timeout_s=timeout_s) as db, _errors(history_path, timeout_s):
        rows = db.execute(query, [scenario_id] if scenario_id else []).fetchall()
    flat_rows: list[dict[str, Any]] = []
    record_columns: dict[str, None] = {}
    for row in rows:
        flat = _flatten(json.loads(row["record_json"]))
        for key in flat:
            record_columns.setdefault(key, None)
        out = {f"run.{c}": row[c] for c in _RUN_CSV_COLUMNS}
        out.update(flat)
        if with_round_times:
            times = unpack_times(row["round_times"])
            out["round_times_s"] = json.dumps(times) if times is not None else ""
        flat_rows.append(out)
    header = [f"run.{c}" for c in _RUN_CSV_COLUMNS] + list(record_columns)
    if with_round_times:
        header.append("round_times_s")
    out_path = Path(out_path)
    try:
        if out_path.parent != Path():
            out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(flat_rows)
        tmp.replace(out_path)
    except OSError as exc:
        raise UserError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    return len(flat_rows)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        return {prefix[:-1]: json.dumps(value)}
    return {prefix[:-1]: value}


# --- command line --------------------------------------------------------------------------------


class RecordAsItRuns:
    """For `bench run`: a runner.Progress that passes each event on to `inner` and records
    the run in the history after each finished row, so the history holds every row that is
    on disk: a crash or Ctrl-C loses none, and a fleet run's rows arrive as hosts finish.

    A history problem never stops or loses the run: a failed recording is tried again at
    the next row and at `finish`, which says once what happened."""

    def __init__(self, inner: Any, history_path: HistoryLocation, run_dir: Path, label: str | None = None) -> None:
        self.inner, self.history_path, self.run_dir, self.label = inner, history_path, run_dir, label
        # results.jsonl as far as the history holds it: its sha256 so far and its length. None until
        # the whole folder has been recorded once (and after any failure: recorded whole again).
        self._digest: Any = None
        self._recorded_bytes = 0
        self._unreachable = False  # a server that did not answer is not asked again at every row (up to seconds)

    def scenario_started(self, index: int, total: int, scenario_id: str) -> None:
        self.inner.scenario_started(index, total, scenario_id)

    def scenario_phase(self, phase: str, elapsed_s: float) -> None:
        self.inner.scenario_phase(phase, elapsed_s)

    def scenario_finished(self, record: Any) -> None:
        self.inner.scenario_finished(record)
        if self._unreachable:
            return
        try:
            self._record_new_rows()
        except Exception as exc:  # said at `finish`, which tries again; but a full disk ends the run
            self._digest = None
            self._unreachable = isinstance(exc, HistoryUnreachable)
            if is_no_space(exc):
                raise NoSpaceLeft(self.history_path) from exc

    def _record_new_rows(self) -> None:
        """The whole folder the first time; then only the lines appended since (one row per scenario),
        so that recording costs the same at the last row of a long run as at the first."""
        results = self.run_dir / RESULTS_FILE
        if self._digest is None:
            data = results.read_bytes()  # this process is the run folder's only writer (bench.measure.runlock)
            record_run(self.history_path, self.run_dir, label=self.label)
            self._digest, self._recorded_bytes = hashlib.sha256(data), len(data)
            return
        with open(results, "rb") as f:
            f.seek(self._recorded_bytes)
            new = f.read()
        new = new[: new.rfind(b"\n") + 1]  # whole lines only
        if not new:
            return
        self._digest.update(new)
        self._recorded_bytes += len(new)
        lines = runfolder.result_lines_of(new.decode("utf-8", errors="replace"), results, [])
        record_rows(self.history_path, self.run_dir, lines, self._digest.hexdigest())

    def finish(self) -> Exception | None:
        """Record the run's final state (its status and end time, any row not yet recorded); the error
        that kept it out of the history, if one did (the run folder is complete either way)."""
        try:
            outcome = record_run(self.history_path, self.run_dir, label=self.label)
        except Exception as exc:  # UserError or a bug: the run folder is complete either way
            print(
                f"bench: warning: the run was not recorded in the history ({exc}); the run folder is complete; "
                f"record it later with 'bench history import {self.run_dir} --history {self.history_path}'",
                file=sys.stderr,
            )
            return exc
        text = f"recorded run {outcome.run_id} ({outcome.scenarios} scenarios, each as it finished)"
        if outcome.without_round_times:
            text += f"; {len(outcome.without_round_times)} ok scenario(s) without raw round times"
        print(f"history: {text} in {self.history_path}", file=sys.stderr)
        return None


# --- a run by folder or by id -------------------------------------------------------------------


def resolve(ref: str, history_path: HistoryLocation, timeout_s: float = DEFAULT_TIMEOUT_S) -> RunFolder:
    """A run folder (a path that exists) or a run id in the history."""
    path = Path(ref)
    if path.exists():
        return load_run(path, with_round_times=True)
    if "/" in ref or ref.endswith(".jsonl"):
        raise UserError(f"{ref}: no such run folder")
    if not history_exists(history_path):
        raise UserError(
            f"{ref!r} is neither a run folder nor a run id in a history: there is no history at {history_path} "
            "(runs are recorded there by `bench run`; or pass run folders, e.g. reports/<run-id>)"
        )
    return run_by_id(history_path, ref, timeout_s=timeout_s)
