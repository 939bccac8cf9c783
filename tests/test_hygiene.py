"""grad_mode and module_mode (bench.checks.hygiene): suite axes, what the worker measures, and the report section."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from support.demo_runs import ENVIRONMENT, run_of
from torch import nn

from bench import runtimes
from bench.checks import hygiene
from bench.checks.fidelity import FIDELITY_INPUTS
from bench.errors import SuiteError
from bench.report import write_report
from bench.report.hygiene import build_hygiene
from bench.results.record import Fidelity, HygieneFigures, KernelPeaks, ResultRecord, RssFigures
from bench.results.stats import LatencyStats
from bench.suite.scenarios import parse_suite

MIB = 1024 * 1024


def _suite(matrix: str, extra: str = "") -> list:
    return list(parse_suite(f"name: h\nmatrix:\n{matrix}{extra}").scenarios)


def test_modes_are_axes_in_the_id_only_when_not_default():
    scenarios = _suite(
        "  model: [tiny_cnn]\n  grad_mode: [inference_mode, no_grad, enabled]\n  module_mode: [eval, train]\n"
    )
    ids = [s.id for s in scenarios]
    assert ids == [
        "tiny_cnn-b1-t1-fp32-eager",
        "tiny_cnn-b1-t1-fp32-eager-train",
        "tiny_cnn-b1-t1-fp32-eager-no_grad",
        "tiny_cnn-b1-t1-fp32-eager-no_grad-train",
        "tiny_cnn-b1-t1-fp32-eager-grad_enabled",
        "tiny_cnn-b1-t1-fp32-eager-grad_enabled-train",
    ]
    assert scenarios[5].grad_mode == "enabled" and scenarios[5].module_mode == "train"
    # The worker gets the scenario as JSON: the modes survive the trip.
    assert type(scenarios[5]).from_dict(json.loads(json.dumps(scenarios[5].to_dict()))) == scenarios[5]


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        (
            "matrix:\n  model: [tiny_mlp]\n  grad_mode: [off]\n",
            4,
            "matrix.grad_mode.0",
            "expected one of inference_mode, no_grad, enabled",
        ),
        (
            "defaults:\n  module_mode: training\nmatrix:\n  model: [tiny_mlp]\n",
            3,
            "defaults.module_mode",
            "expected one of eval, train",
        ),
        (
            "defaults:\n  profile: true\nmatrix:\n  model: [tiny_mlp]\n  module_mode: [train]\n",
            4,
            "matrix",
            "profile is measured in eval() under inference_mode only",
        ),
    ],
)
def test_bad_modes_name_the_file_line_and_field(text, line, field, fragment):
    with pytest.raises(SuiteError) as caught:
        parse_suite("name: h\n" + text, "h.yaml")
    assert (caught.value.line, caught.value.field) == (line, field)
    assert fragment in str(caught.value)


def test_other_load_modes_are_unsupported_with_a_reason():
    scenarios = _suite(
        "  model: [tiny_cnn]\n  load: [eager, mmap, torchscript, export, onnxruntime]\n"
        "  grad_mode: [inference_mode, no_grad, enabled]\n  module_mode: [eval, train]\n"
    )
    reasons = {s.id: runtimes.modes_reason(s) for s in scenarios}
    supported = sorted(i.removeprefix("tiny_cnn-b1-t1-fp32-") for i, r in reasons.items() if r is None)
    assert supported == sorted(
        [
            *(
                f"{load}{mode}"
                for load in ("eager", "mmap")
                for mode in ("", "-train", "-no_grad", "-no_grad-train", "-grad_enabled", "-grad_enabled-train")
            ),
            "torchscript",
            "torchscript-no_grad",
            "export",
            "export-no_grad",
            "export-grad_enabled",
            "onnxruntime",
        ]
    )
    assert "no autograd" in reasons["tiny_cnn-b1-t1-fp32-onnxruntime-no_grad"]
    assert "eval mode" in reasons["tiny_cnn-b1-t1-fp32-export-train"]
    # The runner asks bench.runtimes, which asks the grad and module modes first.
    assert runtimes.unsupported_reason(scenarios[-1]) == reasons[scenarios[-1].id]


class _Net(nn.Module):
    """BatchNorm and Dropout: both behave differently in training mode. Comes in training mode, as nn.Modules do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 6))

    def forward(self, x):
        return self.body(x)


