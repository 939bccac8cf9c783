"""Fleet runs through a real Dask LocalCluster of two single-thread workers on this machine."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.errors import UserError
from bench.history import store as history
from bench.measure import fleet
from bench.suite.scenarios import parse_suite

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")
# The workers cannot import this test module: send its helper functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SUITE = """\
name: fleet-test
defaults:
  measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: MAX_TIME_S}
matrix:
  model: [tiny_mlp]
  batch_size: [1, 2]
  precision: [fp32, int8_dynamic]
EXTRA
"""
# Three scenarios: two workers then run two of them on one worker, enough to see that they never
# overlap; each costs a fresh interpreter on the host (3-5 CPU-s), so the fourth is left out.
THREE = "exclude: [{batch_size: 2, precision: int8_dynamic}]"


def _suite(tmp_path: Path, max_time_s: float, extra: str = "") -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(SUITE.replace("MAX_TIME_S", str(max_time_s)).replace("EXTRA", extra), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module: starting two worker processes that import distributed and then
    torch costs seconds. The test that kills a worker runs last; its nanny starts a new one anyway."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        resources={"lab": 1},
        env={"BENCH_FLEET_DIR": str(tmp_path_factory.mktemp("hosts"))},
    ) as cluster:
        yield cluster


def _bench(*args: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )


def _rows(reports: Path) -> list[dict]:
    (run_dir,) = [p for p in reports.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_fleet_run_gives_the_rows_of_a_local_run_each_with_its_worker_and_never_overlapping(cluster, tmp_path):
    suite = _suite(tmp_path, 0.2, extra=f"hosts: [lab]\n{THREE}")
    done = _bench("run", str(suite), "--scheduler", cluster.scheduler_address, "--reports", "fleet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 Dask workers share host" in done.stderr  # both workers are on this machine: said, not hidden
    assert done.stderr.count("@lab started on tcp://") == 3  # the progress while rows are still out
    rows = _rows(tmp_path / "fleet")

    local_suite = _suite(tmp_path, 0.2, extra=THREE)
    done = _bench("run", str(local_suite), "--reports", "local", "--no-history", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    local_rows = _rows(tmp_path / "local")

    assert sorted(r["scenario_id"] for r in rows) == sorted(f"{r['scenario_id']}@lab" for r in local_rows)
    assert {r["status"] for r in rows} == {r["status"] for r in local_rows} == {"ok"}
    workers = set(cluster.scheduler_info["workers"])
    assert {r["fleet"]["worker"] for r in rows} <= workers
    assert all(r["host_group"] == "lab" and r["fleet"]["lost_attempts"] == [] for r in rows)
    run_dir = next(p for p in (tmp_path / "fleet").iterdir() if p.is_dir() and not p.name.startswith("."))
    for r in rows:  # the host's raw files came back: history and reports read them as for a local run
        assert all((run_dir / path).exists() for path in r["files"].values()), r["files"]
        assert (run_dir / "environments" / f"{r['environment_fingerprint']}.json").is_file()
    assert (run_dir / "report.html").is_file()
    [recorded] = history.list_runs(tmp_path / "fleet" / "history.sqlite")  # each row, as it came back
    assert (recorded.run_id, recorded.scenarios, recorded.ok, recorded.status) == (run_dir.name, 3, 3, "complete")

    by_worker: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        by_worker.setdefault(r["fleet"]["worker"], []).append(
            (r["fleet"]["started_unix_s"], r["fleet"]["ended_unix_s"])
        )
    for spans in by_worker.values():
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


@pytest.mark.slow
def test_a_worker_lost_mid_scenario_costs_a_retry_not_a_row(cluster, tmp_path):
    suite = _suite(tmp_path, 2.5, extra=THREE)
    command = [
        sys.executable,
        "-m",
        "bench",
        "run",
        str(suite),
        "--scheduler",
        cluster.scheduler_address,
        "--reports",
        "fleet",
        "--no-history",
    ]
    run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
            victim, children = _busy_worker(client)
            pid = client.run(_pid, workers=[victim])[victim]
            psutil.Process(pid).kill()  # the host dies: no goodbye to the scheduler
            # Its scenario's worker process dies with it (PR_SET_PDEATHSIG), not left measuring for no one.
            gone, alive = psutil.wait_procs([psutil.Process(c) for c in children if psutil.pid_exists(c)], timeout=10)
            assert not alive, [p.cmdline() for p in alive]
        stdout, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    rows = _rows(tmp_path / "fleet")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    retried = [r for r in rows if r["fleet"]["lost_attempts"]]
    assert len(retried) == 1, rows
    assert retried[0]["fleet"]["lost_attempts"] == [{"worker": victim, "reason": "worker lost"}]
    assert retried[0]["fleet"]["worker"] != victim
    assert f"{retried[0]['scenario_id']} started on" in stderr and "(attempt 2: a worker was lost)" in stderr


def _pid() -> int:
    import os

    return os.getpid()


def _busy_worker(client) -> tuple[str, list[int]]:
    """A worker that is running a scenario's worker process, and that process's pid(s)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = client.run(_harness_children)
        for address, pids in children.items():
            if pids:
                time.sleep(1.0)  # let the task's start event reach the scheduler first
                return address, pids
        time.sleep(0.2)
    raise AssertionError("no worker started a scenario within 120 s")


