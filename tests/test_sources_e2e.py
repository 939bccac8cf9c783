"""End to end: the user's own models through the real `bench run`, good files and bad ones in one run."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from support.model_files import save_as_if_on_cuda, tflite_linear
from torch import nn

from bench.measure.runner import resume_run, start_run
from bench.models import catalog as models
from bench.models import sources
from bench.results.runfolder import load_run
from bench.suite.scenarios import load_suite

pytestmark = pytest.mark.slow

HAS_LITERT = sources.spec_available("ai_edge_litert")
WIDE = 4096  # the factory's model: one 4096 x 4096 Linear, 64 MiB of fp32 weights
FACTORY = f"""
from torch import nn

def wide():
    return nn.Linear({WIDE}, {WIDE})
"""


def _save_gpu_checkpoint(folder: Path) -> None:
    """gpu.pth: tiny_mlp's weights as a training script on a GPU saves them (cuda:0 storages, module. prefix)."""
    state = models.build_model("tiny_mlp", 5).state_dict()
    save_as_if_on_cuda({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / "gpu.pth")


def _make_files(folder: Path) -> None:
    _save_gpu_checkpoint(folder)
    data = (folder / "gpu.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 3])
    (folder / "bench_e2e_user_models.py").write_text(FACTORY, encoding="utf-8")
    mlp = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    example = torch.randn(1, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the TorchScript-based exporters
        torch.onnx.export(
            mlp, (example,), str(folder / "mlp.onnx"), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
        )
        torch.jit.save(torch.jit.trace(mlp, example), str(folder / "mlp.ts.pt"))
    if HAS_LITERT:
        tflite_linear(folder / "linear.tflite", in_features=8, out_features=4)


def test_user_models_run_and_bad_files_become_failed_rows(run_cli, write_suite, tmp_path):
    _make_files(tmp_path)
    tflite = "  - {model: {name: lite, tflite: linear.tflite, input_shape: [8]}, threads: 2}\n" if HAS_LITERT else ""
    suite = write_suite(
        """
        name: sources
        defaults: {measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix:
          - model: [{name: gpu_ckpt, checkpoint: gpu.pth, architecture: tiny_mlp}]
            precision: [fp32, int8_dynamic]
          - model: [{name: mlp_onnx, onnx: mlp.onnx, input_shape: [16]}]
            precision: [fp32, int8_dynamic]
            batch_size: [2]
        include:
          - {model: {name: wide, factory: "bench_e2e_user_models:wide", input_shape: [4096]}}
          - {model: {name: broken, checkpoint: truncated.pth, architecture: tiny_mlp}}
          - {model: {name: onnx_3d, onnx: mlp.onnx, input_shape: [3, 16]}}
          - {model: {name: scripted, torchscript: mlp.ts.pt, input_shape: [16]}, load: eager}
        """
        + tflite
    )
    result = run_cli("run", str(suite), "--no-history")
    assert result.returncode == 1, result.stdout + result.stderr  # the two bad files
    assert "Traceback" not in result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    written = load_run(run_dir)
    assert written.warnings == []
    records = written.records
    rows = {r.scenario_id: r for r in records}
    expected = {
        "gpu_ckpt-b1-t1-fp32-eager": "ok",
        "gpu_ckpt-b1-t1-int8_dynamic-eager": "ok",
        "mlp_onnx-b2-t1-fp32-onnxruntime": "ok",
        "mlp_onnx-b2-t1-int8_dynamic-onnxruntime": "ok",
        "wide-b1-t1-fp32-eager": "ok",
        "broken-b1-t1-fp32-eager": "failed",
        "onnx_3d-b1-t1-fp32-onnxruntime": "failed",
        "scripted-b1-t1-fp32-eager": "unsupported",
    }
    if HAS_LITERT:
        expected["lite-b1-t2-fp32-litert"] = "ok"
    assert {k: r.status for k, r in rows.items()} == expected, {k: r.reason for k, r in rows.items()}

    # A checkpoint saved on a GPU, wrapped and with DataParallel prefixes: its own weights, both precisions.
    gpu, gpu_int8 = rows["gpu_ckpt-b1-t1-fp32-eager"], rows["gpu_ckpt-b1-t1-int8_dynamic-eager"]
    assert gpu.model == "gpu_ckpt" and gpu.model_source.kind == "checkpoint"
    assert gpu.model_source.path == str(tmp_path / "gpu.pth")
    assert gpu.model_source.bytes == (tmp_path / "gpu.pth").stat().st_size
    assert gpu.model_source.sha256 == sources.check_file(load_suite(suite).scenarios[0].source).sha256
    assert gpu.model_source.architecture == "tiny_mlp"
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "### Your models" in report
    assert f"| gpu_ckpt | checkpoint | {tmp_path / 'gpu.pth'} |" in report and gpu.model_source.sha256[:16] in report
    assert gpu.fidelity.max_abs_error == 0.0 and gpu_int8.quantized_layers == 3
    assert 0 < gpu_int8.fidelity.max_abs_error < 0.1 and gpu_int8.fidelity.cosine_similarity > 0.99

    # An ONNX file runs as given (the artifact is the file), and int8 is quantized from it.
    onnx, onnx_int8 = rows["mlp_onnx-b2-t1-fp32-onnxruntime"], rows["mlp_onnx-b2-t1-int8_dynamic-onnxruntime"]
    assert onnx.runtime == "onnxruntime" and onnx.artifact_sha256 == onnx.model_source.sha256
    assert onnx_int8.artifact_sha256 != onnx.artifact_sha256 and onnx_int8.quantized_layers == 2
    assert onnx.fidelity.max_abs_error < 1e-5  # the file against its own reference run
    assert 0 < onnx_int8.fidelity.max_abs_error < 0.1 and onnx_int8.fidelity.top1_agreement >= 0.75

    # Memory release: the factory's 64 MiB of weights are given back when the model is deleted.
    wide = rows["wide-b1-t1-fp32-eager"]
    weights = WIDE * (WIDE + 1) * 4
    assert wide.model_source.kind == "factory" and wide.model_source.path.endswith("bench_e2e_user_models.py")
    assert wide.model_freed_on_release is True
    assert wide.rss_bytes.before_release - wide.rss_bytes.after_release > 0.8 * weights
    assert wide.rss_bytes.after_malloc_trim <= wide.rss_bytes.after_release + (1 << 20)
    for row in records:
        if row.status == "ok":
            assert row.model_freed_on_release is True, row.scenario_id
            assert row.rss_bytes.after_release <= row.rss_bytes.before_release + (4 << 20), row.scenario_id

    # Bad files: a failed row naming the file and the field, found before any worker started.
    broken = rows["broken-b1-t1-fp32-eager"]
    assert broken.reason.startswith(f"{tmp_path / 'truncated.pth'} (checkpoint of model 'broken'): ")
    assert "not a readable PyTorch checkpoint" in broken.reason and broken.load_s is None
    onnx_3d = rows["onnx_3d-b1-t1-fp32-onnxruntime"]
    assert f"{tmp_path / 'mlp.onnx'} (input_shape of model 'onnx_3d')" in onnx_3d.reason
    assert "has shape [batch, 16], but the scenario feeds [1, 3, 16]" in onnx_3d.reason
    assert "runs only with load: torchscript" in rows["scripted-b1-t1-fp32-eager"].reason
    assert not (run_dir / "workers" / "broken-b1-t1-fp32-eager").exists()

    if HAS_LITERT:
        lite = rows["lite-b1-t2-fp32-litert"]
        assert lite.runtime == "litert" and lite.artifact_format == "tflite" and lite.latency_s.rounds >= 5
        assert lite.model_source.kind == "tflite" and lite.fidelity is None  # nothing to compare a file with


def test_refused_before_running_with_file_line_and_field(run_cli, write_suite, tmp_path):
    _save_gpu_checkpoint(tmp_path)  # the only file it reads: no ONNX export, trace or .tflite to pay for
    suite = write_suite(
        """
        name: refused
        matrix:
          model:
            - tiny_mlp
            - {name: mine, checkpoint: gpu.pth, architecture: tiny_mlp, sha256: """
        + "ab" * 32
        + "}\n"
    )
    result = run_cli("run", str(suite), "--no-history")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr
    assert f"{suite}, line 5, field 'matrix.model.1.sha256'" in message
    assert f"{tmp_path / 'gpu.pth'} (sha256 of model 'mine'): sha256 is " in message
    assert not (tmp_path / "reports").exists() or not any(
        p for p in (tmp_path / "reports").iterdir() if not p.name.startswith(".")
    )  # nothing ran

    missing = write_suite("name: m\nmatrix:\n  model: [{name: gone, onnx: gone.onnx, input_shape: [4]}]\n", "m.yaml")
    result = run_cli("validate", str(missing))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "field 'matrix.model.0.onnx'" in result.stderr and "gone.onnx" in result.stderr
    assert "no such file" in result.stderr


def test_resume_reads_model_paths_from_the_original_suite_folder(tmp_path):
    """The run folder keeps a copy of the suite; its relative model paths still mean the original folder."""
    _save_gpu_checkpoint(tmp_path)
    (tmp_path / "suite.yaml").write_text(
        "name: r\nmatrix:\n  model: [{name: mine, checkpoint: gpu.pth, architecture: tiny_mlp}]\n", encoding="utf-8"
    )
    context = start_run(load_suite(tmp_path / "suite.yaml"), tmp_path / "reports")
    resumed = resume_run(context.run_dir)
    (scenario,) = resumed.pending
    assert scenario.source.path == str(tmp_path / "gpu.pth")
