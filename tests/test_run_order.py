"""bench run --shuffle: a seeded random order of execution, recorded, with the report in suite order."""

from __future__ import annotations

import json

from bench.measure import runner
from bench.results.record import ResultRecord
from bench.suite.scenarios import parse_suite


def _run(tmp_path, monkeypatch, seed):
    suite = parse_suite("name: s\nmatrix: {model: [tiny_mlp], batch_size: [1, 2, 3, 4, 5, 6]}\n")
    ran = []

    def fake_scenario(context, scenario, progress, file_stem=None):
        ran.append(scenario.batch_size)
        return ResultRecord(**runner.record_base(context, scenario, "t"), status="failed", reason="not run")

    monkeypatch.setattr(runner, "run_scenario", fake_scenario)
    monkeypatch.setattr(runner, "collect_environment", lambda: {"fingerprint": "f", "git": {"sha": None}})
    context = runner.start_run(suite, tmp_path / f"reports-{seed}")
    runner.run_suite(context, shuffle_seed=seed)
    return ran, json.loads((context.run_dir / "run.json").read_text())


def test_shuffle_runs_every_scenario_once_in_a_seeded_order_and_records_the_seed(tmp_path, monkeypatch):
    in_order, info = _run(tmp_path, monkeypatch, None)
    assert in_order == [1, 2, 3, 4, 5, 6] and "shuffle_seed" not in info
    shuffled, info = _run(tmp_path, monkeypatch, 7)
    assert sorted(shuffled) == in_order and shuffled != in_order
    assert info["shuffle_seed"] == 7
    again, _ = _run(tmp_path, monkeypatch, 7)
    assert again == shuffled  # the seed reproduces the order
