"""Forked workers (bench run --worker fork) are as isolated as fresh ones: what one scenario does to its
process (crash, leak threads or memory, change torch's global state) never reaches the next.

The models are factories of a module written here; what they do runs only inside a worker
(BENCH_WORKER_SPEC is set there), and an observer factory writes what its worker found."""

from __future__ import annotations

import json
import textwrap

import pytest

from bench.measure import runner
from bench.measure.zygote import fork_available
from bench.suite.scenarios import parse_suite

pytestmark = [
    pytest.mark.slow,  # real runs: a zygote and a worker per scenario
    pytest.mark.skipif(not fork_available(), reason="the zygote needs os.fork and /proc"),
]

FACTORIES = """
import ctypes, json, os, threading, time
import torch

IN_WORKER = bool(os.environ.get("BENCH_WORKER_SPEC"))
_hoard = []


def _net():
    return torch.nn.Linear(4, 2)


def polluter():
    if IN_WORKER:
        torch.set_flush_denormal(True)
        torch.set_num_threads(1)
        torch.manual_seed(1234)
        for _ in range(4):
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
        _hoard.append(bytearray(300 * 1024 * 1024))  # touched pages: 300 MiB of RSS
        os.environ["POLLUTED"] = "1"
    return _net()


def crasher():
    if IN_WORKER:
        ctypes.string_at(0)
    return _net()


def observer():
    if IN_WORKER:
        tiny = torch.tensor([1e-40], dtype=torch.float32)  # a denormal: flushed to 0 only if flush_denormal
        with open(os.environ["OBSERVED"], "a") as out:
            out.write(json.dumps({
                "denormal_kept": bool((tiny * 1.0).item() != 0.0),
                "torch_threads": torch.get_num_threads(),
                "os_threads": len(os.listdir("/proc/self/task")),
                "initial_seed": torch.initial_seed(),
                "hoard": len(_hoard),
                "polluted": os.environ.get("POLLUTED"),
            }) + "\\n")
    return _net()
"""


def _run(tmp_path, monkeypatch, models: list[str], worker_kind: str):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "isolation_factories.py").write_text(FACTORIES, encoding="utf-8")
    monkeypatch.setenv("OBSERVED", str(tmp_path / "observed.jsonl"))
    monkeypatch.syspath_prepend(str(tmp_path))
    entries = "\n".join(  # the same factory twice gets a second name (a scenario id is unique)
        f"    - {{name: {m}{i}, factory: 'isolation_factories:{m}', input_shape: [4]}}" for i, m in enumerate(models)
    )
    text = (
        textwrap.dedent("""\
        name: isolation
        defaults:
          threads: 2
          measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}
        matrix:
          model:
        """)
        + entries
        + "\n"
    )
    suite = parse_suite(text, str(tmp_path / "suite.yaml"), base_dir=tmp_path)
    context = runner.start_run(suite, tmp_path / "reports", worker_kind=worker_kind)
    rows = runner.run_suite(context)
    observed = [json.loads(line) for line in (tmp_path / "observed.jsonl").read_text().splitlines()]
    return rows, observed


def test_a_polluting_scenario_leaves_nothing_to_the_next(tmp_path, monkeypatch):
    rows, observed = _run(tmp_path, monkeypatch, ["observer", "polluter", "observer"], "fork")
    assert [r.status for r in rows] == ["ok", "ok", "ok"], [r.reason for r in rows]
    assert {r.worker_kind for r in rows} == {"fork"}
    before, after = observed[0], observed[-1]  # the observer's last entry is from its last worker
    assert after == before  # flush_denormal, threads, seed, the module's state and the environment
    assert after["denormal_kept"] and after["torch_threads"] == 2 and after["polluted"] is None
    # The polluter's threads and memory were its own: the next worker starts as the one before it.
    assert rows[2].torch_num_threads == rows[0].torch_num_threads == 2
    assert rows[2].worker_os_threads == rows[0].worker_os_threads
    assert rows[1].rss_bytes.after_load > rows[0].rss_bytes.after_load + 250 * 1024 * 1024
    assert abs(rows[2].rss_bytes.before_load - rows[0].rss_bytes.before_load) < 50 * 1024 * 1024


def test_a_crashing_scenario_is_a_failed_row_and_the_next_runs_from_the_same_zygote(tmp_path, monkeypatch):
    rows, observed = _run(tmp_path, monkeypatch, ["crasher", "observer"], "fork")
    assert rows[0].status == "failed"
    assert rows[0].reason.startswith("worker killed by signal SIGSEGV during "), rows[0].reason
    assert rows[1].status == "ok" and rows[1].worker_kind == "fork"
    assert observed[-1]["denormal_kept"] and observed[-1]["torch_threads"] == 2
    info = json.loads((tmp_path / "reports" / rows[0].run_id / "run.json").read_text())
    assert info["worker_kind"] == "fork" and len(info["zygotes"]) == 1  # no restart was needed


def test_both_worker_kinds_give_the_same_threads_and_a_timeline(tmp_path, monkeypatch):
    fork_rows, _ = _run(tmp_path / "f", monkeypatch, ["observer"], "fork")
    fresh_rows, _ = _run(tmp_path / "s", monkeypatch, ["observer"], "fresh")
    (fork,), (fresh,) = fork_rows, fresh_rows
    assert (fork.worker_kind, fresh.worker_kind) == ("fork", "fresh")
    assert fork.torch_num_threads == fresh.torch_num_threads == 2
    assert fork.torch_num_interop_threads == fresh.torch_num_interop_threads
    for row in (fork, fresh):
        timeline = row.timeline
        assert timeline is not None and timeline.steady_s > 0 and timeline.process_start_s > 0
        assert timeline.imports_s is not None and timeline.load_s is not None and timeline.teardown_s is not None
        assert timeline.overhead_s == pytest.approx(timeline.wall_s - timeline.steady_s)
        parts = [v for k, v in vars(timeline).items() if k not in ("wall_s", "overhead_s", "other_s") and v]
        assert sum(parts) <= timeline.wall_s + 1e-6
