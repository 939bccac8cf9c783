"""Per-operator profiles (bench.profiling): files, the self-time property, comparisons, FLOPs, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from bench import backends, models, profiling
from bench.suite import Scenario

REPO = Path(__file__).resolve().parent.parent


def _scenario(model: str, precision: str = "fp32", load: str = "eager", threads: int = 1) -> Scenario:
    return Scenario(
        model=model, batch_size=1, threads=threads, interop_threads=1, precision=precision, load=load,
        input_shape=models.default_input_shape(model), timeout_s=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profiling")


@pytest.fixture(scope="module")
def profile(workdir: Path):
    """Profile a scenario once per module: profile('tiny_mlp', 'int8_dynamic') -> ProfileResult."""
    done: dict[str, profiling.ProfileResult] = {}

    def run(model: str, precision: str = "fp32", load: str = "eager", iterations: int = 30):
        scenario = _scenario(model, precision, load)
        if scenario.id not in done:
            artifact = backends.prepare_artifact(scenario, cache_dir=workdir / "cache")
            done[scenario.id] = profiling.profile_scenario(scenario, artifact.path, workdir / scenario.id, iterations)
        return done[scenario.id]

    return run


def _check_ops_csv(path: Path) -> pd.DataFrame:
    table = profiling.read_ops(path)
    assert list(table.columns) == profiling.OPS_COLUMNS
    assert len(table) > 0
    assert (table["calls"] > 0).all() and (table["self_cpu_s"] >= 0).all()
    assert table["self_cpu_pct"].sum() == pytest.approx(100.0)
    assert table["self_cpu_s"].is_monotonic_decreasing
    return table


@pytest.mark.slow
def test_torch_profile_files_and_the_self_time_explains_the_latency(profile):
    result = profile("tiny_cnn")
    assert result.status == "ok", result.note
    trace = json.loads(result.trace_json.read_text(encoding="utf-8"))
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    assert any(e.get("name") == profiling.ITERATION_RANGE for e in trace["traceEvents"])

    table = _check_ops_csv(result.ops_csv)
    ops = set(table["op"])
    assert "aten::conv2d" in ops and profiling.OUTSIDE_OPS in ops
    conv = table[table["op"] == "aten::conv2d"].iloc[0]
    assert conv["calls_per_iter"] == 2 and "[1, 3, 32, 32]" in conv["input_shapes"]
    assert table["cpu_memory_bytes"].abs().sum() > 0  # profile_memory recorded allocations

    summary = result.summary
    assert summary["iterations"] == 30 and summary["threads"] == 1 and summary["torch_num_threads"] == 1
    assert len(summary["top_ops"]) == min(profiling.TOP_OPS, len(table))
    assert summary["profiled_median_s"] > 0
    # At one thread the calling thread's self time per iteration is the iteration's time.
    assert 0.85 <= summary["explained_ratio"] <= 1.15, summary
    assert 0 < summary["ops_only_ratio"] < summary["explained_ratio"]
    assert summary["other_threads_self_s"] == 0
    fields = result.record_fields()
    assert fields["status"] == "ok" and fields["top_op"] == summary["top_ops"][0]["op"]


@pytest.mark.slow
def test_compare_ops_finds_the_int8_only_ops(profile):
    fp32, int8 = profile("tiny_mlp"), profile("tiny_mlp", "int8_dynamic")
    assert fp32.ok and int8.ok, (fp32.note, int8.note)
    _check_ops_csv(int8.ops_csv)
    diff = profiling.compare_ops(fp32.ops_csv, int8.ops_csv)
    only_int8 = diff[diff["change"] == "only_b"]
    dynamic = only_int8[only_int8["op"].str.contains("dynamic|quantiz", regex=True)]
    assert not dynamic.empty, only_int8
    assert dynamic["conversion"].all() and dynamic["self_per_iter_a_s"].isna().all()
    # fp32's matrix multiplies are gone under int8 dynamic quantization
    assert diff.loc[diff["op"] == "aten::addmm", "change"].item() == "only_a"


@pytest.mark.slow
def test_onnxruntime_profile_is_the_session_profile(profile):
    result = profile("tiny_mlp", load="onnxruntime")
    assert result.status == "ok", result.note
    events = json.loads(result.trace_json.read_text(encoding="utf-8"))
    assert isinstance(events, list) and any(e.get("cat") == "Node" for e in events)
    assert sum(1 for e in events if e.get("name") == "model_run") >= 30
    table = _check_ops_csv(result.ops_csv)
    assert table["op"].str.contains("Gemm").any() and profiling.SESSION_OVERHEAD in set(table["op"])
    assert table.loc[table["op"].str.contains("Gemm"), "calls_per_iter"].sum() == 3  # three Linear layers
    assert 0 < result.summary["ops_only_ratio"] <= result.summary["explained_ratio"] <= 1.15


@pytest.mark.slow
def test_a_runtime_without_its_profiler_gives_a_note(workdir):
    """A missing runtime extra (here: an onnxruntime that cannot be imported) is a note, not an error."""
    fake = workdir / "fake_site"
    (fake / "onnxruntime").mkdir(parents=True, exist_ok=True)
    (fake / "onnxruntime" / "__init__.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    scenario = _scenario("tiny_mlp", load="onnxruntime")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}
    result = profiling.profile_scenario(scenario, workdir / "no-such.onnx", workdir / "missing", 5, extra_env=env)
    assert result.status == "unsupported"
    assert "onnxruntime" in result.note and "not installed" in result.note
    assert result.ops_csv is None and result.trace_json is None


@pytest.mark.slow
def test_a_profile_that_fails_gives_a_note_not_an_exception(workdir):
    scenario = _scenario("tiny_mlp")
    result = profiling.profile_scenario(scenario, workdir / "no-such-artifact.pt", workdir / "broken", 5)
    assert result.status == "failed" and "load" in result.note and "no-such-artifact" in result.note
    assert result.record_fields()["status"] == "failed"


@pytest.mark.slow
def test_a_profile_past_its_timeout_is_killed_and_noted(workdir):
    scenario = _scenario("tiny_mlp")
    result = profiling.profile_scenario(scenario, workdir / "x.pt", workdir / "timeout", 5, timeout_s=0.3)
    assert result.status == "failed" and "ran past 0.3 s" in result.note


def test_an_unsupported_scenario_is_not_profiled(tmp_path):
    result = profiling.profile_scenario(_scenario("tiny_mlp", "int8_dynamic", "mmap"), tmp_path / "x.pt", tmp_path)
    assert result.status == "unsupported" and "mmap" in result.note
    assert not (tmp_path / "stdout.log").exists()  # no process was started


def test_compare_ops_classifies_each_op(tmp_path):
    def write(name: str, rows: list[tuple[str, float]]) -> Path:
        table = pd.DataFrame(
            [
                {
                    "op": op,
                    "calls": 10,
                    "self_cpu_s": t * 10,
                    "total_cpu_s": t * 10,
                    "self_cpu_pct": 0.0,
                    "self_cpu_per_iter_s": t,
                    "calls_per_iter": 1.0,
                    "cpu_memory_bytes": 0,
                    "input_shapes": "",
                }
                for op, t in rows
            ]  # fmt: skip
        )[profiling.OPS_COLUMNS]
        table.to_csv(tmp_path / name, index=False)
        return tmp_path / name

    a = write("a.csv", [("aten::addmm", 1e-3), ("aten::relu", 1e-4), ("aten::gelu", 2e-4)])
    b = write("b.csv", [("aten::addmm", 5e-4), ("aten::relu", 1.5e-4), ("aten::gelu", 2.05e-4),
                        ("aten::_to_copy", 3e-4)])  # fmt: skip
    diff = profiling.compare_ops(a, b).set_index("op")
    assert diff.loc["aten::addmm", "change"] == "faster"
    assert diff.loc["aten::addmm", "ratio_b_over_a"] == pytest.approx(0.5)
    assert diff.loc["aten::relu", "change"] == "slower"
    assert diff.loc["aten::gelu", "change"] == "same"
    assert diff.loc["aten::_to_copy", "change"] == "only_b" and diff.loc["aten::_to_copy", "conversion"]
    assert not diff.loc["aten::addmm", "conversion"]
    assert list(diff.index)[0] == "aten::addmm"  # largest |delta| first


def test_the_report_section_lists_top_ops_and_links_the_trace(tmp_path):
    from types import SimpleNamespace

    run_dir = tmp_path / "run"
    (run_dir / "profile" / "s").mkdir(parents=True)
    table = pd.DataFrame(
        [
            {
                "op": op,
                "calls": 20,
                "calls_per_iter": 2.0,
                "self_cpu_s": t,
                "total_cpu_s": t,
                "self_cpu_pct": pct,
                "self_cpu_per_iter_s": t / 10,
                "cpu_memory_bytes": 4096,
                "input_shapes": "[[1, 64]]",
            }
            for op, t, pct in [("aten::addmm", 0.002, 80.0), ("<script>", 0.0005, 20.0)]
        ]  # fmt: skip
    )[profiling.OPS_COLUMNS]
    table.to_csv(run_dir / "profile" / "s" / "ops.csv", index=False)
    (run_dir / "profile" / "s" / "trace.json").write_text('{"traceEvents": []}')
    figures = SimpleNamespace(
        status="ok", note=None, iterations=10, median_latency_s=2.5e-4, explained_ratio=1.02, ops_only_ratio=0.8,
        flops=168960, achieved_gflops=0.7, percent_of_peak=1.0,
    )  # fmt: skip
    files = {"ops_csv": "profile/s/ops.csv", "trace_json": "profile/s/trace.json"}
    records = [
        SimpleNamespace(scenario_id="tiny_mlp-b1-t1-fp32-eager", files=files, profile=figures),
        SimpleNamespace(scenario_id="not-profiled", files={}, profile=None),
        SimpleNamespace(scenario_id="broken", files={}, profile=SimpleNamespace(status="failed", note="it broke")),
    ]
    report = SimpleNamespace(runs=[SimpleNamespace(path=run_dir, records=records)], out_dir=run_dir)
    html = profiling.profiles_html(report)
    assert 'id="profiles"' in html and "aten::addmm" in html and "&lt;script&gt;" in html
    assert 'href="profile/s/trace.json"' in html and "102%" in html
    assert "not-profiled" not in html and "it broke" in html
    empty = SimpleNamespace(runs=[SimpleNamespace(path=run_dir, records=records[1:2])], out_dir=run_dir)
    assert profiling.profiles_html(empty) == ""


def test_flops_of_tiny_mlp_are_the_analytic_count():
    per_sample = 2 * (64 * 256 + 256 * 256 + 256 * 10)
    assert profiling.count_flops("tiny_mlp", (64,), 1) == per_sample
    assert profiling.count_flops("tiny_mlp", (64,), 4) == 4 * per_sample
    report = profiling.flop_count("tiny_mlp", (64,), 1)
    assert report["uncounted_ops"] == [] and report["note"] is None


def test_flops_that_cannot_be_counted_are_none_with_a_note():
    assert profiling.count_flops("no_such_model", (3,), 1) is None
    assert "not counted" in profiling.flop_count("no_such_model", (3,), 1)["note"]
    assert profiling.achieved_gflops(2_000_000_000, 0.5) == pytest.approx(4.0)
    assert profiling.achieved_gflops(None, 0.5) is None and profiling.achieved_gflops(10, 0) is None


@pytest.mark.slow
def test_peak_gflops_is_measured_once_and_cached(tmp_path):
    first = profiling.measure_peak_gflops(1, "fp32", cache_dir=tmp_path, fingerprint="fp", size=256, seconds=0.1)
    assert first["gflops"] > 0 and not first["cached"] and first["torch_num_threads"] == 1, first
    again = profiling.measure_peak_gflops(1, "fp32", cache_dir=tmp_path, fingerprint="fp", size=256, seconds=0.1)
    assert again["cached"] and again["gflops"] == first["gflops"]
    assert profiling.percent_of_peak(first["gflops"] / 2, first["gflops"]) == pytest.approx(50.0)


def test_peak_of_an_unknown_dtype_is_a_note(tmp_path):
    result = profiling.measure_peak_gflops(1, "int4", cache_dir=tmp_path)
    assert result["gflops"] is None and "int4" in result["note"]
    assert profiling.percent_of_peak(None, 10.0) is None


# ---- after the wiring (suite `profile: true`, runner, record) is applied


def test_profile_is_a_suite_setting_outside_the_scenario_id():
    from bench.errors import SuiteError
    from bench.suite import parse_suite

    suite = parse_suite("name: p\ndefaults: {profile: true}\nmatrix: {model: [tiny_mlp]}\n")
    (scenario,) = suite.scenarios
    assert scenario.profile is True and scenario.id == "tiny_mlp-b1-t1-fp32-eager"
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    with pytest.raises(SuiteError, match="defaults.profile"):
        parse_suite("name: p\ndefaults: {profile: 3}\nmatrix: {model: [tiny_mlp]}\n")


@pytest.mark.slow
def test_a_run_with_profile_true_keeps_the_profile_beside_the_row(run_cli, write_suite, tmp_path):
    from bench.record import read_records

    suite = write_suite(
        """
        name: prof
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}, profile: true}
        matrix: {model: [tiny_mlp]}
        """
    )
    result = run_cli("run", str(suite))
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    (record,), _ = read_records(run_dir / "results.jsonl")
    assert record.status == "ok" and record.profile.status == "ok", record.profile
    assert record.profile.flops == 2 * (64 * 256 + 256 * 256 + 256 * 10)
    assert record.profile.achieved_gflops > 0 and record.profile.percent_of_peak > 0
    for key in ("ops_csv", "trace_json", "profile_json"):
        assert (run_dir / record.files[key]).is_file()
    json.loads((run_dir / record.files["trace_json"]).read_text(encoding="utf-8"))["traceEvents"]
    assert 'id="profiles"' in (run_dir / "report.html").read_text(encoding="utf-8")
