"""The parent side against real worker processes: failures become rows with reasons."""

from __future__ import annotations

import pytest

from bench import runtimes
from bench.measure.runner import build_record, run_worker
from bench.suite.scenarios import MeasurePolicy, Scenario

pytestmark = pytest.mark.slow


def _scenario(**changes) -> Scenario:
    values = dict(
        model="tiny_mlp",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        input_shape=(64,),
        measure=MeasurePolicy(warmup_rounds=1, min_rounds=5, max_time_s=0.05),
    )
    values.update(changes)
    return Scenario(**values)


def _record_base(scenario: Scenario) -> dict:
    """The fields the runner fills in before a worker starts."""
    return dict(
        run_id="r",
        scenario_id=scenario.id,
        suite="s",
        model=scenario.model,
        batch_size=scenario.batch_size,
        threads=scenario.threads,
        interop_threads=scenario.interop_threads,
        precision=scenario.precision,
        load=scenario.load,
        runtime="torch",
        input_shape=list(scenario.input_shape),
    )


def test_a_worker_that_raises_gives_a_failed_record_naming_phase_and_error(tmp_path):
    scenario = _scenario()
    missing = tmp_path / "no-such-artifact.pt"
    outcome = run_worker(scenario, missing, tmp_path / "w", tmp_path / "b.json", rss_interval_s=0.01)

    assert outcome.returncode == 1  # pytest's exit status for a failed test
    assert outcome.worker.status == "failed"
    assert outcome.samples, "the sampler saw the worker"
    record = build_record(_record_base(scenario), scenario, outcome, tmp_path / "b.json", 0.01, 1.0)
    assert record.status == "failed"
    assert record.reason.startswith("FileNotFoundError during load")
    assert record.latency_s is None
    assert record.rss_bytes.before_load > 0  # what was measured before the failure is kept


def test_thread_settings_take_effect_in_the_worker(tmp_path):
    scenario = _scenario(model="tiny_cnn", input_shape=(3, 32, 32), threads=2, interop_threads=2)
    artifact = runtimes.prepare_artifact(scenario, tmp_path / "cache")
    outcome = run_worker(scenario, artifact.path, tmp_path / "w", tmp_path / "b.json", rss_interval_s=0.01)
    assert outcome.returncode == 0, outcome.stderr_tail
    assert outcome.worker.torch_num_threads == 2
    assert outcome.worker.torch_num_interop_threads == 2
    env = (tmp_path / "w" / "spec.json").read_text()
    assert '"threads": 2' in env


def test_a_worker_killed_by_a_signal_names_the_signal_and_where_it_crashed(tmp_path):
    scenario = _scenario()
    artifact = runtimes.prepare_artifact(scenario, tmp_path / "cache")
    # A real segfault in the worker: a sitecustomize that reads address 0 when the harness imports
    # bench.measure.worker, i.e. after pytest has switched faulthandler on, as in a crash inside a model.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "class CrashOnWorkerImport:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bench.measure.worker':\n"
        "            import ctypes\n"
        "            ctypes.string_at(0)\n"
        "if os.environ.get('BENCH_WORKER_SPEC'):\n"
        "    sys.meta_path.insert(0, CrashOnWorkerImport())\n"
    )
    import os

    outcome = run_worker(
        scenario,
        artifact.path,
        tmp_path / "w",
        tmp_path / "b.json",
        rss_interval_s=0.01,
        extra_env={"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
    )
    assert outcome.returncode == -11
    record = build_record(_record_base(scenario), scenario, outcome, tmp_path / "b.json", 0.01, 1.0)
    assert record.status == "failed"
    assert record.reason.startswith("worker killed by signal SIGSEGV during ")
    assert "Fatal Python error: Segmentation fault" in record.reason


def test_a_worker_started_under_a_pytest_xdist_worker_still_times_its_rounds(tmp_path, monkeypatch):
    # pytest-benchmark disables itself when it sees PYTEST_XDIST_WORKER: bench's worker must not inherit it
    # (bench run from a test that pytest-xdist runs, as `nox -s tests` does, lost every row's timings).
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    scenario = _scenario()
    artifact = runtimes.prepare_artifact(scenario, tmp_path / "cache")
    outcome = run_worker(scenario, artifact.path, tmp_path / "w", tmp_path / "b.json", rss_interval_s=0.01)
    assert outcome.returncode == 0, outcome.stderr_tail
    assert (tmp_path / "b.json").exists(), "pytest-benchmark wrote no JSON: it saw the caller's xdist"
