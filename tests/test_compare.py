"""`bench compare` on hand-made run folders: statistics, verdicts, refusals and output formats.

Round times are drawn from seeded distributions, so every expectation below holds for
these exact numbers; no worker runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.demo_runs import DEMO, Spec, make_record, make_run

from bench.analysis.compare import (
    IncomparableError,
    Rule,
    bootstrap_changes,
    compare_runs,
    format_markdown,
    format_text,
    to_json,
    verdict_single,
    verdict_with_ci,
)
from bench.cli import main
from bench.errors import UserError
from bench.history.store import record_run
from bench.results.metrics import METRICS, Metric
from bench.results.runfolder import load_run
from bench.results.stats import LatencyStats, drift

MLP = "tiny_mlp-b1-t1-fp32-eager"
SPECS = [Spec(median_ms=1.0), Spec(batch_size=4, median_ms=2.0), Spec(model="tiny_cnn", median_ms=3.0)]
MIB = 1024 * 1024


def draw(seed: int, n: int = 400, median_ms: float = 1.0, noise: float = 0.05) -> list[float]:
    """Round times: lognormal around the median with a long right tail, like real rounds."""
    rng = random.Random(seed)
    times = []
    for _ in range(n):
        t = median_ms / 1e3 * rng.lognormvariate(0, noise)
        if rng.random() < 0.02:
            t *= 1.5 + rng.random()
        times.append(t)
    return times


def edit_run(run_dir: Path, edit_record=None, environment: dict | None = None, rounds=None) -> Path:
    """Rewrite a hand-made run: each record through edit_record(record) (in place), the round
    times through rounds(scenario_id) -> list (statistics recomputed), environment.json keys."""
    lines = []
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if rounds is not None and record["status"] == "ok":
            times = rounds(record["scenario_id"])
            (run_dir / record["files"]["benchmark_json"]).write_text(
                json.dumps({"benchmarks": [{"stats": {"data": times}}]})
            )
            stats = LatencyStats.from_times(times)
            record["latency_s"] = stats.__dict__
            record["throughput_samples_per_s"] = record["batch_size"] / stats.mean
        if edit_record is not None:
            edit_record(record)
        lines.append(json.dumps(record))
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    if environment:
        env = json.loads((run_dir / "environment.json").read_text())
        for key, value in environment.items():
            if isinstance(value, dict) and isinstance(env.get(key), dict):
                env[key] = {**env[key], **value}
            else:
                env[key] = value
        (run_dir / "environment.json").write_text(json.dumps(env))
    return run_dir


def pair(tmp_path: Path, *, seed_b: int = 1, seed_c: int = 2, slow: float = 1.0, specs=SPECS, **candidate_edits):
    """A baseline and a candidate run of the same suite; the candidate `slow` times slower."""
    medians = {s.scenario_id: s.median_ms for s in specs}
    base = make_run(tmp_path, specs, run_id="20260101-120000-demo")
    edit_run(base, rounds=lambda sid: draw(seed_b + zlib.crc32(sid.encode()) % 1000, median_ms=medians[sid]))
    cand = make_run(tmp_path, specs, run_id="20260102-120000-demo")
    edit_run(
        cand,
        rounds=lambda sid: draw(seed_c + zlib.crc32(sid.encode()) % 1000, median_ms=medians[sid] * slow),
        **candidate_edits,
    )
    return load_run(base, with_round_times=True), load_run(cand, with_round_times=True)


def verdicts(comparison, metric: str) -> dict[str, str]:
    return {r.scenario_id: r.verdict for r in comparison.rows if r.metric == metric}


# --- statistics ----------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_and_seeded():
    a, b = draw(1), draw(2)
    first = bootstrap_changes(a, b, Rule(), "x")
    assert bootstrap_changes(a, b, Rule(), "x") == first
    assert bootstrap_changes(a, b, Rule(seed=7), "x") != first
    assert bootstrap_changes(a, b, Rule(), "y") != first  # each scenario has its own stream


def test_bootstrap_interval_covers_a_known_shift():
    a, b = draw(1, n=2000), [t * 1.2 for t in draw(2, n=2000)]
    changes = bootstrap_changes(a, b, Rule(), "x")
    change, (low, high) = changes["median"].change, changes["median"].ci
    assert low < 0.2 < high and low < change < high and high - low < 0.05
    t_change, (t_low, t_high) = changes["throughput"].change, changes["throughput"].ci
    assert t_low < 1 / 1.2 - 1 < t_high and t_change < 0


def test_bootstrap_intervals_are_wide_for_few_rounds():
    few = bootstrap_changes(draw(1, n=20), draw(2, n=20), Rule(), "x")
    many = bootstrap_changes(draw(1, n=2000), draw(2, n=2000), Rule(), "x")
    width = lambda c: c.ci[1] - c.ci[0]  # noqa: E731
    assert width(few["median"]) > 3 * width(many["median"])


@pytest.mark.parametrize(
    ("change", "ci", "higher_is_better", "expected"),
    [
        (0.10, (0.08, 0.12), False, "regressed"),
        (0.05, (0.01, 0.09), False, "regressed"),  # exactly the threshold, CI excludes 0
        (0.10, (-0.02, 0.22), False, "inconclusive"),  # big but too noisy
        (0.03, (0.02, 0.04), False, "unchanged"),  # significant but small
        (0.03, (0.00, 0.06), False, "inconclusive"),  # might be >= 5 %
        (-0.10, (-0.12, -0.08), False, "improved"),
        (-0.10, (-0.12, -0.08), True, "regressed"),  # throughput fell
        (0.10, (0.08, 0.12), True, "improved"),
        (0.0, (-0.01, 0.01), True, "unchanged"),
    ],
)
def test_verdict_with_ci(change, ci, higher_is_better, expected):
    assert verdict_with_ci(change, ci, 0.05, higher_is_better) == expected


def test_a_change_within_the_runs_own_drift_is_not_trusted():
    assert verdict_with_ci(0.30, (0.28, 0.32), 0.05, False, drift=0.5) == "inconclusive"
    assert verdict_with_ci(0.30, (0.28, 0.32), 0.05, False, drift=0.1) == "regressed"
    assert verdict_with_ci(0.01, (0.00, 0.02), 0.05, False, drift=0.2) == "inconclusive"
    assert verdict_with_ci(0.01, (0.00, 0.02), 0.05, False, drift=0.01) == "unchanged"
    # as ratios: throughput -50 % is a latency x2, beyond a drift of +80 % but not of +120 %
    assert verdict_with_ci(-0.5, (-0.55, -0.45), 0.05, True, drift=0.8) == "regressed"
    assert verdict_with_ci(-0.5, (-0.55, -0.45), 0.05, True, drift=1.2) == "inconclusive"


def test_verdict_single():
    assert verdict_single(0.2, 0.1, False) == "regressed"
    assert verdict_single(0.05, 0.1, False) == "unchanged"
    assert verdict_single(-0.2, 0.1, False) == "improved"
    assert verdict_single(0.5, 0.25, False, absolute=0.001, min_absolute=0.005) == "inconclusive"
    assert verdict_single(0.5, 0.25, False, absolute=0.010, min_absolute=0.005) == "regressed"


def drifting(seed: int, n: int = 8000) -> list[float]:
    """A run on a machine that is busy about a third of the time: tiny_mlp's rounds take 27 us
    when it is quiet and 45 us when a neighbour runs on the sibling hyperthread, in stretches
    of a few hundred rounds (as seen on a 2-core machine)."""
    rng = random.Random(seed)
    times: list[float] = []
    while len(times) < n:
        level = 45e-6 if rng.random() < 0.3 else 27e-6
        times += [level * rng.lognormvariate(0, 0.03) for _ in range(rng.randint(200, 1500))]
    return times[:n]


def test_drift_is_about_zero_for_a_steady_run_and_large_for_a_switching_one():
    import numpy as np

    rng = np.random.default_rng(0)
    assert drift(draw(1, n=4000), "median", rng) < 0.02
    assert drift(draw(1, n=4000), "mean", rng) < 0.05
    assert drift(drifting(1), "median", rng) > 0.3
    assert drift(draw(1, n=150), "median", rng) is None  # chunks of 15 rounds say nothing
    assert drift(draw(1, n=500), "p99", rng) is None


def test_a_and_a_on_a_switching_machine_is_inconclusive_not_improved(tmp_path):
    specs = [Spec(median_ms=0.03)]
    for seed in range(6):
        base = edit_run(make_run(tmp_path / str(seed), specs, run_id="a"), rounds=lambda sid, s=seed: drifting(2 * s))
        cand = edit_run(
            make_run(tmp_path / str(seed), specs, run_id="b"), rounds=lambda sid, s=seed: drifting(2 * s + 1)
        )
        comparison = compare_runs(load_run(base, with_round_times=True), load_run(cand, with_round_times=True))
        for row in comparison.rows:
            if row.metric in ("median", "p99", "throughput"):
                assert row.verdict == "inconclusive" or (row.verdict == "unchanged" and row.change is not None), row
        median = next(r for r in comparison.rows if r.metric == "median")
        assert median.verdict == "inconclusive" and "run drifted by" in median.note


def test_a_big_slowdown_on_a_switching_machine_is_still_regressed(tmp_path):
    specs = [Spec(median_ms=0.03)]
    base = edit_run(make_run(tmp_path, specs, run_id="a"), rounds=lambda sid: drifting(1))
    cand = edit_run(make_run(tmp_path, specs, run_id="b"), rounds=lambda sid: [4 * t for t in drifting(2)])
    comparison = compare_runs(load_run(base, with_round_times=True), load_run(cand, with_round_times=True))
    assert verdicts(comparison, "median") == {MLP: "regressed"}


@given(
    change=st.floats(-0.5, 0.5),
    low=st.floats(-0.5, 0.5),
    width=st.floats(0, 0.5),
    higher_is_better=st.booleans(),
)
def test_verdicts_mirror_when_the_runs_swap_roles(change, low, width, higher_is_better):
    mirror = {
        "regressed": "improved",
        "improved": "regressed",
        "unchanged": "unchanged",
        "inconclusive": "inconclusive",
    }
    ci = (low, low + width)
    forward = verdict_with_ci(change, ci, 0.05, higher_is_better)
    assert verdict_with_ci(-change, (-ci[1], -ci[0]), 0.05, higher_is_better) == mirror[forward]
    assert verdict_with_ci(change, ci, 0.05, not higher_is_better) == mirror[forward]
    if forward in ("regressed", "improved"):
        assert abs(change) >= 0.05 and not ci[0] <= 0 <= ci[1]


def test_rule_rejects_nonsense():
    for kwargs in ({"threshold": 0}, {"confidence": 1.2}, {"resamples": 5}, {"memory_threshold": -0.1}):
        with pytest.raises(UserError):
            Rule(**kwargs)


# --- verdicts on whole runs ----------------------------------------------------------------------


def test_a_and_a_is_never_regressed(tmp_path):
    for seed in range(5):
        base, cand = pair(tmp_path / str(seed), seed_b=10 * seed, seed_c=10 * seed + 1)
        comparison = compare_runs(base, cand)
        assert not comparison.regressed, format_text(comparison)
        assert {r.verdict for r in comparison.rows} <= {"unchanged", "inconclusive"}
        assert set(verdicts(comparison, "median").values()) == {"unchanged"}  # p99 from a 2 % tail may be noisy


def test_a_run_compared_with_itself_or_its_copy_says_so(tmp_path, capsys):
    # `bench compare RUN RUN` read 19 of 30 inconclusive with nothing saying no second measurement existed.
    base, _ = pair(tmp_path / "self")
    assert main(["compare", base.source, base.source, "--format", "markdown"]) == 0
    assert f"the baseline and the candidate are the same run ({base.run_id})" in capsys.readouterr().out
    assert "same run" in format_text(compare_runs(base, base)).split("scenario")[0]  # a warning above the table
    copy = make_run(tmp_path / "copy", SPECS, run_id="20260103-120000-demo")
    edit_run(copy, rounds=lambda sid: base.results[sid].round_times)
    (warning, *_) = compare_runs(base, load_run(copy, with_round_times=True)).warnings
    assert "hold identical measurements" in warning and "one run copied, not two" in warning
    assert not any("same run" in w or "identical" in w for w in compare_runs(*pair(tmp_path / "two")).warnings)


def test_a_slowdown_is_regressed_and_a_speedup_improved(tmp_path):
    base, cand = pair(tmp_path / "slow", slow=1.3)
    comparison = compare_runs(base, cand)
    assert set(verdicts(comparison, "median").values()) == {"regressed"}
    assert set(verdicts(comparison, "throughput").values()) == {"regressed"}
    assert comparison.regressed
    row = next(r for r in comparison.rows if r.scenario_id == MLP and r.metric == "median")
    assert row.change == pytest.approx(0.3, abs=0.05) and row.ci[0] > 0.2

    base, cand = pair(tmp_path / "fast", slow=0.7)
    comparison = compare_runs(base, cand)
    assert set(verdicts(comparison, "median").values()) == {"improved"}
    assert not comparison.regressed


def test_small_noisy_samples_are_inconclusive(tmp_path):
    specs = [Spec(median_ms=1.0)]
    base = edit_run(make_run(tmp_path, specs, run_id="a"), rounds=lambda sid: draw(1, n=12, noise=0.3))
    cand = edit_run(
        make_run(tmp_path, specs, run_id="b"), rounds=lambda sid: [t * 1.08 for t in draw(2, n=12, noise=0.3)]
    )
    comparison = compare_runs(load_run(base, with_round_times=True), load_run(cand, with_round_times=True))
    assert verdicts(comparison, "median") == {MLP: "inconclusive"}


def test_memory_has_its_own_threshold(tmp_path):
    def fatter(factor):
        def edit(record):
            record["rss_bytes"]["peak"] = int(record["rss_bytes"]["peak"] * factor)

        return edit

    base, cand = pair(tmp_path / "20", seed_c=1, edit_record=fatter(1.2))
    comparison = compare_runs(base, cand)
    assert set(verdicts(comparison, "peak_rss").values()) == {"regressed"}
    assert set(verdicts(comparison, "median").values()) == {"unchanged"}
    row = next(r for r in comparison.rows if r.metric == "peak_rss")
    assert row.change == pytest.approx(0.2, abs=0.01) and row.ci is None and "one value per run" in row.note

    base, cand = pair(tmp_path / "7", seed_c=1, edit_record=fatter(1.07))
    assert set(verdicts(compare_runs(base, cand), "peak_rss").values()) == {"unchanged"}
    strict = compare_runs(base, cand, Rule(memory_threshold=0.05))
    assert set(verdicts(strict, "peak_rss").values()) == {"regressed"}


def test_the_kernel_peak_is_preferred_when_both_runs_have_it(tmp_path):
    def kernel(value):
        return lambda record: record.update(peak_rss_kernel_bytes=value)

    base, cand = pair(tmp_path, seed_c=1)
    # sampled peaks equal, kernel peaks 30 % apart: the kernel's figure decides
    base = load_run(edit_run(Path(base.source), kernel(500 * MIB)), with_round_times=True)
    cand = load_run(edit_run(Path(cand.source), kernel(650 * MIB)), with_round_times=True)
    rows = [r for r in compare_runs(base, cand).rows if r.metric == "peak_rss"]
    assert {r.verdict for r in rows} == {"regressed"} and "kernel VmHWM" in rows[0].note


def test_load_time_needs_a_big_and_absolute_change(tmp_path):
    def load(seconds):
        return lambda record: record.update(load_s=seconds)

    base, _ = pair(tmp_path / "a")
    base = load_run(edit_run(Path(base.source), load(0.004)), with_round_times=True)
    for candidate_load, expected in (
        (0.0041, "unchanged"),  # +2.5 %
        (0.0045, "inconclusive"),  # +12.5 %: more than the latency threshold, one event cannot tell
        (0.006, "inconclusive"),  # +50 %
        (0.0095, "inconclusive"),  # +138 % but only 5.5 ms
        (0.040, "regressed"),  # 10x and 36 ms
        (0.0001, "inconclusive"),  # -97 % but only 3.9 ms
    ):
        _, cand = pair(tmp_path / str(candidate_load), seed_c=1)
        cand = load_run(edit_run(Path(cand.source), load(candidate_load)), with_round_times=True)
        got = set(verdicts(compare_runs(base, cand), "load").values())
        assert got == {expected}, (candidate_load, got)


def test_a_scenario_that_now_fails_is_a_regression(tmp_path):
    def fail_mlp(record):
        if record["scenario_id"] == MLP:
            record.update(status="failed", reason="RuntimeError: boom\nmore", latency_s=None)

    base, cand = pair(tmp_path, seed_c=1, edit_record=fail_mlp)
    comparison = compare_runs(base, cand)
    [row] = [r for r in comparison.rows if r.scenario_id == MLP]
    assert (row.metric, row.verdict, row.baseline, row.candidate) == ("status", "regressed", "ok", "failed")
    assert row.note == "RuntimeError: boom"
    assert comparison.regressed
    assert not compare_runs(cand, base).regressed  # and the other way round it is an improvement


def test_too_few_rounds_give_no_interval(tmp_path):
    specs = [Spec(median_ms=1.0)]
    base = edit_run(make_run(tmp_path, specs, run_id="a"), rounds=lambda sid: draw(1, n=5, noise=0.01))
    cand = edit_run(
        make_run(tmp_path, specs, run_id="b"), rounds=lambda sid: [t * 1.5 for t in draw(2, n=5, noise=0.01)]
    )
    row = next(
        r
        for r in compare_runs(load_run(base, with_round_times=True), load_run(cand, with_round_times=True)).rows
        if r.metric == "median"
    )
    assert row.verdict == "inconclusive" and row.ci is None and "only 5 rounds" in row.note


def test_a_different_cpu_share_is_noted_but_does_not_decide(tmp_path):
    base, cand = pair(tmp_path, slow=1.3, edit_record=lambda r: r.update(cpu_utilization=0.6))
    base = load_run(edit_run(Path(base.source), lambda r: r.update(cpu_utilization=1.0)), with_round_times=True)
    row = next(r for r in compare_runs(base, cand).rows if r.scenario_id == MLP and r.metric == "median")
    assert row.verdict == "regressed" and "CPU utilization 1.00 vs 0.60" in row.note


def test_a_contended_row_is_inconclusive_never_regressed(tmp_path):
    contended = {"verdict": "contended", "why": "other processes used 1.50 cores"}
    base, cand = pair(tmp_path, slow=1.5, edit_record=lambda r: r.update(contention=contended))
    comparison = compare_runs(base, cand)
    assert set(verdicts(comparison, "median").values()) == {"inconclusive"}
    assert set(verdicts(comparison, "throughput").values()) == {"inconclusive"}
    assert not comparison.regressed
    row = next(r for r in comparison.rows if r.scenario_id == MLP and r.metric == "median")
    assert "candidate row was measured on a contended host" in row.note
    quiet = {"verdict": "quiet", "why": "-"}
    base, cand = pair(tmp_path / "quiet", slow=1.5, edit_record=lambda r: r.update(contention=quiet))
    assert set(verdicts(compare_runs(base, cand), "median").values()) == {"regressed"}


def test_memory_measured_with_another_worker_kind_is_inconclusive_never_improved(tmp_path):
    def forked_and_leaner(record):
        record.update(worker_kind="fork")
        record["rss_bytes"]["peak"] = int(record["rss_bytes"]["peak"] * 0.6)  # the zygote's pages are shared
        if record.get("peak_rss_kernel_bytes"):
            record["peak_rss_kernel_bytes"] = int(record["peak_rss_kernel_bytes"] * 0.6)

    base, cand = pair(tmp_path, edit_record=forked_and_leaner)
    # the baseline's rows predate worker kinds (they lack the field): fresh, by bench.results.record.ROW_DEFAULTS
    base = load_run(edit_run(Path(base.source), lambda r: r.pop("worker_kind")), with_round_times=True)
    comparison = compare_runs(base, cand)
    memory = [r for r in comparison.rows if r.metric.startswith("peak_rss")]
    assert memory and {r.verdict for r in memory} == {"inconclusive"}
    assert all("measured with fresh then fork workers" in r.note for r in memory)
    assert set(verdicts(comparison, "median").values()) == {"unchanged"}  # time figures are compared as ever
    same, cand = pair(
        tmp_path / "same", edit_record=lambda r: r["rss_bytes"].update(peak=int(r["rss_bytes"]["peak"] * 0.6))
    )
    assert "improved" in {r.verdict for r in compare_runs(same, cand).rows if r.metric == "peak_rss"}


def test_missing_raw_rounds_give_no_interval(tmp_path):
    base, cand = pair(tmp_path, slow=1.3)
    (Path(cand.source) / f"benchmark/{MLP}.json").unlink()
    cand = load_run(Path(cand.source), with_round_times=True)
    comparison = compare_runs(base, cand)
    row = next(r for r in comparison.rows if r.scenario_id == MLP and r.metric == "median")
    assert row.verdict == "inconclusive" and row.ci is None and "no raw round times" in row.note
    assert any("is missing" in w for w in comparison.warnings)


# --- comparability -------------------------------------------------------------------------------


def test_different_environments_are_refused_by_name(tmp_path):
    base, cand = pair(tmp_path, seed_c=1, environment={"cpu_model": "Other CPU", "libraries": {"torch": "2.15.0"}})
    with pytest.raises(IncomparableError) as info:
        compare_runs(base, cand)
    message = str(info.value)
    assert "cpu_model: Test CPU 9000 (baseline) vs Other CPU (candidate)" in message
    assert "libraries.torch: 2.14.1 (baseline) vs 2.15.0 (candidate)" in message
    assert "--allow-env-mismatch" in message

    comparison = compare_runs(base, cand, allow_env_mismatch=True)
    assert all(r.note.startswith("WARNING: environment differs (cpu_model, libraries.torch)") for r in comparison.rows)
    assert not comparison.comparable and "allow-env-mismatch" in comparison.warnings[0]


def test_thread_variables_and_allocator_count_but_per_scenario_thread_counts_do_not(tmp_path):
    base, cand = pair(tmp_path / "omp", seed_c=1, environment={"env_vars": {"OMP_NUM_THREADS": "8"}})
    assert compare_runs(base, cand).comparable  # the worker sets it from the scenario
    base, cand = pair(tmp_path / "kmp", seed_c=1, environment={"env_vars": {"KMP_AFFINITY": "compact"}})
    with pytest.raises(IncomparableError, match="env_vars.KMP_AFFINITY: missing"):
        compare_runs(base, cand)
    base, cand = pair(tmp_path / "malloc", seed_c=1, environment={"allocator": "jemalloc"})
    with pytest.raises(IncomparableError, match="allocator"):
        compare_runs(base, cand)


def test_different_thread_counts_are_refused(tmp_path):
    base = load_run(make_run(tmp_path, [Spec(threads=1)], run_id="a"), with_round_times=True)
    cand = load_run(make_run(tmp_path, [Spec(threads=2)], run_id="b"), with_round_times=True)
    with pytest.raises(
        IncomparableError,
        match=r"tiny_mlp-b1-t1-fp32-eager / tiny_mlp-b1-t2-fp32-eager: threads=1 in the baseline, threads=2",
    ):
        compare_runs(base, cand)
    comparison = compare_runs(base, cand, allow_env_mismatch=True)
    assert comparison.rows[0].scenario_id == "tiny_mlp-b1-t1-fp32-eager vs tiny_mlp-b1-t2-fp32-eager"
    assert all("thread settings differ" in r.note for r in comparison.rows)


def test_same_id_but_threads_torch_really_used_differ_is_refused(tmp_path):
    base, cand = pair(tmp_path, seed_c=1, edit_record=lambda r: r.update(torch_num_threads=4))
    base = load_run(edit_run(Path(base.source), lambda r: r.update(torch_num_threads=1)), with_round_times=True)
    with pytest.raises(IncomparableError, match="torch_num_threads 1 vs 4"):
        compare_runs(base, cand)


def test_nothing_in_common_is_a_user_error(tmp_path):
    base = load_run(make_run(tmp_path, [Spec(model="tiny_cnn")], run_id="a"), with_round_times=True)
    cand = load_run(make_run(tmp_path, [Spec(batch_size=8)], run_id="b"), with_round_times=True)
    with pytest.raises(UserError, match="no scenario in common"):
        compare_runs(base, cand)


def test_scenarios_on_one_side_only_are_named(tmp_path):
    base = load_run(make_run(tmp_path, SPECS, run_id="a"), with_round_times=True)
    cand = load_run(
        make_run(tmp_path, SPECS[:2] + [Spec(model="tiny_cnn", batch_size=8)], run_id="b"), with_round_times=True
    )
    comparison = compare_runs(base, cand)
    assert comparison.baseline_only == ["tiny_cnn-b1-t1-fp32-eager"]
    assert comparison.candidate_only == ["tiny_cnn-b8-t1-fp32-eager"]
    assert any("only in the baseline: tiny_cnn-b1-t1-fp32-eager" in w for w in comparison.warnings)


# --- output --------------------------------------------------------------------------------------


def test_markdown_for_a_pull_request(tmp_path):
    base, cand = pair(tmp_path, slow=1.3)
    text = format_markdown(compare_runs(base, cand))
    assert text.startswith("### bench compare: **") and "regressed**, 0 improved" in text.splitlines()[0]
    assert "| scenario | metric | baseline | candidate | change | 95% CI | verdict | note |" in text
    assert f"| {MLP} | median latency |" in text and "**regressed**" in text
    assert "<details><summary>All 15 comparisons</summary>" in text
    regressed_part = text.split("<details>")[0]
    assert "load time" not in regressed_part  # only what changed comes first


def test_markdown_escapes_what_would_break_a_table(tmp_path):
    def fail(record):
        if record["scenario_id"] == MLP:
            record.update(status="failed", reason="a | b <script>", latency_s=None)

    base, cand = pair(tmp_path, seed_c=1, edit_record=fail)
    text = format_markdown(compare_runs(base, cand))
    assert "a \\| b &lt;script&gt;" in text and "<script>" not in text


def test_github_format_appends_a_job_summary_and_annotates_each_regression(tmp_path, monkeypatch, capsys):
    base, cand = pair(tmp_path, slow=1.3)
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step's summary\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert main(["compare", base.source, cand.source, "--format", "github"]) == 1
    text = summary.read_text()
    assert text.startswith("earlier step's summary\n### bench compare: :x: **")  # appended, never replaced
    assert "<details><summary>All 15 comparisons</summary>" in text
    errors = [line for line in capsys.readouterr().out.splitlines() if line.startswith("::error ")]
    regressed = [r for r in compare_runs(base, cand).rows if r.verdict == "regressed"]
    assert len(errors) == len(regressed) >= 6
    assert any(line.startswith(f"::error title=bench compare: {MLP}::median latency regressed (+") for line in errors)

    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    same, again = pair(tmp_path / "same")
    assert main(["compare", same.source, again.source, "--format", "github"]) == 0
    assert capsys.readouterr().out.startswith("### bench compare: :white_check_mark: ")  # no annotation, to stdout


def test_json_is_complete_and_reproducible(tmp_path):
    base, cand = pair(tmp_path, slow=1.3)
    first = to_json(compare_runs(base, cand))
    assert json.dumps(first) == json.dumps(to_json(compare_runs(base, cand)))
    summary = first["summary"]
    assert summary["regressed"] >= 6 and summary["improved"] == 0 and summary["scenarios"] == 3
    assert sum(summary[v] for v in ("regressed", "improved", "unchanged", "inconclusive")) == len(first["rows"]) == 15
    assert first["baseline"]["run_id"] == "20260101-120000-demo" and first["comparable"] is True
    assert first["rule"]["threshold"] == 0.05 and first["rule"]["seed"] == 0
    row = next(r for r in first["rows"] if r["scenario_id"] == MLP and r["metric"] == "median")
    assert row["verdict"] == "regressed" and row["ci_low"] < row["change"] < row["ci_high"]
    assert row["unit"] == "ms" and row["baseline"] < row["candidate"]


def test_text_table(tmp_path):
    base, cand = pair(tmp_path, slow=1.3)
    text = format_text(compare_runs(base, cand), changes_only=True)
    assert "baseline:  20260101-120000-demo" in text and "regressed" in text.split("summary: ")[1]
    assert "load time" not in text.split("rule:")[0]  # unchanged rows left out


# --- the command line ----------------------------------------------------------------------------


def test_cli_exit_status_is_the_gate(tmp_path, capsys):
    base, cand = pair(tmp_path / "slow", slow=1.3)
    assert main(["compare", base.source, cand.source, "--history", str(tmp_path / "none.sqlite")]) == 1
    assert "regressed" in capsys.readouterr().out
    base, cand = pair(tmp_path / "same", seed_c=3)
    assert main(["compare", base.source, cand.source, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["regressed"] == 0


def test_cli_baseline_by_label_from_the_history_and_output_file(tmp_path, capsys):
    hist = tmp_path / "history.sqlite"
    base, cand = pair(tmp_path, slow=1.3)
    record_run(hist, Path(base.source), label="main")
    record_run(hist, Path(cand.source), label="main")  # the candidate itself is never its own baseline
    out = tmp_path / "comment.md"
    args = ["compare", "--baseline", "main", cand.run_id, "--history", str(hist), "--format", "markdown"]
    assert main([*args, "--output", str(out)]) == 1
    assert "regressed, 0 improved" in capsys.readouterr().err
    assert f"Baseline `{base.run_id}`" in out.read_text()
    assert main(["compare", "--baseline", "main", cand.source, "--history", str(tmp_path / "none.sqlite")]) == 2
    assert "--baseline main looks in the history, and there is none at" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["compare", "nope-1", "nope-2"], "is neither a run folder nor a run id"),
        (["compare", "reports/missing", "reports/also-missing"], "no such run folder"),
        (["compare", "only-one"], "give both BASELINE and CANDIDATE"),
        (["compare", "a", "b", "--threshold", "0"], "threshold must be a percentage"),
    ],
)
def test_cli_user_errors_have_status_2(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_cli_unknown_run_id_in_a_history(tmp_path, capsys):
    hist = tmp_path / "h.sqlite"
    base, _ = pair(tmp_path)
    record_run(hist, Path(base.source))
    assert main(["compare", "20260101-120000-dmeo", base.source, "--history", str(hist)]) == 2
    assert "unknown run id '20260101-120000-dmeo'" in capsys.readouterr().err


def test_cli_refuses_a_mismatch_with_status_2_and_allows_it_on_request(tmp_path, capsys):
    base, cand = pair(tmp_path, seed_c=1, environment={"kernel": "7.0.0"})
    assert main(["compare", base.source, cand.source]) == 2
    assert "kernel: missing (baseline) vs 7.0.0 (candidate)" in capsys.readouterr().err
    assert main(["compare", base.source, cand.source, "--allow-env-mismatch"]) == 0
    assert "WARNING: environment differs (kernel)" in capsys.readouterr().out


def test_cli_compare_help(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    for fragment in (
        "BASELINE CANDIDATE",
        "--baseline NAME",
        "--threshold",
        "--memory-threshold",
        "--allow-env-mismatch",
        "--format",
        "exit status",
    ):
        assert fragment in out


def test_demo_runs_compare_with_themselves_as_unchanged(tmp_path):
    run = load_run(make_run(tmp_path), with_round_times=True)
    comparison = compare_runs(run, run)
    assert comparison.count("regressed") == comparison.count("improved") == 0
    assert comparison.scenarios == len(DEMO)


# --- fleet runs: each row's own host, not the client, decides comparability ---------------------


def _as_fleet(fingerprints: dict[str, str]):
    def edit(record):
        record["fleet"] = {"worker": "tcp://h:1", "host": "h"}
        record["environment_fingerprint"] = fingerprints.get(record["scenario_id"], "host-a")

    return edit


def test_fleet_runs_are_compared_host_by_host_not_by_their_clients(tmp_path):
    # Same hosts, different clients (another laptop sent the candidate's scenarios): comparable.
    base, cand = pair(tmp_path, environment={"cpu_model": "the candidate's laptop"}, edit_record=_as_fleet({}))
    base = load_run(edit_run(Path(base.source), edit_record=_as_fleet({})), with_round_times=True)
    assert compare_runs(base, cand).environment_differences == []
    # One scenario's host changed (another CPU in that host group): refused, naming the scenario.
    changed = pair(tmp_path / "2", edit_record=_as_fleet({MLP: "host-b"}))[1]
    with pytest.raises(UserError, match=f"{MLP}: measured on host environment host-a .baseline. vs host-b"):
        compare_runs(base, changed)


def _fleet_candidate(tmp_path: Path, fingerprint: str, host_environment: dict | None):
    """The same suite measured on a fleet: its environment.json is the client's (here: identical to the
    local run's), each row carries its host's fingerprint, environments/<fp>.json keeps that host's."""
    base, cand = pair(tmp_path, edit_record=_as_fleet({s.scenario_id: fingerprint for s in SPECS}))
    if host_environment is not None:
        folder = Path(cand.source) / "environments"
        folder.mkdir()
        env = {**json.loads((Path(cand.source) / "environment.json").read_text()), **host_environment}
        (folder / f"{fingerprint}.json").write_text(json.dumps({**env, "fingerprint": fingerprint}))
    return base, load_run(Path(cand.source), with_round_times=True)


