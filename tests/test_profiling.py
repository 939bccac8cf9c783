"""Per-operator profiles (bench.profile.profiler): files, the self-time property, comparisons, FLOPs, bad input."""

from __future__ import annotations

import json
import math
import os
import re
from html import unescape
from pathlib import Path

import pandas as pd
import pytest
from support.demo_runs import DEMO, EVIL, MIB, add_profile, allocation_events_demo, make_run, update_row

from bench import runtimes
from bench.models import catalog as models
from bench.profile import folder as profile_format
from bench.profile import profiler as profiling
from bench.report import write_report
from bench.suite.scenarios import Scenario

# Only the two tests that set a profile's self time against its timed latency are `serial` (run alone, after
# the rest): the others check files, notes, op names and reports, which a busy neighbour cannot change.

REPO = Path(__file__).resolve().parent.parent


def _scenario(model: str, precision: str = "fp32", load: str = "eager", threads: int = 1) -> Scenario:
    return Scenario(
        model=model,
        batch_size=1,
        threads=threads,
        interop_threads=1,
        precision=precision,
        load=load,
        input_shape=models.default_input_shape(model),
        timeout_s=120,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profiling")


@pytest.fixture(scope="module")
def profile(workdir: Path, zygote):
    """Profile a scenario once per module, forked from the session's zygote: profile('tiny_mlp', 'int8_dynamic')."""
    done: dict[str, profiling.ProfileResult] = {}

    def run(model: str, precision: str = "fp32", load: str = "eager", iterations: int = 30):
        scenario = _scenario(model, precision, load)
        if scenario.id not in done:
            artifact = runtimes.prepare_artifact(scenario, cache_dir=workdir / "cache")
            done[scenario.id] = profiling.profile_scenario(
                scenario, artifact.path, workdir / scenario.id, iterations, workers=zygote
            )
        return done[scenario.id]

    return run


def _check_ops_csv(path: Path) -> pd.DataFrame:
    table = profiling.read_ops(path)
    assert list(table.columns) == profile_format.OPS_COLUMNS
    assert len(table) > 0
    assert (table["calls"] > 0).all() and (table["self_cpu_s"] >= 0).all()
    assert table["self_cpu_pct"].sum() == pytest.approx(100.0)
    assert table["self_cpu_s"].is_monotonic_decreasing
    return table


@pytest.mark.slow
@pytest.mark.serial
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
    assert summary.iterations == 30 and summary.threads == 1 and summary.torch_num_threads == 1
    assert len(summary.top_ops) == min(profile_format.TOP_OPS, len(table))
    assert summary.profiled_median_s > 0
    # At one thread the calling thread's self time per iteration is the iteration's time.
    assert 0.85 <= summary.explained_ratio <= 1.15, summary
    assert 0 < summary.ops_only_ratio < summary.explained_ratio
    assert summary.other_threads_self_s == 0
    fields = result.record_fields()
    assert fields["status"] == "ok" and fields["top_op"] == summary.top_ops[0].op
    # allocation events of load, the first call and the profiled calls, on one clock
    memory = pd.read_csv(result.out_dir / profile_format.MEMORY_CSV)
    assert list(memory.columns) == profile_format.MEMORY_COLUMNS
    assert list(dict.fromkeys(memory["phase"])) == list(profile_format.MEMORY_PHASES)
    assert memory["t_s"].is_monotonic_increasing
    assert set(memory.loc[memory["phase"].eq("steady"), "call"]) == set(range(30))  # every call allocates
    weights = sum(p.numel() * 4 for p in models.build_model("tiny_cnn", 0).parameters())
    assert fields["allocated_load_bytes"] >= weights  # the state_dict and the module's own tensors
    assert 0 < fields["allocated_per_call_bytes"] <= fields["allocated_steady_bytes"]
    json.loads((result.out_dir / "load_trace.json").read_text(encoding="utf-8"))["traceEvents"]
    assert summary.started_monotonic_s < summary.profiled_from_monotonic_s < summary.profiled_to_monotonic_s
    assert summary.profiled_to_monotonic_s <= summary.ended_monotonic_s and summary.pid != os.getpid()
    # The overhead is reported, not asserted: on a noisy host the profiled calls can beat the unprofiled ones.
    assert summary.unprofiled_median_s > 0
    assert summary.profiler_overhead == pytest.approx(summary.profiled_median_s / summary.unprofiled_median_s)


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
@pytest.mark.serial
def test_onnxruntime_profile_is_the_session_profile(profile):
    result = profile("tiny_mlp", load="onnxruntime")
    assert result.status == "ok", result.note
    events = json.loads(result.trace_json.read_text(encoding="utf-8"))
    assert isinstance(events, list) and any(e.get("cat") == "Node" for e in events)
    assert sum(1 for e in events if e.get("name") == "model_run") >= 30
    table = _check_ops_csv(result.ops_csv)
    assert table["op"].str.contains("Gemm").any() and profiling.SESSION_OVERHEAD in set(table["op"])
    assert table.loc[table["op"].str.contains("Gemm"), "calls_per_iter"].sum() == 3  # three Linear layers
    assert 0 < result.summary.ops_only_ratio <= result.summary.explained_ratio <= 1.15


@pytest.mark.slow
def test_a_runtime_without_its_profiler_gives_a_note(workdir):
    """A missing runtime extra (here: an onnxruntime that cannot be imported) is a note, not an error.
    A fresh child: a forked one has the zygote's onnxruntime imported already, whatever its PYTHONPATH says."""
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
def test_a_profile_that_fails_gives_a_note_not_an_exception(workdir, zygote):
    scenario = _scenario("tiny_mlp")
    result = profiling.profile_scenario(
        scenario, workdir / "no-such-artifact.pt", workdir / "broken", 5, workers=zygote
    )
    assert result.status == "failed" and "load" in result.note and "no-such-artifact" in result.note
    assert result.record_fields()["status"] == "failed"


@pytest.mark.slow
def test_a_profile_past_its_timeout_is_killed_and_noted(workdir):
    # A fresh child, which cannot even import torch in 0.3 s; a forked one fails on the missing file sooner.
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
            ]
        )[profile_format.OPS_COLUMNS]
        table.to_csv(tmp_path / name, index=False)
        return tmp_path / name

    a = write("a.csv", [("aten::addmm", 1e-3), ("aten::relu", 1e-4), ("aten::gelu", 2e-4)])
    b = write(
        "b.csv", [("aten::addmm", 5e-4), ("aten::relu", 1.5e-4), ("aten::gelu", 2.05e-4), ("aten::_to_copy", 3e-4)]
    )
    diff = profiling.compare_ops(a, b).set_index("op")
    assert diff.loc["aten::addmm", "change"] == "faster"
    assert diff.loc["aten::addmm", "ratio_b_over_a"] == pytest.approx(0.5)
    assert diff.loc["aten::relu", "change"] == "slower"
    assert diff.loc["aten::gelu", "change"] == "same"
    assert diff.loc["aten::_to_copy", "change"] == "only_b" and diff.loc["aten::_to_copy", "conversion"]
    assert not diff.loc["aten::addmm", "conversion"]
    assert list(diff.index)[0] == "aten::addmm"  # largest |delta| first


