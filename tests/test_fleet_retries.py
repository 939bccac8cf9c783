"""The fleet client's bookkeeping (bench.measure.fleet.run_suite_on_fleet) against a scripted fake Dask client:
lost workers, given-up scenarios and absent host groups, on a fake clock. No Dask, no worker runs."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import pytest

from bench.measure import fleet, runner
from bench.results.nospace import NoSpaceLeft
from bench.results.record import ResultRecord
from bench.suite.scenarios import parse_suite

SUITE = "name: f\nhosts: [lab]\nmatrix: {model: [tiny_mlp]}\n"
SID = "tiny_mlp-b1-t1-fp32-eager@lab"


class FakeFuture:
    def __init__(self) -> None:
        self.state, self.payload, self.cancelled = "pending", None, False

    def done(self) -> bool:
        return self.state != "pending"

    def cancel(self) -> None:
        self.cancelled = True
        if self.state == "pending":
            self.state = "cancelled"

    def result(self):
        assert self.state == "finished", self.state
        return self.payload


class FakeFleet:
    """A client and a clock in one: `script(t, fleet)` runs at each sleep and moves the fleet on."""

    def __init__(self, script) -> None:
        self.t, self.script, self.futures, self.handler = 0.0, script, [], None
        self.workers = {"tcp://a:1": {"resources": {"lab": 1}}}

    # the client
    def subscribe_topic(self, topic, handler):
        self.handler = handler

    def unsubscribe_topic(self, topic):
        pass

    def submit(self, function, request, **kwargs):
        self.futures.append(FakeFuture())
        self.request = request
        return self.futures[-1]

    def scheduler_info(self, n_workers=-1):
        return {"workers": dict(self.workers)}

    # the clock (bench.measure.fleet's `time`)
    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        assert self.t < 600, "the loop never ended"
        self.script(self.t, self)

    # what the hosts do
    def start(self, worker: str) -> None:
        self.handler((self.t, {"scenario_id": SID, "worker": worker}))

    def finish(self, context, worker: str) -> None:
        from bench.suite.scenarios import Scenario

        scenario = Scenario.from_dict(self.request["scenario"])
        base = runner.record_base(context, scenario, runner.utc_now())
        record = ResultRecord(**{**base, "environment_fingerprint": "host"}, status="ok")
        future = self.futures[0]
        future.state = "finished"
        future.payload = {
            "record": record.to_dict(),
            "files": {},
            "environment": {"fingerprint": "host"},
            "placement": {"worker": worker, "host": "h", "started_unix_s": 1.0, "ended_unix_s": 2.0},
        }


@pytest.fixture
def context(tmp_path: Path) -> runner.RunContext:
    suite = parse_suite(SUITE, str(tmp_path / "f.yaml"))
    environment = {"fingerprint": "client", "git": {"sha": None}}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return runner.RunContext("run", run_dir, suite, environment, tmp_path / "cache")


def run(context, monkeypatch, script) -> tuple[ResultRecord, FakeFleet]:
    fake = FakeFleet(script)
    monkeypatch.setattr(fleet, "time", fake)
    (record,) = fleet.run_suite_on_fleet(context, fake)
    return record, fake


def test_a_third_start_is_cancelled_and_only_the_two_lost_workers_are_listed(context, monkeypatch):
    def script(t, fake):
        if t == 0.5:
            fake.start("tcp://a:1")
            fake.start("tcp://b:1")  # a was lost
            fake.start("tcp://c:1")  # b was lost too: this start is not waited for

    record, fake = run(context, monkeypatch, script)
    assert record.status == "failed" and fake.futures[0].cancelled
    assert record.fleet.lost_attempts == [
        {"worker": "tcp://a:1", "reason": "worker lost"},
        {"worker": "tcp://b:1", "reason": "worker lost"},
    ]
    assert record.reason.startswith("worker lost on 2 attempts; attempt 3, on tcp://c:1, was cancelled by bench")


def test_a_scenario_that_finishes_while_the_loop_sleeps_keeps_its_result(context, monkeypatch):
    def script(t, fake):
        if t == 0.5:  # during one sleep: the third start and, at once, its result
            for worker in ("tcp://a:1", "tcp://b:1", "tcp://c:1"):
                fake.start(worker)
            fake.finish(context, "tcp://c:1")

    record, fake = run(context, monkeypatch, script)
    assert record.status == "ok" and not fake.futures[0].cancelled
    assert [a["worker"] for a in record.fleet.lost_attempts] == ["tcp://a:1", "tcp://b:1"]


def test_a_group_whose_only_worker_restarts_briefly_keeps_its_scenarios(context, monkeypatch):
    workers = {"tcp://a:1": {"resources": {"lab": 1}}}

    def script(t, fake):
        fake.workers = {} if 4 <= t < 12 else workers  # gone at one check (5.5 s) and the next (11 s)
        if t == 20:
            fake.start("tcp://a:1")
            fake.finish(context, "tcp://a:1")

    record, _ = run(context, monkeypatch, script)
    assert record.status == "ok"


def test_a_group_gone_for_good_fails_its_queued_scenarios(context, monkeypatch):
    def script(t, fake):
        fake.workers = {}

    record, fake = run(context, monkeypatch, script)
    assert record.status == "failed" and fake.futures[0].cancelled
    assert record.reason.startswith("no worker of host group lab is left to run it")
    assert record.fleet.lost_attempts == []  # it never started anywhere
    assert fake.t >= fleet.NO_WORKER_GRACE_S


def test_absent_groups_need_two_checks_and_the_grace_period():
    absent = fleet._AbsentGroups()
    assert absent.update(set(), {"lab"}, 0.0) == set()  # one check
    assert absent.update(set(), {"lab"}, 5.0) == set()  # two, but for 5 s only
    assert absent.update({"lab"}, {"lab"}, 10.0) == set()  # back: forgotten
    assert absent.update(set(), {"lab"}, 40.0) == set()  # absent again: counting from here
    assert absent.update(set(), {"lab"}, 70.0) == {"lab"}
    assert absent.update({None}, {None, "lab"}, 71.0) == {"lab"}  # None: any worker at all


def test_a_full_disk_on_the_client_ends_a_fleet_run_as_it_ends_a_local_one(context, monkeypatch):
    def full(run_dir, files):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "workers" / SID / "stderr.log"))

    monkeypatch.setattr(fleet, "_store_files", full)
    fake = FakeFleet(lambda t, fake: (fake.start("tcp://a:1"), fake.finish(context, "tcp://a:1")) if t == 0.5 else None)
    monkeypatch.setattr(fleet, "time", fake)
    with pytest.raises(NoSpaceLeft) as info:
        fleet.run_suite_on_fleet(context, fake)
    assert str(info.value).startswith(f"no space left on {context.run_dir / 'workers' / SID / 'stderr.log'}")
    assert f"bench run --resume {context.run_dir}" in str(info.value) and f"({SID} has none yet)" in str(info.value)
    run_info = json.loads((context.run_dir / "run.json").read_text())
    assert run_info["status"] == "interrupted" and run_info["reason"].startswith("no space left on ")
    assert not context.results_path.exists() or context.results_path.read_text() == ""
    assert [p.name for p in context.run_dir.iterdir() if p.name.startswith(".")] == []  # the reserve is gone


def test_each_host_applies_the_runs_contention_policy_and_names_its_own_full_disk(context, monkeypatch, tmp_path):
    policy = runner.ContentionPolicy("retry", retries=3)
    fake = FakeFleet(lambda t, fake: (fake.start("tcp://a:1"), fake.finish(context, "tcp://a:1")) if t == 0.5 else None)
    monkeypatch.setattr(fleet, "time", fake)
    fleet.run_suite_on_fleet(context, fake, on_contention=policy)
    assert fake.request["on_contention"] == {"action": "retry", "retries": 3, "wait_limit_s": 120.0}

    # on the host: the policy reaches runner.measure; a full disk there is that host's, named
    distributed = pytest.importorskip("distributed")
    monkeypatch.setattr(fleet, "time", time)  # the real clock again
    monkeypatch.setattr(
        distributed, "get_worker", lambda: type("W", (), {"address": "tcp://h:1", "log_event": print})()
    )
    monkeypatch.setenv(fleet.SCRATCH_ENV, str(tmp_path / "scratch"))
    monkeypatch.setattr(fleet, "_host_environment", {"fingerprint": "host"})
    seen, stems = [], []

    def measure(context, scenario, progress, policy, file_stem=None):
        seen.append(policy)
        stems.append(file_stem)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "scratch" / "cache" / "x.pt"))

    monkeypatch.setattr(runner, "measure", measure)
    with pytest.raises(RuntimeError, match=r"no space left on \S+:.*scratch/cache/x.pt .*bench run --resume"):
        fleet.measure_on_host(fake.request)
    assert seen == [policy] and stems == ["tiny_mlp-b1-t1-fp32-eager@lab"]  # a row id of its own, else the scenario's
    assert list((tmp_path / "scratch" / "runs").iterdir()) == []  # the in-flight folder is gone