def _harness_children() -> list[int]:
    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "bench/measure/harness.py" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # it ended (a zombie not yet reaped, or gone) while we looked: not running a scenario
            continue
    return pids


def test_a_scheduler_that_does_not_answer_is_a_clear_error_within_the_timeout():
    started = time.monotonic()
    with pytest.raises(UserError, match="no Dask scheduler answered within 1 s"):
        fleet.connect("tcp://127.0.0.1:9", timeout_s=1.0)  # port 9 (discard): nothing listens
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_the_cli_says_so_without_a_traceback(run_cli, write_suite):
    suite = write_suite("name: s\nmatrix: {model: [tiny_mlp]}\n")
    done = run_cli("run", str(suite), "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1")
    assert done.returncode == 2
    assert "no Dask scheduler answered" in done.stderr and "Traceback" not in done.stderr
    assert not (suite.parent / "reports").exists()  # refused before a run folder was made


def test_host_groups_multiply_the_scenarios_and_mark_their_ids():
    suite = parse_suite("name: s\nhosts: [c7i, m7g]\nmatrix: {model: [tiny_mlp], threads: [1, 2]}\n")
    assert [s.id for s in suite.scenarios] == [
        "tiny_mlp-b1-t1-fp32-eager@c7i",
        "tiny_mlp-b1-t2-fp32-eager@c7i",
        "tiny_mlp-b1-t1-fp32-eager@m7g",
        "tiny_mlp-b1-t2-fp32-eager@m7g",
    ]
    assert suite.hosts == ("c7i", "m7g")


@pytest.mark.parametrize(
    "hosts, message",
    [("hosts: []", "non-empty list"), ("hosts: [a, a]", "twice"), ("hosts: ['no spaces']", "host group name")],
)
def test_bad_host_groups_name_the_field(hosts, message):
    from bench.errors import SuiteError

    with pytest.raises(SuiteError, match=message) as caught:
        parse_suite(f"name: s\n{hosts}\nmatrix: {{model: [tiny_mlp]}}\n", "f.yaml")
    assert "f.yaml" in str(caught.value) and "hosts" in str(caught.value)


class _FakeClient:
    def __init__(self, workers: dict, version: str = "0.1.0"):
        self.workers, self.version = workers, version

    def scheduler_info(self, n_workers=-1):
        return {"workers": self.workers}

    def run(self, function):
        return {address: self.version for address in self.workers}