# ---- the report: operator profiles, memory by phase, the allocation overlay (hand-made runs)


@pytest.fixture
def profiled_run(tmp_path: Path) -> Path:
    """A hand-made run: DEMO[0] profiled (with allocation events and kernel peaks), DEMO[1] whose profile
    failed, DEMO[2] not profiled."""
    run_dir = make_run(tmp_path, DEMO[:3])
    add_profile(run_dir, DEMO[0].scenario_id)
    add_profile(run_dir, DEMO[1].scenario_id, status="failed", note="it broke")
    kernel = {"load": 600 * MIB, "first_inference": 560 * MIB, "warmup": 540 * MIB, "steady": 545 * MIB}
    update_row(
        run_dir,
        DEMO[0].scenario_id,
        {"peak_rss_kernel_phase_bytes": kernel, "rss_bytes": {"after_first_inference": 530 * MIB}},
    )
    return run_dir


def test_the_report_shows_each_profile_in_html_and_markdown(profiled_run):
    result = write_report([profiled_run])
    html, markdown = result.html.read_text(encoding="utf-8"), result.markdown.read_text(encoding="utf-8")
    profiled, failed, plain = (s.scenario_id for s in DEMO[:3])
    trace = f"profile/{profiled}/trace.json"
    # HTML: the section, its facts, the escaped op names, the links to files that exist
    section = html[html.index('id="profiles"') : html.index('id="memory-phases"')]
    assert "aten::addmm" in section and EVIL not in html and "&lt;script&gt;" in section
    assert f'href="{trace}"' in section and f'href="profile/{profiled}/ops.csv"' in section
    assert "explains 102% of a call" in section and "0.70 GFLOP/s at the timed median" in section
    assert "1.0% of this CPU's matmul peak (70.0 GFLOP/s)" in unescape(section)  # ' is &#39; or &#x27;
    assert failed in section and "it broke" in section and plain not in section
    assert '<a href="#profiles">' in html and '<a href="#memory-phases">' in html
    # Markdown: the same section, a table with the top ops, links that resolve from report.md
    md = markdown[markdown.index("## Operator profiles") : markdown.index("## Memory by phase")]
    assert "| op | calls/call | self ms/call | self % |" in md and "| `aten::addmm` | 2 | 0.2000 | 80.0 |" in md
    assert "explains 102% of a call" in md and "0.70 GFLOP/s at the timed median" in md
    assert "of this CPU's matmul peak (70.0 GFLOP/s)" in md and "FlopCounterMode" in md
    assert "Not profiled (failed): `it broke`" in md and plain not in md
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert trace in links and all((result.out_dir / link).is_file() for link in links), links
    outside_code = re.sub(r"`[^`\n]*`", "", md)
    assert "<script>" not in outside_code
    # no profile at all: no section, no link
    plain_only = write_report([make_run(profiled_run.parent / "plain", DEMO[2:3])])
    assert 'id="profiles"' not in plain_only.html.read_text(encoding="utf-8")
    assert "## Operator profiles" not in plain_only.markdown.read_text(encoding="utf-8")


