"""Every precision and load mode on a tiny model, mmap's memory effect, and the artifact cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.results.runfolder import load_run
from bench.runtimes import ort_reduce_range

pytestmark = pytest.mark.slow

PRECISIONS = ("fp32", "int8_dynamic", "fp16", "bf16")
LOADS = ("eager", "mmap", "torchscript", "export", "onnxruntime")
# Known, honest gaps: anything else must run.
UNSUPPORTED = {("int8_dynamic", "mmap"), ("int8_dynamic", "export"), ("bf16", "onnxruntime")}


MATRIX_SUITE = """\
name: matrix
defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
matrix:
  model: [tiny_mlp]
  precision: [fp32, int8_dynamic, fp16, bf16]
  load: [eager, mmap, torchscript, export, onnxruntime]
"""


def _records(folder: Path, suite_name: str) -> list:
    """The rows of the run of suite `suite_name` in folder/reports (run folders end in the suite's name)."""
    (run_dir,) = [p for p in (folder / "reports").iterdir() if p.is_dir() and p.name.endswith(f"-{suite_name}")]
    written = load_run(run_dir)
    assert written.warnings == []
    return written.records


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory, bench_in):
    """Every precision and load mode of tiny_mlp, run once for the module: the matrix test reads its rows
    and the cache test runs two of its scenarios again beside it. Returns (folder, CLI result)."""
    folder = tmp_path_factory.mktemp("matrix")
    (folder / "suite.yaml").write_text(MATRIX_SUITE, encoding="utf-8")
    return folder, bench_in(folder, "run", "suite.yaml")


def test_every_precision_and_load_mode_on_the_tiny_model(matrix_run):
    folder, result = matrix_run
    assert result.returncode == 0, result.stdout + result.stderr
    # ORT's "consider pre-processing before quantization": the int8 ONNX file went through it
    assert "pre-processing" not in result.stderr, result.stderr
    records = {(r.precision, r.load): r for r in _records(folder, "matrix")}
    assert set(records) == {(p, load) for p in PRECISIONS for load in LOADS}

    fp32_bytes = records["fp32", "eager"].artifact_bytes
    for (precision, load), row in records.items():
        if (precision, load) in UNSUPPORTED:
            assert row.status == "unsupported" and row.reason, (precision, load)
            continue
        assert row.status == "ok", (precision, load, row.reason)
        assert row.load_s > 0 and row.artifact_bytes > 0
        assert row.runtime == ("onnxruntime" if load == "onnxruntime" else "torch")
        fidelity = row.fidelity
        assert fidelity is not None and fidelity.non_finite_outputs == 0
        assert fidelity.inputs == 4
        if precision == "fp32":
            assert fidelity.max_abs_error < 1e-5 and fidelity.cosine_similarity > 0.99999
        else:  # lossy, but the tiny MLP's signal survives every precision
            assert 0 < fidelity.max_abs_error < 0.1, (precision, load, fidelity)
            assert fidelity.cosine_similarity > 0.99 and fidelity.top1_agreement >= 0.75
        if precision in ("fp16", "bf16"):  # half the bytes per weight, on disk too
            assert row.artifact_bytes < 0.6 * fp32_bytes
        if precision == "int8_dynamic":
            assert row.quantized_layers == 3  # the MLP's three Linear layers (MatMulInteger under ORT)
            # 7-bit weights exactly where ORT's u8s8 kernels would saturate (x86 without VNNI)
            assert row.ort_reduce_range == (ort_reduce_range() if load == "onnxruntime" else None)
        if load == "onnxruntime":
            assert row.ort_graph_optimization_level in ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED")


def test_mmap_maps_the_weights_instead_of_copying_them(run_cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: mmap
        defaults: {measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.05}}
        matrix:
          model: [resnet18]
          load: [eager, mmap]
          input_shape: [[3, 64, 64]]
        """
    )
    result = run_cli("run", str(suite))
    assert result.returncode == 0, result.stderr
    rows = {r.load: r for r in _records(tmp_path, "mmap")}
    eager, mmap = rows["eager"], rows["mmap"]
    weights = eager.artifact_bytes  # ~45 MB of fp32 weights
    grown = {load: r.rss_bytes.after_load - r.rss_bytes.before_load for load, r in rows.items()}
    # eager copies the weights into anonymous memory (and builds a randomly initialised model
    # first); mmap builds on the meta device and maps the file, touching pages only when used.
    assert grown["eager"] > 0.8 * weights
    assert grown["mmap"] < grown["eager"] - 0.5 * weights
    assert mmap.rss_bytes.peak_file > eager.rss_bytes.peak_file + 0.5 * weights
    assert mmap.fidelity.max_abs_error == 0.0  # the same weights, just mapped


def test_a_second_run_reuses_the_cached_artifacts(matrix_run, bench_in):
    """The matrix run prepared every artifact; a second run of two of its scenarios (another suite, other
    measurement settings, the same artifacts) in the same reports folder takes them from the cache."""
    folder, result = matrix_run
    assert result.returncode == 0, result.stderr
    first = {r.scenario_id: r for r in _records(folder, "matrix")}
    (folder / "cache.yaml").write_text(
        "name: cache\ndefaults: {measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.02}}\n"
        "matrix: {model: [tiny_mlp], load: [eager, torchscript]}\n",
        encoding="utf-8",
    )
    done = bench_in(folder, "run", "cache.yaml", "--no-history")
    assert done.returncode == 0, done.stderr
    second = {r.scenario_id: r for r in _records(folder, "cache")}
    assert sorted(second) == ["tiny_mlp-b1-t1-fp32-eager", "tiny_mlp-b1-t1-fp32-torchscript"]
    for scenario_id, row in second.items():
        assert first[scenario_id].artifact_cached is False and first[scenario_id].artifact_prepare_s > 0
        assert row.artifact_cached is True and row.artifact_prepare_s == 0.0
        assert row.artifact_sha256 == first[scenario_id].artifact_sha256
