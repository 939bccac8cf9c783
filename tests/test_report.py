"""Reports from hand-made run folders: tables, figures, HTML/Markdown, and bad input.

No worker runs here: every run folder (results.jsonl, benchmark JSON, RSS CSV,
environment.json) is written by `make_run`, so these tests take a few seconds.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from support.demo_runs import (
    DEMO,
    EVIL,
    MIB,
    Spec,
    assert_png,
    make_record,
    make_run,
    write_rss_csv,
)

from bench.errors import UserError
from bench.report import ReportResult, comparison_frame, pareto_front, summary_frame, write_report
from bench.report.figures import latency_distribution
from bench.report.tables import COLUMNS
from bench.results.record import Fidelity
from bench.results.runfolder import load_run


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> ReportResult:
    run_dir = make_run(tmp_path_factory.mktemp("demo"))
    return write_report([run_dir])


# --- tables --------------------------------------------------------------------------------------


def test_summary_table_has_one_row_per_scenario_in_report_units(tmp_path):
    run = load_run(make_run(tmp_path))
    frame = summary_frame([run])
    assert list(frame.columns) == COLUMNS
    assert list(frame["scenario_id"]) == [s.scenario_id for s in DEMO]
    row = frame.set_index("scenario_id").loc["tiny_mlp-b1-t1-fp32-eager"]
    record = run.records[0]
    assert row["latency_median_ms"] == pytest.approx(record.latency_s.median * 1e3)
    assert row["latency_p99_ms"] == pytest.approx(record.latency_s.p99 * 1e3)
    assert row["load_ms"] == pytest.approx(20.0)
    assert row["peak_rss_mib"] == pytest.approx(540.0)
    assert row["throughput_samples_per_s"] == pytest.approx(record.throughput_samples_per_s)
    failed = frame.set_index("scenario_id").loc["tiny_cnn-b2-t2-fp32-eager"]
    assert failed["status"] == "failed" and "first_inference" in failed["reason"]
    assert math.isnan(failed["latency_median_ms"])  # not measured is empty, never zero


def test_precision_cliff_is_flagged_against_the_fp32_row_of_the_same_configuration(tmp_path):
    frame = summary_frame([load_run(make_run(tmp_path))]).set_index("scenario_id")
    bf16, fp16 = frame.loc["tiny_mlp-b1-t1-bf16-eager"], frame.loc["tiny_mlp-b1-t1-fp16-eager"]
    fp32 = frame.loc["tiny_mlp-b1-t1-fp32-eager"]
    assert bf16["vs_fp32"] == pytest.approx(bf16["latency_median_ms"] / fp32["latency_median_ms"])
    assert bf16["vs_fp32"] > 3 and bf16["cliff"]
    assert 1 < fp16["vs_fp32"] < 3 and not fp16["cliff"]
    assert math.isnan(fp32["vs_fp32"]) and not fp32["cliff"]
    assert frame["cliff"].sum() == 1


def test_no_fp32_reference_means_no_ratio(tmp_path):
    frame = summary_frame([load_run(make_run(tmp_path, [Spec(precision="bf16", threads=4, median_ms=9)]))])
    assert math.isnan(frame.loc[0, "vs_fp32"]) and not frame.loc[0, "cliff"]


def test_pareto_front_keeps_only_undominated_points():
    points = [(10, 5), (12, 3), (11, 6), (20, 1), (25, 1), (9, 9), (float("nan"), 0)]
    assert pareto_front(points) == [5, 0, 1, 3]


# --- the report files ------------------------------------------------------------------------------


def test_report_files_are_written_into_the_run_folder(demo_report):
    out = demo_report.out_dir
    assert demo_report.html == out / "report.html" and demo_report.markdown == out / "report.md"
    assert (out / "results.jsonl").is_file()  # the default output folder is the run's own
    assert demo_report.rows == len(DEMO)
    assert demo_report.warnings == []
    names = {p.name for p in demo_report.figures}
    assert {
        "latency_distribution.png",
        "throughput_vs_batch.png",
        "throughput_vs_threads.png",
        "memory_over_time.png",
        "latency_vs_memory.png",
        "load_time.png",
    } <= names
    assert "latency_vs_fidelity.png" not in names  # no fidelity measured: not faked
    for path in demo_report.figures:
        assert path.parent == out / "figures"
        assert_png(path)


def test_results_csv_is_a_flat_table_pandas_reads(demo_report):
    table = pd.read_csv(demo_report.csv)
    assert list(table.columns) == COLUMNS
    assert len(table) == len(DEMO)
    assert table["scenario_id"].is_unique
    assert table["batch_size"].dtype.kind == "i"  # counts are integers, not 1.0
    assert set(table["status"]) == {"ok", "failed", "unsupported"}
    assert table.loc[table["scenario_id"].eq("tiny_mlp-b1-t1-bf16-eager"), "cliff"].item()


def test_html_is_self_contained_and_shows_everything(demo_report):
    page = demo_report.html.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no network fetch
    assert "<link" not in page and "@import" not in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == len(demo_report.figures)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    for spec in DEMO:
        assert spec.scenario_id in page
    # environment summary
    for text in (
        "Test CPU 9000",
        "avx512_bf16",
        "avx2",
        "amx_tile",
        "2.14.1",
        "1.32.0",
        "f00dfeedf00dfeed",
        "abc123def456",
    ):
        assert text in page, text
    # statuses with reasons, the cliff and the fidelity note
    assert "int8_dynamic with onnxruntime is not implemented" in page
    assert 'class="badge failed"' in page and 'class="badge unsupported"' in page
    assert 'class="cliff"' in page or 'ok cliff"' in page
    assert "not measured yet" in page
    assert 'id="summary" class="sortable"' in page and 'id="render-check"' in page


def test_html_escapes_what_comes_from_the_run(demo_report):
    page = demo_report.html.read_text(encoding="utf-8")
    assert EVIL not in page
    # html.escape writes " as &quot; (the section modules), Jinja2's autoescape as &#34; (the page's template)
    assert re.search(r"&lt;script&gt;alert\((&quot;|&#34;)boom(&quot;|&#34;)\)&lt;/script&gt; &amp; friends", page)
    assert page.count("<script>") == 2  # only the report's own two inline scripts


def test_a_scenario_named_like_a_script_shows_escaped_wherever_it_appears(tmp_path):
    name = "<script>alert(1)</script>"
    specs = [Spec(model=name), Spec(model=name, precision="bf16", status="failed", reason=f"failed: {name}")]
    page = write_report([make_run(tmp_path, specs, suite=name)]).html.read_text(encoding="utf-8")
    assert "<script>alert" not in page and page.count("<script>") == 2  # only the report's own two scripts
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<title>Benchmark report: {escaped}</title>" in page  # the suite name
    assert f'<td class="id">{escaped}-b1-t1-fp32-eager</td>' in page  # the summary table
    assert f'<span class="reason" title="failed: {escaped}">failed: {escaped}</span>' in page
    assert f"<code>{escaped}-b1-t1-bf16-eager</code></h3><pre>failed: {escaped}</pre>" in page  # the failures


@pytest.mark.slow
def test_the_wheel_ships_the_report_templates(tmp_path):
    # An editable install reads the templates from the source tree, so only a built wheel shows a missing
    # [tool.setuptools.package-data] entry (report.html would then fail with TemplateNotFound).
    pytest.importorskip("setuptools", reason="the build backend pyproject.toml names")
    root = Path(__file__).resolve().parents[1]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "bench", tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    build = "from setuptools import build_meta; print(build_meta.build_wheel('dist'))"
    done = subprocess.run([sys.executable, "-c", build], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("bench/report/templates/")}
    in_tree = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "bench/report/templates").glob("*")}
    assert in_tree and shipped == in_tree


def test_markdown_report_has_the_table_reasons_and_figure_links(demo_report):
    text = demo_report.markdown.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark report: demo")
    assert "| scenario | median (ms) | p90 (ms) | p99 (ms) |" in text
    assert "`tiny_mlp-b1-t1-bf16-eager`" in text and "⚠ **" in text
    assert "`RuntimeError during first_inference: <script>" in text  # a code span: shown literally
    outside_code = re.sub(r"`[^`\n]*`", "", re.sub(r"```text\n.*?```", "", text, flags=re.S))
    assert "<" not in outside_code  # no raw HTML outside code, where Markdown would render it
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (demo_report.out_dir / link).is_file(), link
    assert "not measured yet" in text


def test_fidelity_when_present_gets_columns_and_a_figure(tmp_path):
    specs = [
        Spec(median_ms=1.0),  # the reference itself
        Spec(load="torchscript", median_ms=0.9, fidelity=Fidelity(0.0, 1.0, 1.0, inputs=4)),  # exact: 0 error
        Spec(precision="bf16", median_ms=0.6, fidelity=Fidelity(0.02, 0.999, 0.98, inputs=4)),
        Spec(precision="int8_dynamic", median_ms=0.4, fidelity=Fidelity(0.3, 0.97, 0.9, inputs=4)),
        Spec(
            precision="int8_static",
            median_ms=0.3,
            fidelity=Fidelity(1e-6, 0.0076, 0.25, inputs=4, input_dependence=0.004),
        ),
        Spec(
            precision="fp16",
            median_ms=40.0,
            fidelity=Fidelity(None, None, None, inputs=4, non_finite_outputs=12),
            extra={"rounds_limited_by_time": True},
        ),
    ]
    result = write_report([make_run(tmp_path, specs)])
    assert "latency_vs_fidelity.png" in {p.name for p in result.figures}
    assert result.warnings == []
    page = result.html.read_text(encoding="utf-8")
    assert "cosine sim." in page and "not measured yet" not in page
    assert "NaN/inf" in page and "12 NaN/inf output values" in page
    assert "max_time_s cut the steady state" in page
    assert "output barely depends on the input (its spread over the fidelity inputs is 0.4% of fp32" in page
    table = pd.read_csv(result.csv).set_index("scenario_id")
    assert table.loc["tiny_mlp-b1-t1-fp16-eager", "fidelity_non_finite_outputs"] == 12
    assert table.loc["tiny_mlp-b1-t1-fp16-eager", "rounds_limited_by_time"]
    assert table.loc["tiny_mlp-b1-t1-bf16-eager", "fidelity_cosine_similarity"] == pytest.approx(0.999)
    markdown = result.markdown.read_text(encoding="utf-8")
    assert "NaN/inf" in markdown and "max_time_s cut" in markdown and "barely depends on the input" in markdown
    assert table.loc["tiny_mlp-b1-t1-int8_static-eager", "fidelity_input_dependence"] == pytest.approx(0.004)


# --- several runs ----------------------------------------------------------------------------------


def test_several_runs_side_by_side_with_ratio_to_the_first(tmp_path):
    first = make_run(tmp_path / "a", run_id="20260101-000000-demo")
    second = make_run(tmp_path / "b", DEMO[:-1], run_id="20260102-000000-demo", scale=2.0)
    out = tmp_path / "compare"
    result = write_report([first, second], out)
    assert result.out_dir == out and result.rows == 2 * len(DEMO) - 1
    table = pd.read_csv(result.csv)
    assert set(table["run_id"]) == {"20260101-000000-demo", "20260102-000000-demo"}
    comparison = pd.read_csv(result.comparison_csv).set_index("scenario_id")
    ratio = comparison.loc["tiny_mlp-b1-t1-fp32-eager", "20260102-000000-demo / 20260101-000000-demo"]
    assert ratio == pytest.approx(2.0)
    assert comparison.loc["resnet18-b1-t1-int8_dynamic-onnxruntime", "status:20260102-000000-demo"] == "absent"
    page = result.html.read_text(encoding="utf-8")
    assert "Runs side by side" in page and "2.00×" in page
    assert "Runs side by side" in result.markdown.read_text(encoding="utf-8")
    for path in result.figures:
        assert_png(path)


def test_several_runs_need_an_output_folder(tmp_path):
    first = make_run(tmp_path / "a")
    second = make_run(tmp_path / "b")
    with pytest.raises(UserError, match="output folder"):
        write_report([first, second])


def test_comparison_frame_without_runs_is_just_ids():
    frame = pd.DataFrame({"run_id": ["r"], "scenario_id": ["x"], "status": ["ok"], "latency_median_ms": [1.0]})
    assert list(comparison_frame(frame, [])["scenario_id"]) == ["x"]


# --- bad input -------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_refused_by_name(tmp_path):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    with pytest.raises(UserError, match="holiday-photos.*not a run folder.*results.jsonl"):
        write_report([folder])
    with pytest.raises(UserError, match="no such folder"):
        write_report([tmp_path / "missing"])
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="file.txt"):
        write_report([tmp_path / "file.txt"])
    with pytest.raises(UserError, match="no run folder"):
        write_report([])
    assert not (folder / "report.html").exists()


def test_an_empty_results_file_gives_a_report_that_says_so(tmp_path):
    run_dir = make_run(tmp_path, [])
    result = write_report([run_dir])
    assert result.rows == 0 and result.figures == []
    assert "No result rows" in result.html.read_text(encoding="utf-8")
    assert "No result rows" in result.markdown.read_text(encoding="utf-8")
    assert pd.read_csv(result.csv).empty


def test_a_truncated_last_line_is_reported_with_its_line_number(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:3], status="interrupted")
    results = run_dir / "results.jsonl"
    record, _ = make_record(Spec(model="tiny_cnn"))
    results.write_text(results.read_text() + record.to_json()[:57])
    result = write_report([run_dir])
    assert result.rows == 3
    assert any("line 4" in w and "truncated" in w for w in result.warnings), result.warnings
    assert any("interrupted" in w for w in result.warnings)
    page = result.html.read_text(encoding="utf-8")
    assert 'id="warnings"' in page and "line 4 is truncated" in page
    assert "line 4 is truncated" in result.markdown.read_text(encoding="utf-8")


def test_an_interrupted_run_lists_the_scenarios_without_rows(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:2], status="interrupted")
    (run_dir / "scenarios.json").write_text(json.dumps([{"id": s.scenario_id} for s in DEMO[:4]]))
    result = write_report([run_dir])
    assert any("2 of 4 scenarios have no row" in w and DEMO[3].scenario_id in w for w in result.warnings)


def test_records_from_an_older_schema_are_still_reported(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:2])
    record, times = make_record(Spec(model="tiny_cnn", median_ms=2.0))
    (run_dir / record.files["benchmark_json"]).write_text(json.dumps({"benchmarks": [{"stats": {"data": times}}]}))
    write_rss_csv(run_dir / record.files["rss_csv"], 600)
    old = json.loads(record.to_json())
    for key in ("runtime", "interop_threads", "fidelity", "files", "schema_version", "peak_rss_kernel_phase_bytes"):
        del old[key]
    del old["latency_s"]["p90"]
    old["rss_bytes"] = {"peak": 600 * MIB}  # fewer RSS figures than today
    with open(run_dir / "results.jsonl", "a") as f:
        f.write(json.dumps(old) + "\n")
    result = write_report([run_dir])
    assert result.rows == 3
    table = pd.read_csv(result.csv).set_index("scenario_id")
    row = table.loc["tiny_cnn-b1-t1-fp32-eager"]
    assert row["peak_rss_mib"] == pytest.approx(600) and math.isnan(row["latency_p90_ms"])
    assert row["latency_median_ms"] > 0
    assert any("older schema" in w and "runtime" in w for w in result.warnings)
    # its raw files are found by their conventional names even without `files`
    notes = re.findall(r'class="note">([^<]*)', result.html.read_text(encoding="utf-8"))
    assert not any("tiny_cnn-b1-t1-fp32-eager" in note for note in notes), notes


def test_lines_that_are_not_records_are_skipped_with_a_warning(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    with open(run_dir / "results.jsonl", "a") as f:
        f.write('["a list"]\n{"scenario_id": "x", "status": "bogus"}\nnot json at all\n')
    f2 = run_dir / "results.jsonl"
    f2.write_text(f2.read_text() + json.dumps(json.loads(make_record(Spec(threads=2))[0].to_json())) + "\n")
    result = write_report([run_dir])
    assert result.rows == 2
    joined = " ".join(result.warnings)
    assert "line 2 is not a JSON object" in joined and "line 3 is not a result record" in joined
    assert "line 4 is not valid JSON" in joined


def test_missing_raw_files_are_noted_in_their_figures(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:3])
    (run_dir / "benchmark" / f"{DEMO[0].scenario_id}.json").unlink()
    (run_dir / "rss" / f"{DEMO[1].scenario_id}.csv").write_text("garbage,\n")
    (run_dir / "environment.json").unlink()
    result = write_report([run_dir])
    page = result.html.read_text(encoding="utf-8")
    notes = " ".join(re.findall(r'class="note">([^<]*)', page))
    assert f"{DEMO[0].scenario_id}: benchmark/{DEMO[0].scenario_id}.json is missing" in notes
    assert f"{DEMO[1].scenario_id}: rss/{DEMO[1].scenario_id}.csv has no t_s/rss_bytes columns" in notes
    assert any("environment.json is missing" in w for w in result.warnings)
    assert {p.name for p in result.figures} >= {"latency_distribution.png", "memory_over_time.png"}


def test_no_raw_files_at_all_still_gives_a_report(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:2])
    for path in [*run_dir.glob("benchmark/*"), *run_dir.glob("rss/*")]:
        path.unlink()
    result = write_report([run_dir])
    page = result.html.read_text(encoding="utf-8")
    assert "Not drawn: no scenario has raw round times." in page
    assert "Not drawn: no scenario has RSS samples." in page


def test_an_unwritable_output_folder_is_a_user_error(tmp_path):
    run_dir = make_run(tmp_path, DEMO[:1])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(UserError, match="cannot write the report"):
        write_report([run_dir], blocker / "out")


def test_fifty_scenarios_get_a_taller_latency_figure(tmp_path):
    specs = [Spec(batch_size=b, threads=t) for b in range(1, 11) for t in range(1, 6)]
    run = load_run(make_run(tmp_path, specs))
    frame = summary_frame([run])
    result = latency_distribution([run], frame, tmp_path / "figures")
    from PIL import Image

    with Image.open(result.files[0]) as image:
        width, height = image.size
    assert height >= 50 * 0.3 * 100  # about 30 px per scenario: labels never overlap
    assert width <= 1100