def test_memory_by_phase_says_where_the_peak_is(profiled_run):
    release = {"before_release": 700 * MIB, "after_release": 650 * MIB, "after_malloc_trim": 640 * MIB}
    update_row(profiled_run, DEMO[0].scenario_id, {"rss_bytes": release})
    result = write_report([profiled_run])
    frame = load_memory_phases(profiled_run).set_index("scenario_id")
    profiled, failed, plain = (s.scenario_id for s in DEMO[:3])
    row = frame.loc[profiled]
    assert row["source"] == "kernel" and row["peak_phase"] == "load" and row["load_mib"] == 600
    assert row["before_load_mib"] == 500 and row["first_call_kept_mib"] == 10
    assert (row["released_mib"], row["trimmed_mib"]) == (50, 10)  # what del + gc, then malloc_trim gave back
    assert row["torch_load_mib"] == 2 and row["torch_first_inference_mib"] == 3
    assert row["torch_steady_mib"] == pytest.approx(2.5 + 1 / 16) and row["torch_per_call_kib"] == 64
    # without kernel figures the sampled RSS of each phase stands in (demo csv: steady ends at the peak)
    other = frame.loc[plain]
    assert other["source"] == "sampled" and other["peak_phase"] == "steady"
    assert (other["load_mib"], other["first_inference_mib"], other["steady_mib"]) == (520, 525, 540)
    assert math.isnan(other["torch_load_mib"]) and math.isnan(other["first_call_kept_mib"])
    html, markdown = result.html.read_text(encoding="utf-8"), result.markdown.read_text(encoding="utf-8")
    assert 'id="memory-phase-table"' in html and "torch live: load" in html
    table = markdown[markdown.index("## Memory by phase") :]
    assert "| scenario | before load (MiB) | load (MiB) |" in table and "torch per call (KiB)" in table
    assert f"| `{profiled}` | 500.0 | 600.0 | 560.0 | 540.0 | 545.0 | load | 10.00 | 50.00 | 10.00 | kernel |" in table
    # with no profiled row the torch columns are not shown at all
    plain_only = write_report([make_run(profiled_run.parent / "plain", DEMO[2:3])])
    assert "torch live" not in plain_only.markdown.read_text(encoding="utf-8")


