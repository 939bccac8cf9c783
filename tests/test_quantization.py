"""int8_static, int8_weight_only, calibration data and the trade-off view (bench.runtimes.quantization,
bench.suite.calibration, bench.analysis.tradeoffs). No speed is asserted: the benchmark reports it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from support.demo_runs import RUN_ID, make_run

from bench import runtimes
from bench.analysis import tradeoffs
from bench.checks.pipeline import write_image_folder
from bench.cli import main
from bench.errors import SuiteError, Unsupported
from bench.results.record import Fidelity, PipelineFigures, QuantizationFacts, ResultRecord
from bench.results.runfolder import load_run
from bench.results.stats import LatencyStats
from bench.runtimes import formats, quantization
from bench.suite import calibration
from bench.suite.calibration import CalibrationSpec
from bench.suite.scenarios import load_suite

# --- calibration: refused before anything runs --------------------------------------------------


def _suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("defaults", "matrix", "field", "words"),
    [
        ("calibration: {source: data}", "model: [tiny_cnn]", "matrix", "has no data: folder"),
        ("calibration: {source: text}", "model: [tiny_cnn]", "matrix", "has no text: file"),
        ("calibration: {source: images}", "model: [tiny_cnn]", "defaults.calibration.source", "random, data, text"),
        ("calibration: {samples: 0}", "model: [tiny_cnn]", "defaults.calibration.samples", "integer >= 1"),
        ("calibration: {sample: 3}", "model: [tiny_cnn]", "defaults.calibration.sample", "did you mean 'samples'"),
        ("{calibration: {source: data}, data: {folder: empty}}", "model: [tiny_cnn]", "matrix", "has no images"),
        ("{calibration: {source: data}, data: {folder: images}}", "model: [tiny_mlp]", "matrix", "square RGB"),
    ],
)
def test_calibration_that_cannot_feed_the_model_is_refused_when_the_suite_is_read(
    tmp_path, defaults, matrix, field, words
):
    (tmp_path / "empty" / "cat").mkdir(parents=True)  # a class folder with no image in it
    write_image_folder(tmp_path / "images", classes=2, per_class=1)
    if defaults.startswith("{"):
        defaults = defaults[1:-1]
    text = f"name: s\ndefaults: {{{defaults}}}\nmatrix: {{{matrix}, precision: [int8_static]}}\n"
    with pytest.raises(SuiteError) as caught:
        load_suite(_suite(tmp_path, text))
    assert caught.value.field == field
    assert words in str(caught.value)


def test_calibration_is_checked_only_where_it_is_used(tmp_path):
    text = "name: s\ndefaults: {calibration: {source: data}}\nmatrix: {model: [tiny_cnn], precision: [fp32]}\n"
    (scenario,) = load_suite(_suite(tmp_path, text)).scenarios
    assert scenario.calibration == CalibrationSpec(source="data", samples=calibration.DEFAULT_SAMPLES)


def test_random_calibration_gives_seeded_batches_of_the_model_input_and_says_what_it_means():
    spec = CalibrationSpec(samples=10)
    first = calibration.calibration_batches(spec, (3, 8, 8), None, None, None, seed=0)
    again = calibration.calibration_batches(spec, (3, 8, 8), None, None, None, seed=0)
    assert [tuple(b.shape) for b in first] == [(8, 3, 8, 8), (2, 3, 8, 8)]
    assert all(a.equal(b) for a, b in zip(first, again, strict=True))
    assert "say nothing about a real model" in calibration.note(spec)
    assert calibration.note(CalibrationSpec(source="data")) is None


def test_image_calibration_takes_the_folder_images_through_the_pipeline_transforms(tmp_path):
    from bench.checks.pipeline import DataSpec

    write_image_folder(tmp_path / "images", classes=2, per_class=7)
    spec = CalibrationSpec(source="data", samples=10)
    batches = calibration.calibration_batches(spec, (3, 16, 16), DataSpec(str(tmp_path / "images")), None, None, 0)
    assert sum(len(b) for b in batches) == 10 and all(tuple(b.shape[1:]) == (3, 16, 16) for b in batches)


# --- layer counting -------------------------------------------------------------------------------


def _op(name: str) -> SimpleNamespace:
    return SimpleNamespace(__name__=name)


def test_torch_layers_count_conv_and_linear_ops_whose_weight_is_dequantized():
    dq = SimpleNamespace(target=_op("dequantize_per_channel.default"), args=())
    plain = SimpleNamespace(target="weight", args=())
    nodes = [
        SimpleNamespace(target=_op("conv2d.default"), args=("x", dq)),
        SimpleNamespace(target=_op("conv2d.default"), args=("x", plain)),  # left in fp32
        SimpleNamespace(target=_op("linear.default"), args=("x", dq)),
        SimpleNamespace(target=_op("relu.default"), args=("x",)),
    ]
    assert quantization.torch_layers_by_kind(nodes) == {"conv": 1, "linear": 1}


def test_onnx_layers_count_nodes_whose_weight_is_a_dequantized_initializer():
    def node(op: str, inputs: list[str], output: str) -> SimpleNamespace:
        return SimpleNamespace(op_type=op, input=inputs, output=[output])

    nodes = [
        node("DequantizeLinear", ["w_q", "s", "z"], "w"),
        node("DequantizeLinear", ["act_q", "s", "z"], "act"),
        node("Conv", ["x", "w"], "y"),
        node("MatMul", ["y", "act"], "z"),  # activation x activation: not a layer's weight
        node("Gemm", ["z", "w"], "out"),
    ]
    assert quantization.onnx_layers_by_kind(nodes, {"w_q"}) == {"conv": 1, "linear": 1}


def test_pt2e_quantizes_every_conv_and_linear_of_a_small_cnn():
    import torch

    from bench.suite.scenarios import Scenario

    scenario = Scenario("tiny_cnn", 1, 1, 1, "int8_static", "eager", (3, 32, 32))
    fp32 = runtimes.build_fp32(scenario)
    args, dynamic = formats._export_args(runtimes.make_batch(scenario, batch_size=2))
    batches = [(b,) for b in runtimes.model.calibration_batches(scenario)]
    program, facts = quantization.pt2e_static(fp32, args, dynamic, batches, CalibrationSpec())
    assert facts["quantization"]["layers_by_kind"] == {"conv": 2, "linear": 1}
    assert facts["quantized_layers"] == 3
    assert facts["quantization"]["library"] == "torchao" and facts["quantization"]["calibration_source"] == "random"
    # only int8 weight matrices are saved: the fp32 ones they replace are dropped, not kept beside them
    saved = [*program.state_dict.values(), *program.constants.values()]
    assert not any(t.dtype == torch.float32 and t.dim() > 1 for t in saved)


def test_int4_weight_only_groups_each_linear_by_the_largest_group_size_that_divides_it():
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers = [
        nn.Linear(256, 96),
        nn.ReLU(),
        nn.Linear(96, 64),
        nn.ReLU(),
        nn.Linear(64, 32),
        nn.Linear(32, 10),
        nn.Linear(10, 16),
    ]
    model = nn.Sequential(*layers)
    x = torch.randn(4, 256)
    with torch.inference_mode():
        reference = model(x)
        quantized, facts = quantization.weight_only_int4(model)
        out = quantized(x)
    info = facts["quantization"]
    # in_features 256 -> group 128, 96 -> 32 (not 64), 64 -> 64; the kernel takes neither 10 outputs (not a
    # multiple of 16) nor 10 inputs (no group divides them): those two layers stay fp32
    assert info["group_sizes"] == {"32": 1, "64": 1, "128": 1} and info["unquantized_linear"] == 2
    assert info["layers_by_kind"] == {"linear": 3} and facts["quantized_layers"] == 3
    assert type(quantized[0].weight).__name__ == "Int4OpaqueTensor" and type(quantized[5].weight) is nn.Parameter
    assert type(quantized[6].weight) is nn.Parameter
    assert torch.nn.functional.cosine_similarity(out.flatten(), reference.flatten(), dim=0) > 0.99
    with pytest.raises(Unsupported, match="quantized no conv or linear"):
        quantization.weight_only_int4(nn.Sequential(nn.Linear(10, 3)))


# --- Pareto and the reading -----------------------------------------------------------------------


def test_dominated_points_are_those_another_beats_or_ties_everywhere_and_beats_somewhere():
    flags = tradeoffs.dominated_flags([[1.0, -0.99], [2.0, -1.0], [2.0, -0.99], [3.0, -0.9], None, [1.0, -0.99]])
    # 0 and 5 tie each other; 2 is beaten by 0; 3 by all; 4 has no fidelity; 1 is the most faithful
    assert flags == [False, False, True, True, None, False]


def _record(
    precision: str,
    load: str,
    median_s: float,
    cosine: float | None,
    *,
    accuracy: float | None = None,
    status: str = "ok",
    note: str | None = None,
    dependence: float | None = 1.0,
) -> ResultRecord:
    ok = status == "ok"
    return ResultRecord(
        run_id="r",
        scenario_id=f"m-b1-t1-{precision}-{load}",
        suite="s",
        model="m",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision=precision,
        load=load,
        runtime="torch",
        input_shape=[4],
        status=status,
        reason=None if ok else "why",
        latency_s=LatencyStats.from_times([median_s] * 3 + [median_s * 1.5]) if ok else None,
        fidelity=Fidelity(0.0, cosine, 1.0, input_dependence=dependence) if cosine is not None else None,
        pipeline=PipelineFigures(top1_accuracy=accuracy) if accuracy is not None else None,
        artifact_bytes=2**20,
        quantization=QuantizationFacts(layers_by_kind={"conv": 2}, calibration_note=note) if note else None,
    )


def test_groups_mark_the_frontier_and_read_it_against_fp32_eager():
    records = [
        _record("fp32", "eager", 0.010, 1.0),
        _record("int8_static", "compile", 0.005, 0.998, note="random"),
        _record("bf16", "eager", 0.020, 0.9999),  # slower and less faithful than fp32: dominated
        _record("int8_dynamic", "onnxruntime", 0.0, None, status="unsupported"),
    ]
    (group,) = tradeoffs.build_groups(records, "Test CPU")
    assert [(p.precision, p.dominated) for p in group.points] == [
        ("int8_static", False),
        ("fp32", False),
        ("bf16", True),
    ]
    assert group.points[0].speedup_vs_fp32_eager == pytest.approx(2.0)
    assert group.reading.startswith("On Test CPU, m at batch 1: int8_static under compile is 2.00x fp32 eager's speed")
    assert "random calibration" in group.reading
    assert group.not_ok == [("m-b1-t1-int8_dynamic-onnxruntime", "unsupported", "why")]
    table = tradeoffs.render_table([group])
    assert "frontier" in table and "dominated" in table and "2 conv" in table and "1 unsupported" in table
    assert json.loads(tradeoffs.render_json([group]))[0]["points"][0]["precision"] == "int8_static"
    assert "| int8_static | compile |" in tradeoffs.render_markdown([group])


def test_a_frontier_row_whose_output_is_flat_says_its_cosine_is_noise():
    records = [_record("fp32", "eager", 0.010, 1.0), _record("int8_dynamic", "eager", 0.004, 0.0076, dependence=0.002)]
    (group,) = tradeoffs.build_groups(records, "Test CPU")
    assert [(p.precision, p.flat_output) for p in group.points] == [("int8_dynamic", True), ("fp32", False)]
    assert "its cosine says nothing" in group.reading
    table = tradeoffs.render_table([group])
    assert "0.0076 flat" in table and "1.0000 flat" not in table and "barely depends on the input" in table


def test_a_run_of_fp32_eager_rows_only_has_nothing_to_trade_off():
    # It read "nothing beats fp32 eager ...: every other row is dominated" with no other row there.
    (group,) = tradeoffs.build_groups([_record("fp32", "eager", 0.010, 1.0)], "Test CPU")
    assert "fp32 eager only: nothing to trade off" in group.reading and "dominated" not in group.reading


def test_a_fidelity_figure_left_null_says_why_under_the_table():
    note = "no nearest-neighbour agreement: 2 distinct sample(s), it needs at least 3"
    records = [
        _record("fp32", "eager", 0.010, 1.0),
        dataclasses.replace(
            _record("int8_static", "eager", 0.005, 0.999), fidelity=Fidelity(0.1, 0.999, None, note=note)
        ),
    ]
    (group,) = tradeoffs.build_groups(records, None)
    assert f"int8_static under eager: {note}" in tradeoffs.render_table([group])


def test_accuracy_joins_the_objectives_when_every_row_has_one():
    records = [
        _record("fp32", "eager", 0.010, 1.0, accuracy=0.90),
        _record("int8_static", "eager", 0.020, 0.99, accuracy=0.95),
    ]
    (group,) = tradeoffs.build_groups(records, None)
    assert all(p.dominated is False for p in group.points)  # slower and less faithful, but more accurate


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_command_reads_a_run_folder_and_the_same_run_from_the_history_alike(tmp_path, capsys):
    run_dir, history = make_run(tmp_path), str(tmp_path / "h.sqlite")
    assert main(["tradeoffs", str(run_dir), "--model", "tiny_mlp", "--format", "json", "--history", history]) == 0
    from_folder = json.loads(capsys.readouterr().out)
    assert [p["precision"] for p in from_folder[0]["points"]] == ["fp32", "fp16", "bf16"]  # fastest first
    assert main(["history", "import", str(run_dir), "--history", history]) == 0
    capsys.readouterr()
    assert main(["tradeoffs", RUN_ID, "--model", "tiny_mlp", "--format", "json", "--history", history]) == 0
    assert json.loads(capsys.readouterr().out) == from_folder


def test_int8_static_and_weight_only_run_end_to_end_and_tradeoffs_prints_them(run_cli, write_suite, tmp_path):
    suite = write_suite(
        """
        name: quant
        defaults:
          measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.05}
          calibration: {samples: 8}
        matrix:
          model: [tiny_cnn]
          precision: [fp32, int8_static, int8_weight_only]
          load: [eager, mmap, onnxruntime]
          batch_size: [2]
        exclude:  # rows no assertion below reads (test_precisions runs fp32 in every load mode)
          - {precision: fp32, load: mmap}
          - {precision: fp32, load: onnxruntime}
          - {precision: int8_weight_only, load: mmap}
        include:
          - {model: tiny_mlp, precision: int4_weight_only, load: eager, batch_size: 2}
        """
    )
    done = run_cli("run", str(suite), "--no-history")
    assert done.returncode == 0, done.stderr
    (results,) = tmp_path.glob("reports/*/results.jsonl")
    rows = {r.scenario_id: r for r in load_run(results.parent).records}
    assert {r.status for r in rows.values()} == {"ok", "unsupported"}
    for load in ("eager", "onnxruntime"):
        row = rows[f"tiny_cnn-b2-t1-int8_static-{load}"]
        assert row.status == "ok", row.reason
        assert row.quantization.layers_by_kind == {"conv": 2, "linear": 1}
        assert row.quantization.calibration_source == "random" and row.quantization.calibration_samples == 8
        assert "say nothing about a real model" in row.quantization.calibration_note
        assert row.fidelity.cosine_similarity is not None and row.artifact_prepare_s > 0
    assert rows["tiny_cnn-b2-t1-int8_static-onnxruntime"].quantization.reduce_range == runtimes.ort_reduce_range()
    weight_only = rows["tiny_cnn-b2-t1-int8_weight_only-eager"]
    assert weight_only.status == "ok" and weight_only.quantization.library == "torchao"
    assert weight_only.quantization.layers_by_kind == {"linear": 1}
    int4 = rows["tiny_mlp-b2-t1-int4_weight_only-eager"]
    assert int4.status == "ok", int4.reason
    assert int4.quantization.method == "int4_weight_only" and int4.quantization.group_sizes == {"64": 1, "128": 1}
    assert int4.quantization.unquantized_linear == 1  # the 10-way output layer: the kernel needs 16s
    # 16 levels per group of random weights: close (0.989 on the AMD EPYC VM), far from the noise of a broken kernel
    assert int4.fidelity.cosine_similarity > 0.95
    assert "PT2E" in rows["tiny_cnn-b2-t1-int8_static-mmap"].reason
    assert "eager and compile" in rows["tiny_cnn-b2-t1-int8_weight_only-onnxruntime"].reason

    printed = run_cli("tradeoffs", str(results.parent), "--model", "tiny_cnn")
    assert printed.returncode == 0, printed.stderr
    assert "tiny_cnn, batch 2" in printed.stdout and "int8_static" in printed.stdout
    assert "frontier" in printed.stdout
    unknown = run_cli("tradeoffs", str(results.parent), "--model", "resnet18")
    assert unknown.returncode == 2 and "its models: tiny_cnn" in unknown.stderr
    report = (results.parent / "report.md").read_text(encoding="utf-8")
    assert "## Trade-offs" in report and "tiny_cnn, batch 2" in report


TRAINED_EPOCHS = 10  # 1.0 accuracy on this folder from 5 epochs on (30 cost 3 CPU-s, 10 cost 0.8)


def _train_tiny_cnn(images: Path, out: Path) -> None:
    """tiny_cnn trained on the folder's images (their class is their tint): accuracy that means something."""
    import torch

    from bench.checks.pipeline import DataSpec, build_loader
    from bench.models import catalog as models

    torch.manual_seed(0)
    model = models.build_model("tiny_cnn").train()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = build_loader(DataSpec(str(images)), (3, 32, 32), 8)
    for _ in range(TRAINED_EPOCHS):
        for batch, labels in loader:
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(batch), labels).backward()
            optimiser.step()
    torch.save(model.state_dict(), out)