def test_a_local_run_against_a_fleet_run_compares_each_rows_host_not_the_client(tmp_path):
    # The client's environment.json matches the local run's, but the hosts that measured were other CPUs.
    base, cand = _fleet_candidate(tmp_path, "host-a", {"cpu_model": "Fleet CPU"})
    with pytest.raises(IncomparableError) as info:
        compare_runs(base, cand)
    expected = (
        f"{MLP}: measured on host environment f00dfeedf00dfeed (baseline) vs host-a (candidate) "
        "(cpu_model: Test CPU 9000 (baseline) vs Fleet CPU (candidate))"
    )
    assert expected in str(info.value)
    with pytest.raises(IncomparableError, match="cpu_model: Fleet CPU .baseline. vs Test CPU 9000 .candidate."):
        compare_runs(cand, base)  # either side may be the fleet run
    comparison = compare_runs(base, cand, allow_env_mismatch=True)
    assert all(r.note.startswith("WARNING: host environment differs") for r in comparison.rows)

    # A host whose environment is not kept: still refused, saying it cannot say how.
    base, cand = _fleet_candidate(tmp_path / "unkept", "host-b", None)
    with pytest.raises(IncomparableError, match="no environment is kept for the candidate host .host-b."):
        compare_runs(base, cand)

    # Fleet hosts with the local machine's environment: comparable, whatever the client was.
    base, cand = _fleet_candidate(tmp_path / "same", "f00dfeedf00dfeed", None)
    edit_run(Path(cand.source), environment={"cpu_model": "the client's laptop"})
    assert compare_runs(base, load_run(Path(cand.source), with_round_times=True)).comparable