def load_memory_phases(run_dir: Path) -> pd.DataFrame:
    from bench.report.profiles import memory_phase_frame
    from bench.results.runfolder import load_run

    return memory_phase_frame([load_run(run_dir)])


def test_the_memory_figure_overlays_the_allocation_events(profiled_run):
    from bench.report.figures import _allocation_overlay, _phase_spans, memory_over_time
    from bench.results.runfolder import allocation_events, load_run, rss_samples

    run = load_run(profiled_run)
    record = run.records[0]
    samples, _ = rss_samples(run.path, record.files, record.scenario_id)
    events, why = allocation_events(run.path, record.files, record.scenario_id)
    assert why is None and len(events) == 4 + 2 + 20
    xs, ys = _allocation_overlay(samples, events, 500 * MIB)
    # one segment per phase, each inside the worker's span of that phase, ended by a break (NaN)
    breaks = [i for i, x in enumerate(xs) if math.isnan(x)]
    assert len(breaks) == 3 and all(math.isnan(ys[i]) for i in breaks)
    bounds = zip([-1, *breaks[:-1]], breaks, strict=True)
    segments = [list(zip(xs[a + 1 : b], ys[a + 1 : b], strict=True)) for a, b in bounds]
    spans = {phase: (t0, t1) for phase, t0, t1 in _phase_spans(samples)}
    levels = {"load": (500.5, 502), "first_inference": (502, 503), "steady": (502.5, 502.5 + 1 / 16)}
    for (phase, (low, high)), segment in zip(levels.items(), segments, strict=True):
        t0, t1 = spans[phase]
        assert all(t0 <= x <= t1 and low <= y <= high for x, y in segment), (phase, segment, spans[phase])
        assert segment[0][0] == t0 and segment[-1][0] == t1  # spread over the whole span
    result = memory_over_time([run], pd.DataFrame(), profiled_run / "figures")
    assert result.files and not result.notes
    (profiled_run / "profile" / DEMO[0].scenario_id / "memory.csv").unlink()
    result = memory_over_time([run], pd.DataFrame(), profiled_run / "figures")
    assert result.notes == [
        f"No allocation events for: {DEMO[0].scenario_id}: profile/{DEMO[0].scenario_id}/memory.csv is missing"
    ]


def test_allocation_figures_per_phase_and_per_call():
    figures = profiling.allocation_figures(allocation_events_demo(calls=10), calls=12)
    assert figures == {
        "allocated_load_bytes": 2 * MIB,
        "allocated_first_inference_bytes": 3 * MIB,
        "allocated_steady_bytes": 2 * MIB + MIB // 2 + 64 * 1024,
        "allocated_per_call_bytes": 64 * 1024,  # 10 calls allocated 64 KiB, 2 nothing: the median is 64 KiB
    }
    assert profiling.allocation_figures([], 10) == dict.fromkeys(profile_format.ALLOCATION_FIELDS)


