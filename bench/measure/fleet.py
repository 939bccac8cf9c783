"""Fleet runs: one suite measured on many hosts through a Dask scheduler.

The client (`bench run SUITE --scheduler tcp://HOST:8786`) keeps the run folder; each
scenario is a Dask task that runs on one host exactly as a local run does (bench.measure.runner:
a fresh worker process, RSS sampled by the host's own parent process) and sends back its
record and raw files, which the client appends to results.jsonl the moment they arrive.

Rules that keep the numbers honest:
- a Dask worker must run one task at a time (`--nthreads 1`): scenarios on one host must
  never overlap; workers with more threads are refused;
- `hosts:` in a suite names host groups, which are Dask worker resources
  (`dask worker ... --resources "GROUP=1"`); each scenario runs once per group;
- a worker lost mid-scenario (its host died) costs only that scenario: Dask starts it
  again on another worker of the same group, and the row records the lost attempt; after a
  second loss its next start is cancelled and the row is `failed` ("worker lost on 2
  attempts"), listing only the two lost workers;
- a host group without a live worker at every check for 30 s (two checks at least) fails
  its queued scenarios (a worker restarting for a moment does not).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench
from bench.environment import collect_environment
from bench.errors import UserError
from bench.measure import runner
from bench.results.nospace import is_no_space, release_reserve, reserve_space, where_no_space
from bench.results.record import FleetPlacement, ResultRecord, append_record
from bench.suite.scenarios import Scenario, Suite

EXTRA_HINT = "pip install .[fleet]"
EVENT_TOPIC = "bench-fleet"
SCRATCH_ENV = "BENCH_FLEET_DIR"  # where a host keeps its artifact cache and in-flight files
DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 2  # the first try and one retry after a lost worker
_POLL_S = 0.5
_WORKER_CHECK_S = 5.0
NO_WORKER_GRACE_S = 30.0  # a group without a live worker this long (and at two checks) fails its queued scenarios


@dataclass(frozen=True)
class FleetWorker:
    address: str
    host: str
    threads: int
    resources: dict[str, float]
    bench_version: str


def import_distributed():
    try:
        import distributed
    except ImportError:
        raise UserError(f"--scheduler needs Dask distributed, which is not installed: {EXTRA_HINT}") from None
    return distributed


def connect(address: str, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S):
    """A Client for `address`, or a UserError within `timeout_s` if nothing answers there."""
    distributed = import_distributed()
    try:
        return distributed.Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UserError(
            f"--scheduler {address}: no Dask scheduler answered within {timeout_s:g} s ({exc}). "
            "Start one with `dask scheduler` and point --scheduler at the address it prints."
        ) from None


def check_workers(client, suite: Suite) -> list[FleetWorker]:
    """The fleet's workers, after checking they can run the suite; a UserError says what is wrong."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    if not info:
        raise UserError("the Dask scheduler has no workers; start `dask worker SCHEDULER --nthreads 1` on each host")
    try:
        versions = client.run(_bench_version)
    except Exception as exc:  # a worker without bench cannot even unpickle the call
        raise UserError(f"a Dask worker cannot run bench ({type(exc).__name__}: {exc}); install bench there") from None
    workers = [
        FleetWorker(
            address=address,
            host=facts.get("host") or facts.get("name") or address,
            threads=int(facts.get("nthreads", 1)),
            resources=dict(facts.get("resources") or {}),
            bench_version=versions.get(address, "?"),
        )
        for address, facts in info.items()
    ]
    problems = [
        f"worker {w.address} runs {w.threads} threads; start it with --nthreads 1 so that two "
        "scenarios never share a host at once"
        for w in workers
        if w.threads != 1
    ]
    problems += [
        f"worker {w.address} has bench {w.bench_version}, this client {bench.__version__}"
        for w in workers
        if w.bench_version != bench.__version__
    ]
    for group in suite.hosts:
        if not any(group in w.resources for w in workers):
            problems.append(
                f"no worker offers host group '{group}' (from the suite's hosts:); start its workers with "
                f'`dask worker SCHEDULER --nthreads 1 --resources "{group}=1"`'
            )
    if problems:
        raise UserError("cannot run the suite on this fleet: " + "; ".join(problems))
    return workers


@dataclass(frozen=True)
class GroupHost:
    """What a host group's hosts offer, as their own environments say: the least of its workers' usable cores
    and total memory (a group of unequal hosts is planned for its smallest)."""

    cores: int
    memory_total_bytes: int
    workers: int