@pytest.mark.slow
def test_int8_static_calibrated_on_the_data_folder_reports_top1_accuracy_beside_fp32(run_cli, write_suite, tmp_path):
    write_image_folder(tmp_path / "images", classes=3, per_class=8, size=40)
    _train_tiny_cnn(tmp_path / "images", tmp_path / "trained.pth")
    suite = write_suite(
        """
        name: accuracy
        defaults:
          measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.05}
          data: {folder: images}
          calibration: {source: data, samples: 16}
        matrix:
          model: [{name: trained, checkpoint: trained.pth, architecture: tiny_cnn}]
          precision: [fp32, int8_static]
          load: [eager, onnxruntime]
          batch_size: [4]
        exclude: [{precision: fp32, load: onnxruntime}]  # fp32's accuracy is read under eager only
        """
    )
    done = run_cli("run", str(suite), "--no-history")
    assert done.returncode == 0, done.stderr
    (results,) = tmp_path.glob("reports/*/results.jsonl")
    rows = {(r.precision, r.load): r for r in load_run(results.parent).records}
    assert all(r.status == "ok" for r in rows.values()), [r.reason for r in rows.values()]
    fp32 = rows[("fp32", "eager")].pipeline.top1_accuracy
    assert fp32 >= 0.9  # the model learned the tints: accuracy means something here
    for load in ("eager", "onnxruntime"):
        row = rows[("int8_static", load)]
        assert row.quantization.calibration_source == "data" and row.quantization.calibration_note is None
        assert row.pipeline.top1_accuracy >= fp32 - 0.2  # reported beside fp32's, and close to it
    printed = run_cli("tradeoffs", str(results.parent), "--format", "json")
    (group,) = json.loads(printed.stdout)
    assert {p["precision"] for p in group["points"]} == {"fp32", "int8_static"}
    assert all(p["top1_accuracy"] is not None for p in group["points"])