def _loaded(module_mode: str, grad_mode: str) -> tuple:
    scenario = _suite(f"  model: [tiny_mlp]\n  module_mode: [{module_mode}]\n  grad_mode: [{grad_mode}]\n")[0]
    torch.manual_seed(0)
    model = _Net().eval()
    with torch.no_grad():  # running statistics away from their initial 0 / 1
        model.body[1].running_mean.uniform_(-1, 1)
        model.body[1].running_var.uniform_(0.5, 2)
    return scenario, model


def test_train_mode_shows_disagreement_non_repeating_outputs_and_moved_statistics():
    scenario, model = _loaded("train", "inference_mode")
    as_loaded = {name: b.clone() for name, b in model.named_buffers()}
    with hygiene.grad_context(scenario.grad_mode):
        saved, facts = hygiene.prepare(scenario, model)
        assert model.training and facts == {"parameters_requiring_grad": 6}
        inputs, batch = torch.randn(FIDELITY_INPUTS, 8), torch.randn(8, 8)
        for _ in range(5):  # the timed calls
            model(batch)
        checked = hygiene.check(scenario, model, inputs, batch, saved)
    assert checked["outputs_repeat"] is False and checked["repeat_max_abs_diff"] > 0  # Dropout
    assert checked["vs_default"]["max_abs_error"] > 0.01
    assert checked["eval_after_train_vs_default"]["max_abs_error"] > 0  # BatchNorm's running statistics moved
    assert "autograd_saved_bytes" not in checked  # no graph under inference_mode
    # Afterwards the model is back in the scenario's mode, with the buffers it was loaded with.
    assert model.training
    assert all(torch.equal(b, as_loaded[name]) for name, b in model.named_buffers())


def test_eval_rows_repeat_and_match_the_default():
    scenario, model = _loaded("eval", "no_grad")
    with hygiene.grad_context(scenario.grad_mode):
        saved, _ = hygiene.prepare(scenario, model)
        checked = hygiene.check(scenario, model, torch.randn(FIDELITY_INPUTS, 8), torch.randn(2, 8), saved)
    assert saved == {} and checked["outputs_repeat"] is True
    assert checked["vs_default"]["max_abs_error"] == 0 and checked["vs_default"]["top1_agreement"] == 1.0
    assert "eval_after_train_vs_default" not in checked


def test_autograd_saved_bytes_grow_with_the_batch_and_leave_the_weights_out():
    model = nn.Sequential(nn.Linear(16, 4096), nn.ReLU(), nn.Linear(4096, 4)).eval()
    weights = sum(p.numel() * 4 for p in model.parameters())
    with torch.enable_grad():
        small, tensors = hygiene.autograd_saved_bytes(model, lambda: model(torch.randn(2, 16)))
        large, _ = hygiene.autograd_saved_bytes(model, lambda: model(torch.randn(8, 16)))
    assert tensors >= 2
    assert small >= 2 * 4096 * 4  # at least the ReLU's output, kept for backward
    assert large == 4 * small  # activations only: linear in the batch
    assert small < weights  # the weights, saved for backward too, are not counted
    with torch.no_grad():
        assert hygiene.autograd_saved_bytes(model, lambda: model(torch.randn(2, 16))) == (0, 0)


