"""bench advise: the decisions on fake candidates of known speed, memory and fidelity (bench.advise.decide),
the budget (bench.advise.stages with a fake measurement), the advice.json contract, bad input, and one
real run of the CLI on tiny_mlp."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest
from support.capacity_fakes import capacity, layout
from support.demo_runs import assert_png, run_of
from support.text_models import config_only

from bench.advise import stages as stages_module
from bench.advise.decide import AdviceRequest, Measured, decide
from bench.advise.space import candidates, capacity_scenario, estimate_capacity_s, estimate_screen_s, stage_id
from bench.advise.stages import Stages
from bench.analysis.plan import GIB, Host
from bench.cli import main
from bench.commands.advise import overall
from bench.measure.runner import RunContext
from bench.report.advice import advice_markdown, build_advice
from bench.results.advice import VERDICTS, FidelityFloor, read_advice
from bench.results.record import Fidelity, ResultRecord, RssFigures, StallFloor, Timeline
from bench.results.stats import LatencyStats
from bench.suite.scenarios import parse_suite

SLO_S = 0.05
MIB = 1024 * 1024


def request(**changes) -> AdviceRequest:
    base = AdviceRequest(
        slo_p99_s=SLO_S,
        target_rps=1000.0,
        floor=FidelityFloor("cosine", 0.99),
        host=Host(cores=2, memory_bytes=8 * GIB, cost_per_hour=1.0, source="given"),
        budget_s=1800.0,
        top_k=5,
    )
    return dataclasses.replace(base, **changes)


def row(
    scenario_id: str, precision: str, median_ms: float, cosine: float | None, peak_mib: float, **extra
) -> ResultRecord:
    times = [median_ms / 1e3] * 95 + [median_ms * 1.5 / 1e3] * 5
    return ResultRecord(
        run_id="r",
        scenario_id=scenario_id,
        suite="s",
        model="m",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision=precision,
        load="eager",
        runtime="torch",
        input_shape=[8],
        status="ok",
        latency_s=LatencyStats.from_times(times),
        rss_bytes=RssFigures(peak=int(peak_mib * MIB)),
        fidelity=Fidelity(None, cosine, 1.0, input_dependence=1.0),
        **extra,
    )


def load_tested(screen: ResultRecord, rate_per_s: float | None) -> ResultRecord:
    """Its capacity row: 2 instances x 1 thread whose confirmed rate at the SLO is rate_per_s (None: no rate)."""
    steps = [(rate_per_s, SLO_S / 2), (rate_per_s * 2, SLO_S * 4)] if rate_per_s else [(10.0, SLO_S * 3)]
    figures = capacity([layout(2, 1, steps, SLO_S)], SLO_S)
    return dataclasses.replace(screen, scenario_id=stage_id(screen.scenario_id, "capacity"), capacity=figures)


def measured(screen: ResultRecord, rate_per_s: float | None = None, **changes) -> Measured:
    return Measured(
        scenario_id=screen.scenario_id,
        model="m",
        precision=screen.precision,
        load="eager",
        threads=1,
        batch_size=1,
        screen=screen,
        capacity=load_tested(screen, rate_per_s) if rate_per_s is not None or changes.pop("no_rate", False) else None,
        **changes,
    )


def by_id(advice):
    return {c.scenario_id: c for c in advice.candidates}


def test_the_cheapest_feasible_wins_a_fast_one_below_the_floor_never_does_and_a_dominated_one_is_dropped():
    fp32 = row("m-fp32", "fp32", 10, 1.0, 300)
    bf16 = row("m-bf16", "bf16", 6, 0.995, 200)  # feasible and the cheapest: it serves the most per host
    int8 = row("m-int8", "int8_dynamic", 2, 0.95, 100)  # the fastest, below the floor
    fp16 = row("m-fp16", "fp16", 8, 0.992, 250)  # slower, fatter and less faithful than bf16: dominated
    items = [
        measured(fp32, 200.0),
        measured(bf16, 400.0),
        measured(int8, 5000.0),  # even load-tested it may not win
        measured(fp16),
    ]
    advice = decide(items, request(), spent_s=12.0)
    verdicts = {c.scenario_id: c.verdict for c in advice.candidates}
    assert verdicts == {"m-fp32": "frontier", "m-bf16": "chosen", "m-int8": "below_fidelity", "m-fp16": "dominated"}
    winner = advice.winner
    assert winner is not None and winner.scenario_id == "m-bf16" and winner.layout == "2x1"
    # 1000 requests/s at 400/s per host with 30 % headroom: 4 hosts at $1 each
    assert winner.rate_per_host_per_s == pytest.approx(400.0) and winner.hosts == 4
    assert winner.cost_per_million == pytest.approx(4.0 / (1000 * 3600) * 1e6)
    assert winner.confirmed is False and "not confirmed" in advice.why  # no confirm row was given
    assert "m-fp32" in advice.runner_up and "costs" in advice.runner_up
    assert "0.95 misses the floor cosine >= 0.99" in by_id(advice)["m-int8"].why
    assert "m-bf16 is at least as good" in by_id(advice)["m-fp16"].why


def test_a_rate_projected_from_one_instance_says_so():
    # The host-filling 2x1 layout confirmed no rate; the 1-instance point did: bench plan projects it to 2
    # instances, and the advice must not call that a rate of the 2x1 layout (bert_tiny's 0.26 ms calls did so).
    bf16 = row("m-bf16", "bf16", 6, 0.995, 200)
    one = layout(1, 1, [(300.0, SLO_S / 2)], SLO_S, requested=False)
    two = layout(2, 1, [(10.0, SLO_S * 3)], SLO_S)
    record = dataclasses.replace(bf16, scenario_id=stage_id("m-bf16", "capacity"), capacity=capacity([one, two], SLO_S))
    item = dataclasses.replace(measured(bf16), capacity=record)
    advice = decide([item], request(), spent_s=1.0)
    assert advice.winner is not None and advice.winner.rate_per_host_per_s == pytest.approx(600.0)
    assert "projected from the confirmed rate of 1 instance(s)" in advice.why, advice.why


def test_the_confirm_row_plans_the_lower_of_the_two_rates_and_marks_it_confirmed():
    bf16 = row("m-bf16", "bf16", 6, 0.995, 200)
    confirm = dataclasses.replace(load_tested(bf16, 300.0), scenario_id=stage_id("m-bf16", "confirm"))
    advice = decide([measured(bf16, 400.0, confirm=confirm)], request(), spent_s=1.0)
    assert advice.winner.confirmed and advice.winner.rate_per_host_per_s == pytest.approx(300.0)
    assert by_id(advice)["m-bf16"].rows == ["m-bf16", "m-bf16~capacity", "m-bf16~confirm"]


def test_an_slo_none_meets_names_the_nearest_miss_and_no_winner():
    fast = row("m-fast", "fp32", 10, 1.0, 300)
    slow = row("m-slow", "bf16", 70, 0.999, 300)  # its median alone is over the 50 ms SLO
    advice = decide([measured(fast, no_rate=True), measured(slow)], request(), spent_s=1.0)
    assert advice.winner is None
    verdicts = {c.scenario_id: c.verdict for c in advice.candidates}
    assert verdicts == {"m-fast": "slo_missed", "m-slow": "slo_missed"}
    assert "no candidate meets both" in advice.why and "the nearest miss is m-fast" in advice.why
    assert "above the 50 ms SLO" in by_id(advice)["m-slow"].why


def test_a_flat_output_or_too_few_samples_cannot_show_the_floor_and_real_data_is_suggested():
    flat = row("m-flat", "int8_dynamic", 2, 0.999, 100)
    flat = dataclasses.replace(flat, fidelity=dataclasses.replace(flat.fidelity, input_dependence=1e-6))
    few = row("m-few", "fp32", 3, 1.0, 100)
    few = dataclasses.replace(few, fidelity=dataclasses.replace(few.fidelity, inputs=2))
    advice = decide([measured(flat, 900.0), measured(few, 900.0)], request(), spent_s=1.0)
    assert advice.winner is None
    for c in advice.candidates:
        assert c.verdict == "below_fidelity" and "cannot show the floor" in c.why and "data:" in c.why
    assert "input_dependence" in by_id(advice)["m-flat"].why and "distinct sample" in by_id(advice)["m-few"].why


def test_an_upper_bound_metric_and_the_plans_stall_note_reach_the_winner():
    lm = row("m-lm", "int8_dynamic", 5, None, 100)
    lm = dataclasses.replace(lm, fidelity=Fidelity(None, None, None, kl_divergence_max=0.01, inputs=16))
    item = measured(lm, 300.0)
    note = "this host's stalls put 1.2 % of requests over the 50 ms SLO at any rate"
    floor = StallFloor(20.0, 1000, 12, 0.012, 0.007, 0.02, limits_rate=True, note=note)
    figures = item.capacity.capacity
    stalled = dataclasses.replace(
        figures.layouts[0], server=dataclasses.replace(figures.layouts[0].server, stall_floor=floor)
    )
    item = dataclasses.replace(
        item, capacity=dataclasses.replace(item.capacity, capacity=dataclasses.replace(figures, layouts=[stalled]))
    )
    advice = decide([item], request(floor=FidelityFloor("kl", 0.05)), spent_s=1.0)
    assert advice.winner.scenario_id == "m-lm" and advice.winner.fidelity == 0.01
    assert advice.winner.stall_note == note and note in advice.why


def test_what_the_budget_left_is_not_measured_and_says_why(tmp_path, monkeypatch):
    suite = parse_suite(
        "name: b\ndefaults: {threads: 1, batch_size: 1, load: eager}\nmatrix: {model: [tiny_mlp], "
        "precision: [fp32, fp16, bf16]}\n",
        "b.yaml",
    )
    items = candidates(suite, 2)
    assert [c.id for c in items] == [s.id for s in suite.scenarios]  # every axis named: nothing searched
    slow_s = 1000.0

    def fake_run(context, scenario, progress, *, file_stem=None):  # a screen row that took 1000 s
        record = row(scenario.id, scenario.precision, 5, 1.0, 100)
        return dataclasses.replace(record, timeline=Timeline(wall_s=slow_s, overhead_s=0.0))

    monkeypatch.setattr(stages_module, "run_scenario", fake_run)
    (tmp_path / "results.jsonl").touch()
    context = RunContext("r", tmp_path, suite, {}, tmp_path / "cache")
    capacity_s = estimate_capacity_s(capacity_scenario(items[0].scenario, None, SLO_S * 1e3, 2), 2)
    budget_s = estimate_screen_s(items[0].scenario) + 2 * capacity_s + 1  # the first screen row fits, no more
    lines: list[str] = []
    stages = Stages(context, items, request(budget_s=budget_s), 2, lines.append)
    stages.screen()
    stages.capacity()
    assert list(stages.rows) == [items[0].id] and "left" in lines[0]
    advice = decide(stages.measured(), stages.request, stages.spent_s)
    assert advice.spent_s == slow_s and advice.winner is None
    left = [c for c in advice.candidates if c.verdict == "not_measured"]
    assert {c.scenario_id for c in left} == {items[0].id, items[1].id, items[2].id}
    assert all("budget" in c.why for c in left), [c.why for c in left]


ISSUE_FIELDS = {"slo_p99_ms", "target_rps", "fidelity_floor", "budget_s", "spent_s", "winner", "candidates"}
WINNER_FIELDS = {
    "scenario_id",
    "precision",
    "load",
    "threads",
    "batch_size",
    "batching",
    "layout",
    "rate_per_host_per_s",
    "confirmed",
    "hosts",
    "cost_per_hour",
    "cost_per_million",
    "fidelity",
}


def test_advice_json_has_the_issues_field_names_and_reads_back(tmp_path):
    advice = decide([measured(row("m-bf16", "bf16", 6, 0.995, 200), 400.0)], request(), spent_s=3.0)
    (tmp_path / "advice.json").write_text(advice.to_json())
    data = json.loads((tmp_path / "advice.json").read_text())
    assert set(data) >= ISSUE_FIELDS and data["fidelity_floor"] == {"metric": "cosine", "value": 0.99}
    assert set(data["winner"]) >= WINNER_FIELDS
    for candidate in data["candidates"]:
        assert {"verdict", "why", "precision", "load", "threads", "batch_size", "batching"} <= set(candidate)
        assert candidate["verdict"] in VERDICTS
    assert read_advice(tmp_path) == advice


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--min-fidelity", "bleu=0.9"], "METRIC one of cosine, top1, accuracy, nn, kl"),
        (["--min-fidelity", "cosine=1.5"], "VALUE a number from 0 to 1"),
        (["--budget-min", "0"], "--budget-min"),
    ],
)
def test_bad_flags_are_one_paragraph_and_exit_2(write_suite, capsys, flags, expected):
    suite = write_suite("name: x\nmatrix: {model: [tiny_mlp]}\n")
    status = main(["advise", str(suite), "--slo-p99-ms", "50", "--target-rps", "10", *flags])
    err = capsys.readouterr().err
    assert status == 2 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resume_keeps_the_request_it_started_with(tmp_path, capsys):
    assert main(["advise", "--resume", str(tmp_path), "--slo-p99-ms", "20"]) == 2
    assert "--slo-p99-ms cannot change it" in capsys.readouterr().err


def test_a_bad_suite_names_its_file_and_field(write_suite, capsys):
    suite = write_suite("name: x\nmatrix: {model: [tiny_mlp], precision: [fp8]}\n")
    status = main(["advise", str(suite), "--slo-p99-ms", "50", "--target-rps", "10"])
    err = capsys.readouterr().err
    assert status == 2 and str(suite) in err and "matrix.precision" in err and "Traceback" not in err


def test_a_generate_scenario_is_refused_with_where_it_is_planned(tmp_path, write_suite, capsys):
    # a generation request is judged on TTFT and TPOT (LLM server mode), not on one call's p99
    config_only(tmp_path / "lm", model_type="gpt2", vocab_size=100, n_positions=64)
    suite = write_suite(
        "name: x\ndefaults: {generate: {new_tokens: 4}}\n"
        "matrix: {model: [{name: lm, hf: lm, task: causal-lm, random_weights: true}], seq_len: [8]}\n"
    )
    status = main(["advise", str(suite), "--slo-p99-ms", "50", "--target-rps", "10"])
    err = capsys.readouterr().err
    assert status == 2 and "lm has a generate: block" in err and "slo_ttft_ms" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.serial  # a capacity search judges latencies against an SLO on pinned cores
def test_bench_advise_names_a_winner_in_one_run_folder_and_its_advice_yaml_runs(run_cli, write_suite, tmp_path):
    suite = write_suite(
        textwrap.dedent("""\
        name: adv
        defaults:
          threads: 2  # one search on 2 cores (1 x 2 threads); 2 x 1 would search 1 and 2 instances
          batch_size: 1
          load: eager
          measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.1}
          capacity: {slo_p99_ms: 1, duration_s: 0.2, step_min_duration_s: 0.2, step_min_requests: 50,
                     step_max_duration_s: 1.5, max_steps: 3, tolerance: 0.5, sweep: false}
        matrix:
          model: [tiny_mlp]
          precision: [fp32, fp16]
        """)
    )
    done = run_cli(
        "advise", str(suite), "--slo-p99-ms", "100", "--target-rps", "50", "--host-cost-per-hour", "1",
        "--budget-min", "2", "--top", "1", "--reports", "reports",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    advice = read_advice(run_dir)
    # spent_s against budget_s is not asserted: a row starts only when its estimate fits, and a busy host can
    # make the last one run longer than estimated (the budget test above checks the rule with fake rows)
    assert advice is not None and advice.winner is not None and advice.spent_s > 0
    assert {c.verdict for c in advice.candidates} <= set(VERDICTS) and all(c.why for c in advice.candidates)
    rows = [json.loads(line)["scenario_id"] for line in (run_dir / "results.jsonl").read_text().splitlines()]
    winner = advice.winner.scenario_id
    assert set(rows) >= {"tiny_mlp-b1-t2-fp32-eager", "tiny_mlp-b1-t2-fp16-eager", f"{winner}~capacity"}
    assert "## Advice" in (run_dir / "report.md").read_text()
    assert "advice.yaml" in done.stdout and "winner:" in done.stdout
    assert "history: recorded run" in done.stderr and (tmp_path / "reports" / "history.sqlite").is_file()
    valid = run_cli("validate", str(run_dir / "advice.yaml"))
    assert valid.returncode == 0 and winner in valid.stdout, valid.stderr
    # an SLO below one call's median: nothing can meet it, and the nearest miss is named (exit 1)
    missed = run_cli(
        "advise", str(suite), "--slo-p99-ms", "0.0001", "--target-rps", "50", "--budget-min", "1",
        "--reports", "reports", "--no-history",
    )  # fmt: skip
    assert missed.returncode == 1, missed.stderr[-3000:]
    assert "no winner" in missed.stdout and "the nearest miss is" in missed.stdout


def test_a_resumed_advise_measures_only_the_rows_it_lacks(tmp_path, monkeypatch):
    suite = parse_suite(
        "name: b\ndefaults: {threads: 1, batch_size: 1, load: eager}\nmatrix: {model: [tiny_mlp], "
        "precision: [fp32, fp16]}\n",
        "b.yaml",
    )
    items = candidates(suite, 2)
    measured_ids: list[str] = []

    def fake_run(context, scenario, progress, *, file_stem=None):
        measured_ids.append(file_stem)
        return dataclasses.replace(row(scenario.id, scenario.precision, 5, 1.0, 100), timeline=Timeline(1.0, 0.0))

    monkeypatch.setattr(stages_module, "run_scenario", fake_run)
    (tmp_path / "results.jsonl").touch()
    done = dataclasses.replace(row(items[0].id, "fp32", 5, 1.0, 100), timeline=Timeline(2.0, 0.0))
    context = RunContext("r", tmp_path, suite, {}, tmp_path / "cache", records=[done])
    stages = Stages(context, items, request(top_k=1), 2, lambda line: None)
    stages.screen()
    assert measured_ids == [items[1].id] and stages.spent_s == 3.0
    assert [json.loads(line)["scenario_id"] for line in (tmp_path / "results.jsonl").read_text().splitlines()] == [
        items[1].id
    ]


def test_bench_run_will_not_resume_an_advise_run(tmp_path, capsys):
    (tmp_path / "suite.yaml").write_text("name: x\nmatrix: {model: [tiny_mlp]}\n")
    (tmp_path / "results.jsonl").touch()
    (tmp_path / "run.json").write_text(json.dumps({"run_id": tmp_path.name, "advise": {"slo_p99_ms": 50}}))
    assert main(["run", "--resume", str(tmp_path), "--no-history"]) == 2
    assert "continue it with: bench advise --resume" in capsys.readouterr().err


def test_the_report_says_what_to_deploy_why_the_runner_up_lost_and_draws_the_frontier(tmp_path):
    fp32, bf16 = row("m-fp32", "fp32", 10, 1.0, 300), row("m-bf16", "bf16", 6, 0.995, 200)
    advice = decide([measured(fp32, 200.0), measured(bf16, 400.0)], request(), spent_s=60.0)
    (tmp_path / "advice.json").write_text(advice.to_json())
    section = build_advice([run_of([fp32], tmp_path)], tmp_path / "figures")
    text = advice_markdown(section, tmp_path)
    assert "## Advice" in text and "Deploy m-bf16" in text and "The runner-up, m-fp32 costs" in text
    assert text.index("| 1 | m-bf16 | chosen") < text.index("| 2 | m-fp32 | frontier")
    assert_png(tmp_path / "figures" / "advice_frontier.png")
    (tmp_path / "advice.json").write_text("[1, 2]")
    assert build_advice([run_of([fp32], tmp_path)], tmp_path / "figures").notes  # no advice: said, not raised


def _group_advice(rates: dict[str, float], price: float, group: str):
    """A host group's advice: m-fp32 and m-bf16 measured on that group's hosts at these rates per host."""
    fp32 = row(f"m-fp32@{group}", "fp32", 10, 1.0, 300)
    bf16 = row(f"m-bf16@{group}", "bf16", 6, 0.995, 200)
    host = Host(cores=2, memory_bytes=8 * GIB, cost_per_hour=price, source=f"{group}'s machine")
    items = [measured(fp32, rates["fp32"]), measured(bf16, rates["bf16"])]
    return decide(items, request(host=host), spent_s=10.0)


def test_each_host_group_gets_its_own_winner_at_its_own_price_and_the_cheapest_group_leads(tmp_path):
    # group a runs bf16 fastest; group b (another CPU) runs fp32 fastest
    a = _group_advice({"fp32": 200.0, "bf16": 400.0}, 1.0, "a")  # 1000/s at 400/s, 30 % headroom: 4 hosts, $4/h
    b = _group_advice({"fp32": 900.0, "bf16": 300.0}, 3.0, "b")  # 2 hosts of fp32 at $3: $6/h
    assert a.winner.scenario_id == "m-bf16@a" and b.winner.scenario_id == "m-fp32@b"
    advice = overall({"a": a, "b": b})
    assert advice.winner.scenario_id == "m-bf16@a" and "host group a serves it cheapest" in advice.why
    assert set(advice.groups) == {"a", "b"} and advice.groups["b"].winner.scenario_id == "m-fp32@b"
    cheaper_b = _group_advice({"fp32": 900.0, "bf16": 300.0}, 1.0, "b")  # the same hosts at $1: $2/h
    assert overall({"a": a, "b": cheaper_b}).winner.scenario_id == "m-fp32@b"
    unpriced = _group_advice({"fp32": 900.0, "bf16": 300.0}, None, "b")
    assert "not ranked" in overall({"a": a, "b": unpriced}).why  # a group without a price ranks no group
    assert overall({None: a}) is a  # one host type: the advice as it was, no groups

    (tmp_path / "advice.json").write_text(advice.to_json())
    assert read_advice(tmp_path) == advice  # the groups come back as advices
    fp32 = row("m-fp32@a", "fp32", 10, 1.0, 300)
    text = advice_markdown(build_advice([run_of([fp32], tmp_path)], tmp_path / "figures"), tmp_path)
    assert "### a" in text and "### b" in text and "Host group b: " in text and "Deploy m-fp32@b" in text
    assert "Across the host groups: host group a serves it cheapest" in text
    assert_png(tmp_path / "figures" / "advice_frontier_b.png")


@pytest.mark.parametrize(
    "hosts, flags, expected",
    [
        ("", ["--host-cost", "a=1"], "no --scheduler was given"),
        ("hosts: [a]\n", ["--host-cost", "a=1"], "no --scheduler was given"),
        ("", ["--host-cost", "a=1", "--scheduler", "tcp://127.0.0.1:9"], "has no hosts: groups"),
        ("hosts: [a]\n", ["--host-cost", "c=1", "--scheduler", "tcp://127.0.0.1:9"], "has no host group c"),
        ("hosts: [a]\n", ["--host-cost", "a=x", "--scheduler", "tcp://127.0.0.1:9"], "GROUP=PRICE"),
        ("hosts: [a]\n", [], "advise on them with --scheduler ADDRESS"),
    ],
)
def test_host_costs_and_host_groups_without_a_fleet_are_refused_before_anything_runs(
    write_suite, capsys, hosts, flags, expected
):
    # the scheduler address answers nothing: each refusal comes before connecting
    suite = write_suite(f"name: x\nmatrix: {{model: [tiny_mlp]}}\n{hosts}")
    status = main(["advise", str(suite), "--slo-p99-ms", "50", "--target-rps", "10", *flags])
    err = capsys.readouterr().err
    assert status == 2 and expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