def test_workers_that_could_overlap_scenarios_or_miss_a_group_are_refused():
    suite = parse_suite("name: s\nhosts: [big]\nmatrix: {model: [tiny_mlp]}\n")
    client = _FakeClient({"tcp://a:1": {"host": "a", "nthreads": 4, "resources": {"small": 1}}})
    with pytest.raises(UserError) as caught:
        fleet.check_workers(client, suite)
    message = str(caught.value)
    assert "runs 4 threads; start it with --nthreads 1" in message
    assert "no worker offers host group 'big'" in message and '--resources "big=1"' in message


def test_a_worker_with_another_bench_version_is_refused():
    suite = parse_suite("name: s\nmatrix: {model: [tiny_mlp]}\n")
    client = _FakeClient({"tcp://a:1": {"host": "a", "nthreads": 1}}, version="0.0.9")
    with pytest.raises(UserError, match="has bench 0.0.9"):
        fleet.check_workers(client, suite)


@pytest.mark.slow
def test_a_local_run_of_a_suite_with_host_groups_is_refused(run_cli, write_suite):
    suite = write_suite("name: s\nhosts: [c7i]\nmatrix: {model: [tiny_mlp]}\n")
    done = run_cli("run", str(suite))
    assert done.returncode == 2 and "--scheduler" in done.stderr


def test_files_from_a_host_never_land_outside_the_run_folder(tmp_path):
    with pytest.raises(UserError, match="outside the run folder"):
        fleet._store_files(tmp_path / "run", {"../escape.txt": b"x"})
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.slow
def test_bench_advise_on_a_fleet_measures_every_stage_on_the_group_and_advises_it_at_its_price(cluster, tmp_path):
    # One candidate (every axis named) on host group lab: its screen, capacity and confirm rows go to the
    # fleet under their own row ids, and the group gets its advice on its hosts' cores at its own price.
    suite = tmp_path / "advise.yaml"
    suite.write_text(
        "name: fleet-advise\nhosts: [lab]\n"
        "defaults: {threads: 2, batch_size: 1, load: eager, precision: fp32,\n"
        "  measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.1},\n"
        "  capacity: {slo_p99_ms: 1, duration_s: 0.2, step_min_duration_s: 0.2, step_min_requests: 50,\n"
        "             step_max_duration_s: 1.5, max_steps: 3, tolerance: 0.5, sweep: false}}\n"
        "matrix: {model: [tiny_mlp]}\n",
        encoding="utf-8",
    )
    done = _bench(
        "advise", str(suite), "--slo-p99-ms", "100", "--target-rps", "50", "--host-cost", "lab=2",
        "--budget-min", "2", "--scheduler", cluster.scheduler_address, "--reports", "fleet", "--no-history",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "fleet").iterdir() if p.is_dir() and not p.name.startswith(".")]
    rows = {r["scenario_id"]: r for r in _rows(tmp_path / "fleet")}
    screen = "tiny_mlp-b1-t2-fp32-eager@lab"
    assert set(rows) == {screen, f"{screen}~capacity", f"{screen}~confirm"}
    assert all(r["status"] == "ok" and r["fleet"]["worker"] in cluster.scheduler_info["workers"] for r in rows.values())
    assert (run_dir / "workers" / f"{screen}~capacity").is_dir()  # the host's raw files, named after the row
    advice = json.loads((run_dir / "advice.json").read_text())
    lab = advice["groups"]["lab"]
    assert lab["winner"]["scenario_id"] == screen and lab["winner"]["cost_per_hour"] == 2 * lab["winner"]["hosts"]
    assert advice["winner"] == lab["winner"] and "lab's machine" in lab["host"]
    assert "2 Dask workers share host" in done.stderr  # both on this machine: said, as bench run says it
    assert "### lab" in (run_dir / "report.md").read_text()
    again = parse_suite((run_dir / "advice.yaml").read_text(), str(run_dir / "advice.yaml"))
    assert [s.id for s in again.scenarios] == [screen]  # measured again on its group