def test_allocation_events_are_placed_on_the_monotonic_clock_by_range():
    def memory(ts: float, nbytes: int, total: int) -> dict:
        return {"ph": "i", "name": "[memory]", "ts": ts, "args": {"Bytes": nbytes, "Total Allocated": total}}

    trace = [
        memory(5, 10, 10),  # before any range: the profiler starting
        {"ph": "X", "name": profiling.ITERATION_RANGE, "ts": 100, "dur": 50},
        memory(120, 64, 74),
        memory(140, -64, 10),
        {"ph": "X", "name": "aten::addmm", "ts": 110, "dur": 20},
        {"ph": "X", "name": profiling.ITERATION_RANGE, "ts": 1000, "dur": 50},
        memory(1010, 32, 42),
        memory(2000, 8, 50),  # the last one after every range
    ]
    events = profiling._allocation_events(trace, {profiling.ITERATION_RANGE: "steady"}, [7.0, 9.0])
    assert [(e["call"], e["bytes"], e["allocated_bytes"]) for e in events] == [(0, 64, 74), (0, -64, 10), (1, 32, 42)]
    assert [e["t_s"] for e in events] == pytest.approx([7.00002, 7.00004, 9.00001])
    assert {e["phase"] for e in events} == {"steady"}


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
    from bench.suite.scenarios import parse_suite

    suite = parse_suite("name: p\ndefaults: {profile: true}\nmatrix: {model: [tiny_mlp]}\n")
    (scenario,) = suite.scenarios
    assert scenario.profile is True and scenario.id == "tiny_mlp-b1-t1-fp32-eager"
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    with pytest.raises(SuiteError, match="defaults.profile"):
        parse_suite("name: p\ndefaults: {profile: 3}\nmatrix: {model: [tiny_mlp]}\n")


def _worker_events(run_dir: Path, record) -> dict[str, float]:
    lines = (run_dir / record.files["worker_dir"] / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return {event["phase"]: event["t_s"] for event in map(json.loads, lines)}


@pytest.mark.slow
def test_a_profiled_row_is_profiled_in_another_process_after_its_timed_rounds(tmp_path):
    """Must hold (issue 9): profiling never leaks into the timed figures. Structurally: a suite run
    with `profile: true` (bench.measure.runner, as `bench run` makes it) profiles in its own process, started
    after the timed worker's last event, so never during the timed rounds. The statistical check (a
    profiled run's median against bracketing plain runs) needs a quiet host and many runs: it is a
    benchmark, benchmarks/profiling_leak.py, not a test a busy host could break or skip."""
    from bench.measure.runner import run_suite, start_run
    from bench.suite.scenarios import parse_suite

    suite = parse_suite(
        "name: profiled\ndefaults: {measure: {warmup_rounds: 5, min_rounds: 20, max_time_s: 0.2}, profile: true}\n"
        "matrix: {model: [tiny_mlp]}\n"
    )
    context = start_run(suite, tmp_path / "reports")
    (record,) = run_suite(context)
    assert record.status == "ok", record.reason
    _check_profile_ran_after_the_timed_worker(record, context.run_dir)
    assert record.profile.profiler_overhead > 0


def _check_profile_ran_after_the_timed_worker(record, run_dir: Path) -> None:
    """Its profile started after the timed worker's last event, and the row and its report carry it."""
    profile = json.loads((run_dir / record.files["profile_json"]).read_text(encoding="utf-8"))
    events = _worker_events(run_dir, record)
    assert events["steady"] < events["after_steady"] <= events["done"] < profile["started_monotonic_s"]
    assert profile["started_monotonic_s"] < profile["profiled_from_monotonic_s"] < profile["ended_monotonic_s"]
    figures = record.profile
    assert figures.status == "ok" and figures.flops == 2 * (64 * 256 + 256 * 256 + 256 * 10)
    assert figures.achieved_gflops > 0 and figures.percent_of_peak > 0 and figures.allocated_load_bytes > 0
    for key in ("ops_csv", "trace_json", "profile_json", "memory_csv", "load_trace_json"):
        assert (run_dir / record.files[key]).is_file(), key
    report = write_report([run_dir])
    html, markdown = report.html.read_text(encoding="utf-8"), report.markdown.read_text(encoding="utf-8")
    assert 'id="profiles"' in html and 'id="memory-phases"' in html
    assert "## Operator profiles" in markdown and f"({record.files['trace_json']})" in markdown