def group_hosts(client, workers: list[FleetWorker], groups: tuple[str | None, ...]) -> dict[str | None, GroupHost]:
    """Each host group's GroupHost, asked of its workers (fleet.check_workers has checked that each has one);
    None: every worker (a suite without host groups runs on any)."""
    facts = client.run(_host_facts, workers=[w.address for w in workers])
    out = {}
    for group in groups:
        members = [facts[w.address] for w in workers if group is None or group in w.resources]
        out[group] = GroupHost(
            cores=min(int(f["usable_cores"]) for f in members),
            memory_total_bytes=min(int(f["memory_total_bytes"]) for f in members),
            workers=len(members),
        )
    return out


def shared_hosts(workers: list[FleetWorker]) -> dict[str, list[str]]:
    """Hosts with more than one worker: their scenarios run at the same time and disturb each other."""
    by_host: dict[str, list[str]] = defaultdict(list)
    for w in workers:
        by_host[w.host].append(w.address)
    return {host: addresses for host, addresses in by_host.items() if len(addresses) > 1}


class _Attempts:
    """Which workers started each scenario, from the tasks' own events (Dask retries lost tasks silently)."""

    def __init__(self, announce: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._started: dict[str, list[str]] = defaultdict(list)
        self._announce = announce  # a line per start: the progress of a run whose rows come back late

    def on_event(self, event: tuple[float, Any]) -> None:
        message = event[1]
        if isinstance(message, dict) and "scenario_id" in message:
            with self._lock:
                workers = self._started[message["scenario_id"]]
                workers.append(message["worker"])
                again = f" (attempt {len(workers)}: a worker was lost)" if len(workers) > 1 else ""
            if self._announce is not None:
                self._announce(f"{message['scenario_id']} started on {message['worker']}{again}")

    def started(self, scenario_id: str) -> list[str]:
        with self._lock:
            return list(self._started[scenario_id])


def run_suite_on_fleet(
    context: runner.RunContext,
    client,
    progress: runner.Progress | None = None,
    announce: Callable[[str], None] | None = None,
    on_contention: runner.ContentionPolicy | None = None,
    rows: dict[str, Scenario] | None = None,
    finish: bool = True,
) -> list[ResultRecord]:
    """Run the context's pending scenarios on the fleet, appending each row as it comes back.

    `announce` gets a line each time a host starts a scenario; each host applies `on_contention`
    to its own scenarios. A full disk here ends the run as a local run ends (runner.stop_for_space).
    `rows`: row id -> scenario, instead of the pending scenarios under their own ids (bench advise's
    stage rows: one scenario measured as several rows, its raw files named after the row id);
    `finish`: mark the run complete in run.json at the end (a caller with more to measure does that itself)."""
    progress = progress or runner.Silent()
    if rows is None:
        rows = {s.id: s for s in context.to_run}
    attempts = _Attempts(announce)
    client.subscribe_topic(EVENT_TOPIC, attempts.on_event)
    futures = {}
    for row_id, scenario in rows.items():
        request = {
            "run_id": context.run_id,
            "suite": context.suite.name,
            "scenario": scenario.to_dict(),
            "row_id": row_id,
            "rss_interval_s": context.rss_interval_s,
            "on_contention": dataclasses.asdict(on_contention or runner.ContentionPolicy()),
        }
        future = client.submit(
            measure_on_host,
            request,
            key=f"bench-{context.run_id}-{row_id}",
            resources={scenario.host_group: 1} if scenario.host_group else None,
            pure=False,
        )
        futures[future] = (row_id, scenario)
    pending = set(futures)
    last_check_s = time.monotonic()
    absent = _AbsentGroups()
    unstored = None  # the row id being stored, until it is on disk
    try:
        reserve_space(context.run_dir)
        while pending:
            # future: (why, whether its last start is one we cancel rather than one whose worker was lost)
            given_up = {f: (cause, True) for f in pending if (cause := _too_many_attempts(futures[f][0], attempts))}
            if time.monotonic() - last_check_s > _WORKER_CHECK_S:
                last_check_s = time.monotonic()
                gone = absent.update(_live_groups(client), {futures[f][1].host_group for f in pending}, last_check_s)
                waiting = pending - given_up.keys()
                given_up.update((f, (cause, False)) for f in waiting if (cause := _no_worker_left(futures[f][1], gone)))
            for future in list(given_up):
                if future.done():  # it ended after all (since the loop looked): its result is kept
                    del given_up[future]
                else:
                    future.cancel()
            finished = {f: None for f in pending - given_up.keys() if f.done()}
            if not finished and not given_up:
                time.sleep(_POLL_S)
                continue
            for future, why in {**finished, **given_up}.items():
                pending.discard(future)
                row_id, scenario = futures[future]
                unstored = row_id
                record = dataclasses.replace(
                    _record_of(context, future, scenario, attempts.started(row_id), why), scenario_id=row_id
                )
                progress.scenario_started(len(futures) - len(pending), len(futures), row_id)
                append_record(context.results_path, record)
                unstored = None
                context.records.append(record)
                progress.scenario_finished(record)
    except KeyboardInterrupt:
        for future in pending:
            future.cancel()  # a scenario already running on a host still ends there; its row is dropped
        runner.write_run_info(context, status="interrupted", finished_at=runner.utc_now())
        raise
    except Exception as exc:
        if not is_no_space(exc):
            raise
        for future in pending:
            future.cancel()  # --resume measures them, and the one whose row did not fit
        raise runner.stop_for_space(context, where_no_space(exc, context.run_dir), unstored) from exc
    finally:
        release_reserve(context.run_dir)
        client.unsubscribe_topic(EVENT_TOPIC)
    if finish:
        runner.write_run_info(context, status="complete", finished_at=runner.utc_now())
    return context.records


def _too_many_attempts(row_id: str, attempts: _Attempts) -> str | None:
    starts = attempts.started(row_id)
    if len(starts) > MAX_ATTEMPTS:  # its hosts keep dying under it: the new start is not waited for
        return (
            f"worker lost on {len(starts) - 1} attempts; attempt {len(starts)}, on {starts[-1]}, "
            "was cancelled by bench (not lost)"
        )
    return None


class _AbsentGroups:
    """Host groups with no live worker, given up on only once absent at two checks in a row and for
    NO_WORKER_GRACE_S: a group's only worker restarting (a nanny restart, a brief disconnect) is
    not a group gone for good."""

    def __init__(self) -> None:
        self._since: dict[str | None, tuple[float, int]] = {}  # group: (first seen absent, checks absent)

    def update(self, live: set[str | None], groups: set[str | None], now: float) -> set[str | None]:
        """Record one check; the groups (of `groups`) gone long enough to give their scenarios up."""
        for group in list(self._since):
            if group in live:
                del self._since[group]  # back: the count starts again at its next absence
        gone = set()
        for group in groups - live:
            first, checks = self._since.get(group, (now, 0))
            self._since[group] = (first, checks + 1)
            if checks + 1 >= 2 and now - first >= NO_WORKER_GRACE_S:
                gone.add(group)
        return gone


def _no_worker_left(scenario: Scenario, gone_groups: set[str | None]) -> str | None:
    if scenario.host_group not in gone_groups:
        return None
    return (
        f"no worker{f' of host group {scenario.host_group}' if scenario.host_group else ''} is left to run it "
        f"(none seen for {NO_WORKER_GRACE_S:g} s)"
    )


def _live_groups(client) -> set[str | None]:
    """Host groups that have a live worker now (None: any worker at all)."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    groups: set[str | None] = {g for w in workers for g in (w.get("resources") or {})}
    return groups | ({None} if workers else set())


def _record_of(
    context: runner.RunContext, future, scenario: Scenario, starts: list[str], given_up: tuple[str, bool] | None
) -> ResultRecord:
    """The row for a finished future: the host's record with its files stored here, or a failed row.

    `given_up`: (why, last_cancelled) when the loop gave the scenario up. Every start but the
    last lost its worker (Dask starts a task again only then); the last one was cancelled here
    (last_cancelled: too many losses) or its worker is gone as well (no worker left)."""
    if given_up is not None:
        cause, last_cancelled = given_up
        return _failed_row(context, scenario, starts, starts[:-1] if last_cancelled else starts, cause)
    try:
        payload = future.result()
    except Exception as exc:  # Dask's KilledWorker (lost too often), or bench broke on the host
        # KilledWorker: every start lost its worker; anything else was raised by the last start.
        lost = starts if type(exc).__name__ == "KilledWorker" else starts[:-1]
        return _failed_row(context, scenario, starts, lost, f"the fleet task failed: {type(exc).__name__}: {exc}")
    _store_files(context.run_dir, payload["files"])
    _store_environment(context.run_dir, payload["environment"])
    record = ResultRecord.from_dict(payload["record"])
    placement = FleetPlacement(**payload["placement"], lost_attempts=_lost(starts, payload["placement"]["worker"]))
    return dataclasses.replace(record, fleet=placement)


def _lost(starts: list[str], final_worker: str) -> list[dict[str, Any]]:
    # Every start but the last one that returned: its worker went away mid-scenario.
    lost = list(starts)
    if final_worker in lost:
        lost.remove(final_worker)
    return [{"worker": w, "reason": "worker lost"} for w in lost]


def _failed_row(
    context: runner.RunContext, scenario: Scenario, starts: list[str], lost: list[str], cause: str
) -> ResultRecord:
    """A failed row; fleet.lost_attempts lists only the starts whose worker was really lost."""
    reason = f"{cause} (started on: {', '.join(starts) or 'no worker'})"
    base = runner.record_base(context, scenario, runner.utc_now())
    base["environment_fingerprint"] = None  # measured nowhere
    attempts = [{"worker": w, "reason": "worker lost"} for w in lost]
    return ResultRecord(**base, status="failed", reason=reason, fleet=FleetPlacement(lost_attempts=attempts))


def _store_files(run_dir: Path, files: dict[str, bytes]) -> None:
    root = run_dir.resolve()
    for relative, data in files.items():
        path = (run_dir / relative).resolve()
        if not path.is_relative_to(root):  # a host's answer never writes outside the run folder
            raise UserError(f"a fleet worker sent a file outside the run folder: {relative!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _store_environment(run_dir: Path, environment: dict[str, Any]) -> None:
    """Each host's environment once, by fingerprint, beside the client's environment.json."""
    path = run_dir / "environments" / f"{environment.get('fingerprint', 'unknown')}.json"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(environment, indent=2, default=str), encoding="utf-8")


# ---- on the host, inside the Dask worker ------------------------------------------------


def _bench_version() -> str:
    return bench.__version__


_host_environment: dict[str, Any] | None = None


def _environment() -> dict[str, Any]:
    global _host_environment
    if _host_environment is None:
        _host_environment = collect_environment()
    return _host_environment


def _host_facts() -> dict[str, Any]:
    environment = _environment()
    return {k: environment.get(k) for k in ("usable_cores", "memory_total_bytes")}


def measure_on_host(request: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario on this host as a local run would; return its record, files and environment."""
    import distributed

    worker = distributed.get_worker()
    scenario = Scenario.from_dict(request["scenario"])
    row_id = request.get("row_id") or scenario.id
    worker.log_event(EVENT_TOPIC, {"scenario_id": row_id, "worker": worker.address})
    host_environment = _environment()
    scratch = Path(os.environ.get(SCRATCH_ENV) or Path.home() / ".cache" / "bench-fleet")
    (scratch / "runs").mkdir(parents=True, exist_ok=True)
    # The artifact cache is the host's; the run's files live here only until they are sent.
    run_dir = Path(tempfile.mkdtemp(prefix=f"{request['run_id']}-", dir=scratch / "runs"))
    suite = Suite(path=Path(request["suite"]), name=request["suite"], description="", scenarios=(), text="")
    context = runner.RunContext(
        request["run_id"], run_dir, suite, host_environment, scratch / "cache" / "artifacts", request["rss_interval_s"]
    )
    policy = runner.ContentionPolicy(**request.get("on_contention", {}))
    try:
        started_unix_s = time.time()
        record = runner.measure(context, scenario, runner.Silent(), policy, file_stem=row_id)
        ended_unix_s = time.time()
        files = _read_files(run_dir, record.files.values())
    except Exception as exc:
        if is_no_space(exc):  # the host's disk, not the client's: its row fails, the run goes on
            # A plain error: Dask pickles it back to the client, where it becomes this row's reason.
            raise RuntimeError(
                f"no space left on {socket.gethostname()}:{where_no_space(exc, scratch)} (the host's artifact "
                f"cache and in-flight files, ${SCRATCH_ENV}); free space there, then measure the scenario again "
                "with bench run --resume"
            ) from exc
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "record": record.to_dict(),
        "files": files,
        "environment": host_environment,
        "placement": {
            "worker": worker.address,
            "host": socket.gethostname(),
            "started_unix_s": started_unix_s,
            "ended_unix_s": ended_unix_s,
        },
    }


def _read_files(run_dir: Path, relatives) -> dict[str, bytes]:
    """The row's raw files (record.files: files and folders) as bytes, keyed by run-folder path."""
    files: dict[str, bytes] = {}
    for relative in relatives:
        path = run_dir / relative
        for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if p.is_file():
                files[str(p.relative_to(run_dir))] = p.read_bytes()
    return files