def test_grad_enabled_check_counts_the_graph_of_the_timed_batch():
    scenario, model = _loaded("eval", "enabled")
    with hygiene.grad_context(scenario.grad_mode):
        saved, facts = hygiene.prepare(scenario, model)
        checked = hygiene.check(scenario, model, torch.randn(FIDELITY_INPUTS, 8), torch.randn(8, 8), saved)
    assert facts["parameters_requiring_grad"] == 6
    assert checked["autograd_saved_bytes"] > 0 and checked["autograd_saved_tensors"] > 0


def test_a_factory_model_given_in_training_mode_is_recorded_as_given():
    scenario = _suite("  model: [{name: mine, factory: 'torch.nn:Identity', input_shape: [4]}]\n")[0]
    given = hygiene.given_facts(scenario, _Net())
    assert given == {"hygiene": {"given_training": True, "given_parameters_requiring_grad": 6}}
    assert hygiene.given_facts(_suite("  model: [tiny_mlp]\n")[0], _Net()) == {}  # bench builds it: nothing to say


# ------------------------------------------------------------------------------------------- report


def _record(grad_mode: str, module_mode: str, median_ms: float, steady_mib: float, **hygiene_fields) -> ResultRecord:
    suffix = "".join(
        f"-{p}"
        for p in (
            {"no_grad": "no_grad", "enabled": "grad_enabled"}.get(grad_mode),
            "train" if module_mode == "train" else None,
        )
        if p
    )
    latency = LatencyStats.from_times([median_ms / 1e3] * 5)
    return ResultRecord(
        run_id="r",
        scenario_id=f"resnet18-b8-t1-fp32-eager{suffix}",
        suite="h",
        model="resnet18",
        batch_size=8,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        runtime="torch",
        input_shape=[3, 224, 224],
        status="ok",
        latency_s=latency,
        rss_bytes=RssFigures(peak=int(steady_mib * MIB)),
        peak_rss_kernel_phase_bytes=KernelPeaks(steady=int(steady_mib * MIB)),
        grad_mode=grad_mode,
        module_mode=module_mode,
        hygiene=HygieneFigures(outputs_repeat=True, **hygiene_fields),
    )


HYGIENE_RECORDS = [
    _record("inference_mode", "eval", 10.0, 600),
    _record("enabled", "eval", 13.0, 700, autograd_saved_bytes=90 * MIB, vs_default=Fidelity(0.0, 1.0, 1.0, inputs=4)),
    _record(
        "inference_mode",
        "train",
        10.5,
        600,
        vs_default=Fidelity(2.5, 0.4, 0.25, inputs=4),
        eval_after_train_vs_default=Fidelity(0.3, 0.9, 1.0, inputs=4),
    ),
]


def test_the_section_sets_each_row_against_the_default_and_sums_up_each_model():
    section = build_hygiene([run_of(HYGIENE_RECORDS, suite="h")])
    assert section is not None
    by_id = {row[0]: row for row in section.rows}
    enabled = by_id["resnet18-b8-t1-fp32-eager-grad_enabled"]
    assert enabled[4:8] == ["+30", "700.0", "+100.0", "90.00"]
    train = by_id["resnet18-b8-t1-fp32-eager-train"]
    assert train[8:10] == ["25", "0.4000"]
    assert by_id["resnet18-b8-t1-fp32-eager"][4] == "-"  # the default against itself: nothing
    (sentence,) = section.sentences
    assert sentence.startswith(
        "resnet18: Forgetting no_grad costs +100.0 MiB peak RSS at batch 8 (autograd holds 90.0 MiB per call), "
        "latency +30%;"
    )
    assert "forgetting eval() changes top-1 on 3 of 4 inputs" in sentence
    assert "eval() afterwards still differs" in sentence
    assert build_hygiene([run_of(HYGIENE_RECORDS[:1], suite="h")]) is None  # only default rows: no section