def _rename(old: str, new: str, **fields):
    def edit(record):
        if record["scenario_id"] == old:
            record.update(scenario_id=new, **fields)

    return edit


CNN = "tiny_cnn-b1-t1-fp32-eager"


@pytest.mark.parametrize(
    ("new_id", "fields"),
    [(f"{CNN}@lab", {"host_group": "lab"}), (f"{CNN}-pruned-l1-50", {"variant": "pruned-l1-50"})],
)
def test_scenarios_on_another_host_group_or_variant_are_not_a_thread_difference(tmp_path, new_id, fields):
    base, cand = pair(tmp_path, seed_c=1, edit_record=_rename(CNN, new_id, **fields))
    comparison = compare_runs(base, cand)  # not refused: nothing about threads differs
    assert comparison.thread_differences == []
    assert comparison.baseline_only == [CNN] and comparison.candidate_only == [new_id]
    assert comparison.scenarios == 2


def test_ids_that_differ_but_not_in_threads_are_never_called_a_thread_difference(tmp_path):
    base, cand = pair(tmp_path, seed_c=1, edit_record=_rename(CNN, f"{CNN}-other"))
    comparison = compare_runs(base, cand)
    assert comparison.thread_differences == [] and comparison.candidate_only == [f"{CNN}-other"]