def test_the_report_shows_the_section_in_html_and_markdown(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    given = dataclasses.replace(HYGIENE_RECORDS[0].hygiene, given_training=True, given_parameters_requiring_grad=62)
    records = [dataclasses.replace(HYGIENE_RECORDS[0], hygiene=given), *HYGIENE_RECORDS[1:]]
    (run_dir / "run.json").write_text(json.dumps({"run_id": "r", "suite": "h", "status": "complete"}))
    (run_dir / "environment.json").write_text(json.dumps(ENVIRONMENT))
    (run_dir / "scenarios.json").write_text(json.dumps([{"scenario_id": r.scenario_id} for r in records]))
    (run_dir / "results.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    result = write_report(run_dir)
    markdown, page = result.markdown.read_text(), result.html.read_text()
    assert "## Inference hygiene" in markdown and "- resnet18: Forgetting no_grad costs +100.0 MiB" in markdown
    assert '<h2 id="hygiene">Inference hygiene</h2>' in page and 'href="#hygiene"' in page
    assert "your model as given was in training mode with 62 parameter tensors requiring grad" in markdown
    assert result.csv.read_text().splitlines()[0].count("grad_mode") == 1


# ------------------------------------------------------------------------------------- end to end

FACTORY = """
from torch import nn

def net():  # returned in training mode, as every fresh nn.Module is
    return nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 8))
"""


@pytest.mark.slow
def test_bench_run_measures_the_forgotten_modes_and_reports_them(run_cli, write_suite, tmp_path):
    (tmp_path / "bench_e2e_hygiene.py").write_text(FACTORY, encoding="utf-8")
    suite = write_suite(
        """
        name: hygiene-e2e
        defaults: {batch_size: 4, measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.05}}
        matrix:
          model: [{name: net, factory: "bench_e2e_hygiene:net", input_shape: [16]}]
          grad_mode: [inference_mode, enabled]
        include:
          - {model: net, module_mode: train}
          - {model: net, load: onnxruntime, grad_mode: no_grad}
        """
    )
    result = run_cli("run", str(suite), "--no-history")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if not p.name.startswith(".")]
    rows = {json.loads(line)["scenario_id"]: json.loads(line) for line in (run_dir / "results.jsonl").open()}
    default, enabled = rows["net-b4-t1-fp32-eager"], rows["net-b4-t1-fp32-eager-grad_enabled"]
    train, onnx = rows["net-b4-t1-fp32-eager-train"], rows["net-b4-t1-fp32-onnxruntime-no_grad"]
    assert [r["status"] for r in (default, enabled, train)] == ["ok"] * 3
    assert onnx["status"] == "unsupported" and "no autograd" in onnx["reason"]
    # The factory gave a training-mode module with grad-requiring parameters; the default row measured it in eval().
    assert default["hygiene"]["given_training"] is True and default["hygiene"]["given_parameters_requiring_grad"] == 6
    assert default["hygiene"]["outputs_repeat"] is True and default["hygiene"]["vs_default"] is None
    assert default["fidelity"]["max_abs_error"] < 1e-5  # eval(): the fp32 eager reference's outputs
    assert (enabled["grad_mode"], enabled["module_mode"]) == ("enabled", "eval")
    assert enabled["hygiene"]["autograd_saved_bytes"] > 0 and enabled["hygiene"]["vs_default"]["max_abs_error"] < 1e-5
    assert train["hygiene"]["outputs_repeat"] is False  # Dropout
    assert train["hygiene"]["vs_default"]["max_abs_error"] > 0.01
    assert train["hygiene"]["eval_after_train_vs_default"]["max_abs_error"] > 0  # running statistics moved
    markdown = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "## Inference hygiene" in markdown and "- net: Forgetting no_grad costs" in markdown
    assert "forgetting eval() changes top-1" in markdown or "forgetting eval() moves the outputs" in markdown
    assert "your model as given was in training mode with 6 parameter tensors requiring grad" in markdown
    assert '<h2 id="hygiene">Inference hygiene</h2>' in (run_dir / "report.html").read_text(encoding="utf-8")