def test_a_thread_warning_marks_only_its_own_scenario_not_those_whose_id_it_extends(tmp_path):
    longer = f"{MLP}-s64x2"  # MLP is a prefix of this id
    rename = _rename("tiny_mlp-b4-t1-fp32-eager", longer)
    base, cand = pair(
        tmp_path,
        seed_c=1,
        edit_record=lambda r: (rename(r), r.update(torch_num_threads=4 if r["scenario_id"] == longer else 1)),
    )
    base = load_run(
        edit_run(Path(base.source), lambda r: (rename(r), r.update(torch_num_threads=1))), with_round_times=True
    )
    comparison = compare_runs(base, cand, allow_env_mismatch=True)
    assert comparison.thread_differences == [f"{longer}: torch_num_threads 1 vs 4 (baseline vs candidate)"]
    notes = {r.scenario_id: r.note for r in comparison.rows if r.metric == "median"}
    assert "thread settings differ" in notes[longer]
    assert "thread settings differ" not in notes[MLP]


def test_each_metric_reads_its_figure_from_a_typed_record():
    record, _ = make_record(Spec(median_ms=1.0))
    record = dataclasses.replace(record, peak_rss_kernel_bytes=600 * MIB)
    figures = {name: metric.of(record) for name, metric in METRICS.items()}
    assert figures == {
        "median": record.latency_s.median,
        "p90": record.latency_s.p90,
        "p99": record.latency_s.p99,
        "mean": record.latency_s.mean,
        "throughput": record.throughput_samples_per_s,
        "load": 0.02,
        "first_inference": 0.003,
        "peak_rss": 540.0 * MIB,
        "peak_rss_kernel": 600.0 * MIB,
    }
    # absent (a block that is None), not a number, or not finite: None
    odd = dataclasses.replace(record, latency_s=None, load_s=True, first_inference_s=math.nan)
    assert [METRICS[name].of(odd) for name in ("median", "load", "first_inference")] == [None, None, None]
    # a path that names no field is an error, never a silent None
    with pytest.raises(AttributeError, match="medain"):
        Metric("typo", "typo", "s", "typo_s", ("latency_s", "medain")).of(record)
