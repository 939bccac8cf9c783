"""The capacity planner (analysis.plan) on hand-made capacity figures: its arithmetic, its choices, its refusals."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from support.capacity_fakes import (
    MIB,
    capacity,
    generation_layout,
    layout,
    llm_capacity,
    record,
    stalled,
    two_core_run,
)
from support.demo_runs import Spec, make_run

from bench.analysis.plan import GIB, Host, PlanRequest, make_plan, plan_scenario, rate_at_slo, render_markdown
from bench.cli import main

SLO_S = 0.05


def _request(cores=2, memory_gib=16.0, cost=None, target=10_000.0, headroom=0.3, slo_s=SLO_S) -> PlanRequest:
    return PlanRequest(slo_s, target, headroom, Host(cores, int(memory_gib * GIB), cost, "given"))


def test_the_plan_picks_the_layout_that_serves_more_and_says_cpu_binds():
    plan = plan_scenario(record(two_core_run()), _request(cost=2.5))
    assert plan.status == "ok"
    chosen = plan.chosen
    # 2 pinned single-thread instances (1,800/s together) beat 1 instance of 2 threads (1,200/s).
    assert (chosen.threads_per_instance, chosen.instances) == (1, 2)
    assert chosen.qps_per_host == pytest.approx(1800)
    assert {o.threads_per_instance: o.qps_per_host for o in plan.options} == {1: 1800, 2: 1200}
    assert chosen.binds == "CPU"
    # 10,000/s with 30 % headroom: 1,800 x 0.7 = 1,260/s per host -> 7.94 -> 8 hosts.
    assert plan.usable_qps_per_host == pytest.approx(1260)
    assert plan.hosts == 8
    assert plan.cost_per_hour == pytest.approx(20.0)
    assert plan.cost_per_million_requests == pytest.approx(20.0 / (10_000 * 3600) * 1e6)


def test_memory_binds_when_memory_allows_fewer_instances_than_the_cores():
    # 64 cores but 2 GiB: (2048 MiB - 200 MiB shared) // 300 MiB USS = 6 instances of either width.
    plan = plan_scenario(record(two_core_run()), _request(cores=64, memory_gib=2))
    by_width = {o.threads_per_instance: o for o in plan.options}
    assert (by_width[1].instances_cpu_bound, by_width[1].instances_memory_bound) == (64, 6)
    assert (by_width[2].instances_cpu_bound, by_width[2].instances_memory_bound) == (32, 6)
    assert plan.chosen.binds == "memory"
    assert plan.chosen.instances == 6
    assert plan.chosen.memory_per_host_bytes == 6 * 300 * MIB + 200 * MIB
    # With 6 instances either way, the wider instances serve more: 6 x 1,200 beats 1-thread instances
    # scaled past the 2 measured by the sweep's efficiency (0.9 per doubling): 6 x 900 x 0.9^log2(3).
    assert by_width[1].qps_per_host == pytest.approx(6 * 900 * 0.9 ** math.log2(3))
    assert plan.chosen.threads_per_instance == 2 and plan.chosen.qps_per_host == pytest.approx(7200)
    assert "memory binds" in render_markdown(make_plan("r", [record(two_core_run())], {}, _request(64, 2)))


def test_scaling_beyond_the_measured_machine_follows_the_sweep():
    plan = plan_scenario(record(two_core_run()), _request(cores=8, memory_gib=256))
    by_width = {o.threads_per_instance: o for o in plan.options}
    one = by_width[1]
    # 1 instance: 1,000/s; 2 instances: 900/s each -> 0.9 kept per doubling; 8 instances = 2 more doublings.
    assert one.doubling_efficiency == pytest.approx(0.9) and one.efficiency_measured
    assert one.qps_per_host == pytest.approx(8 * 900 * 0.81)
    assert one.per_instance_at_host_per_s == pytest.approx(729) and one.doublings_beyond_measured == 2
    # One width-2 instance was measured: no sweep, linear assumed, and the plan says so.
    two = by_width[2]
    assert two.doubling_efficiency == 1.0 and not two.efficiency_measured
    assert two.qps_per_host == pytest.approx(4 * 1200)
    text = render_markdown(make_plan("r", [record(two_core_run())], {}, _request(8, 256)))
    assert "1.00 (assumed)" in text and "0.90" in text
    projection = "729.0 per instance, measured with 2 instance(s) and projected 2 doubling(s) further at efficiency"
    assert projection in text
    assert "Scaling:" in text and "linear in cores" in text
    assert "| 1x1 | 1,000 | 1,000 | 1.00 |" in text and "| 2x1 | 1,800 | 900 | 0.90 |" in text


def test_a_superlinear_sweep_is_not_extrapolated_beyond_linear():
    figures = capacity(
        [layout(1, 1, [(1000, 0.01), (1100, 0.09)], SLO_S), layout(2, 1, [(2400, 0.01), (2600, 0.09)], SLO_S)],
        SLO_S,
    )
    option = plan_scenario(record(figures), _request(cores=8, memory_gib=256)).chosen
    assert option.doubling_efficiency == 1.0
    assert option.qps_per_host == pytest.approx(8 * 1200)


def test_an_slo_below_the_single_stream_latency_is_unreachable_not_zero_hosts():
    request = _request(slo_s=0.001)  # single-stream p99 is 2 ms; the best server step had 4 ms
    plan = plan_scenario(record(two_core_run()), request)
    assert plan.status == "unreachable"
    assert plan.hosts is None and plan.cost_per_hour is None
    assert "single-stream p99" in plan.reason and "2 ms" in plan.reason
    text = render_markdown(make_plan("r", [record(two_core_run())], {}, request))
    assert "**Unreachable**" in text
    assert "0 host" not in text


def test_an_instance_that_fits_nowhere_on_the_host_does_not_fit():
    plan = plan_scenario(record(two_core_run()), _request(cores=2, memory_gib=0.25))
    assert plan.status == "does_not_fit" and plan.hosts is None
    assert "GiB" in plan.reason


def test_a_target_that_one_host_serves_exactly_needs_one_host():
    one_core = capacity([layout(1, 1, [(700, 0.01), (800, 0.09)], SLO_S)], SLO_S, usable_cores=1)
    plan = plan_scenario(record(one_core), _request(cores=1, target=490))  # 700 x (1 - 0.3) is 489.99999999999994
    assert plan.usable_qps_per_host == pytest.approx(490) and plan.hosts == 1


def test_unreachable_names_the_lowest_p99_of_valid_steps_and_a_run_without_any():
    slow = layout(1, 1, [(100, 0.08), (200, 0.09)], SLO_S)
    early = dataclasses.replace(slow.server.steps[0], rate_per_s=50, latency_p99_s=0.015, valid=False, passed=False)
    slow = dataclasses.replace(slow, server=dataclasses.replace(slow.server, steps=[early, *slow.server.steps]))
    plan = plan_scenario(record(capacity([slow], SLO_S)), _request())
    assert plan.status == "unreachable" and "the lowest p99 of any valid step: 80 ms" in plan.reason, plan.reason
    invalid_only = dataclasses.replace(slow, server=dataclasses.replace(slow.server, steps=[early]))
    plan = plan_scenario(record(capacity([invalid_only], SLO_S)), _request())
    assert plan.status == "unreachable" and "no server step was valid" in plan.reason, plan.reason
    assert "step_max_duration_s" in plan.reason


def test_a_width_that_meets_the_slo_but_not_the_host_is_does_not_fit_not_unreachable():
    wide_meets = layout(1, 2, [(600, 0.005), (1200, 0.09)], SLO_S)
    narrow_misses = layout(1, 1, [(300, 0.08)], SLO_S, single_p99_s=0.06)
    plan = plan_scenario(record(capacity([wide_meets, narrow_misses], SLO_S)), _request(cores=1))
    assert plan.status == "does_not_fit", plan.reason
    assert "needs 2 cores and the host has 1" in plan.reason


def test_shared_memory_above_the_hosts_memory_leaves_room_for_no_instance_not_fewer_than_none():
    plan = plan_scenario(record(two_core_run()), _request(memory_gib=0.1))  # 200 MiB shared > 102 MiB
    assert {o.instances_memory_bound for o in plan.options} == {0} and plan.status == "does_not_fit"


def test_only_a_confirmed_rate_counts_and_only_at_the_runs_slo_or_looser():
    measured = two_core_run().layouts[0]  # steps 900, 1800, 2000, 3600/s; 1,800/s confirmed at 50 ms
    assert rate_at_slo(measured, 0.05) == (1800, False, None)
    assert rate_at_slo(measured, 0.1) == (1800, True, None)  # a looser SLO: at least the confirmed rate
    rate, _, why = rate_at_slo(measured, 0.03)  # a step had p99 30 ms at 1,800/s, but nothing was confirmed there
    assert rate is None and "confirmed rates at p99 <= 50 ms" in why
    unconfirmed = dataclasses.replace(measured, server=dataclasses.replace(measured.server, confirmed=False))
    assert rate_at_slo(unconfirmed, 0.05) == (None, False, None)
    old = dataclasses.replace(measured, server=dataclasses.replace(measured.server, verdict_rule=None))
    rate, _, why = rate_at_slo(old, 0.05)
    assert rate is None and "before rates were confirmed" in why
    plan = plan_scenario(record(capacity([unconfirmed], SLO_S)), _request())
    assert plan.status == "unreachable" and "no rate was confirmed at p99 <= 50 ms" in plan.reason
    plan = plan_scenario(record(capacity([old], SLO_S)), _request())
    assert plan.status == "unreachable" and "measure it again" in plan.reason
    text = render_markdown(make_plan("r", [record(two_core_run())], {}, _request()))
    assert "Verdict rule: p99 verdict: pass when the one-sided Clopper-Pearson upper bound" in text


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture
def capacity_run(tmp_path):
    return make_run(tmp_path, [Spec(extra={"capacity": two_core_run()})])


def _plan(capsys, *args):
    code = main(["plan", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bench_plan_prints_the_plan_the_assumption_and_the_sweep(capacity_run, capsys):
    code, out, _ = _plan(
        capsys, "--run", str(capacity_run), "--slo-p99-ms", "50", "--target-qps", "10000", "--host-cost-per-hour", "2.5"
    )
    assert code == 0
    assert "**8 host(s)**" in out and "2 instance(s) x 1 thread(s)" in out and "CPU binds" in out
    assert "$20.00 per hour" in out
    assert "Sweep measured on this machine" in out and "| 2x1 |" in out and "| 1x2 |" in out
    assert "## Assumptions" in out and "nearest-rank" in out

    code, out, _ = _plan(
        capsys,
        "--run",
        str(capacity_run),
        "--slo-p99-ms",
        "50",
        "--target-qps",
        "10000",
        "--host-cores",
        "64",
        "--host-mem-gib",
        "2",
        "--format",
        "json",
    )
    data = json.loads(out)
    assert code == 0 and data["complete"] is True
    (scenario,) = data["scenarios"]
    assert scenario["chosen"]["binds"] == "memory"
    assert data["request"]["host"] == {"cores": 64, "memory_bytes": 2 * GIB, "cost_per_hour": None, "source": "given"}


def test_bench_plan_says_unreachable_and_exits_1(capacity_run, capsys):
    code, out, _ = _plan(capsys, "--run", str(capacity_run), "--slo-p99-ms", "1", "--target-qps", "10000")
    assert code == 1
    assert "**Unreachable**" in out and "host(s)**" not in out


def _stalled_run(tmp_path, *, confirmed: bool):
    """1x1 on a host whose stalls put 1.2 % of requests over the SLO: a low confirmed rate, or none."""
    steps = [(10, 0.02), (20, 0.09)] if confirmed else [(10, 0.09)]
    figures = capacity([stalled(layout(1, 1, steps, SLO_S), SLO_S)], SLO_S, usable_cores=1)
    return make_run(tmp_path, [Spec(extra={"capacity": figures})])


def test_bench_plan_carries_the_stall_note_for_a_width_whose_rate_the_host_stalls_limit(tmp_path, capsys):
    run = _stalled_run(tmp_path, confirmed=True)
    code, out, _ = _plan(capsys, "--run", str(run), "--slo-p99-ms", "50", "--target-qps", "100")
    note = "this host's stalls put 1.2 % of requests over the 50 ms SLO at any rate"
    assert code == 0 and "**The measuring host set this rate, not the model**: " + note in out
    assert "- 1 thread(s) per instance: " + note in out and "a quieter host" in out
    code, out, _ = _plan(capsys, "--run", str(run), "--slo-p99-ms", "50", "--target-qps", "100", "--format", "json")
    (scenario,) = json.loads(out)["scenarios"]
    assert scenario["stall_note"].startswith(note) and scenario["chosen"]["stall_note"] == scenario["stall_note"]
    assert scenario["options"][0]["sweep"][0]["stall_note"] == scenario["stall_note"]

    code, out, _ = _plan(
        capsys,
        "--run",
        str(_stalled_run(tmp_path / "none", confirmed=False)),
        "--slo-p99-ms",
        "50",
        "--target-qps",
        "100",
    )
    assert code == 1 and "**Unreachable**" in out
    assert f"no rate was confirmed: {note}" in out and "measure on a quieter host, or loosen the SLO" in out


def test_a_stall_floor_that_does_not_limit_the_rate_adds_no_note(tmp_path):
    figures = capacity([stalled(layout(1, 1, [(10, 0.02)], SLO_S), SLO_S, over=1)], SLO_S, usable_cores=1)
    plan = plan_scenario(record(figures), _request(cores=1))
    assert plan.status == "ok" and plan.stall_note is None and plan.chosen.stall_note is None
    assert "stalls" not in render_markdown(make_plan("r", [record(figures)], {}, _request(cores=1)))


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--host-cores", "0", "a whole number of cores >= 1"),
        ("--host-cost-per-hour", "-1", "a price >= 0"),
        ("--host-mem-gib", "0", "GiB > 0"),
        ("--host-mem-gib", "nan", "GiB > 0"),
        ("--headroom", "1", "a fraction from 0 to below 1"),
        ("--target-qps", "-5", "requests/s > 0"),
        ("--slo-p99-ms", "0", "milliseconds > 0"),
    ],
)
def test_nonsense_figures_are_refused_with_exit_2(capacity_run, capsys, flag, value, expected):
    args = {"--slo-p99-ms": "50", "--target-qps": "1000", flag: value}
    code, out, err = _plan(capsys, "--run", str(capacity_run), *[x for kv in args.items() for x in kv])
    assert code == 2
    assert out == ""
    assert err.startswith(f"bench: error: {flag} ") and expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_run_without_capacity_rows_is_refused_with_what_to_do(tmp_path, capsys):
    run = make_run(tmp_path, [Spec()])
    code, _, err = _plan(capsys, "--run", str(run), "--slo-p99-ms", "50", "--target-qps", "1000")
    assert code == 2
    assert "no capacity measurements" in err and "capacity:" in err


# --- fleet runs: one scenario on several host groups -------------------------------------------------


def _on(group: str, figures) -> object:
    return dataclasses.replace(record(figures, f"tiny_mlp-b1-t1-fp32-eager@{group}"), host_group=group)


def test_a_fleet_plan_plans_each_host_group_on_its_own_machine_and_names_the_cheapest():
    small = _on("c2", dataclasses.replace(two_core_run(), memory_total_bytes=16 * GIB))
    big = _on("c64", dataclasses.replace(two_core_run(), usable_cores=64, memory_total_bytes=256 * GIB))
    base = _request(cost=None)
    groups = {
        "c2": dataclasses.replace(base, host=Host(2, 16 * GIB, 0.1, "c2's machine")),
        "c64": dataclasses.replace(base, host=Host(64, 256 * GIB, 2.0, "c64's machine")),
    }
    plan = make_plan("r", [small, big], {}, base, groups)
    by_group = {p.host_group: p for p in plan.scenarios}
    # c2: 1,800/s x 0.7 per host -> 8 hosts at $0.10; c64: 64 instances at 900/s x 0.9^5 -> 1 host at $2.00.
    assert by_group["c2"].hosts == 8 and by_group["c2"].cost_per_hour == pytest.approx(0.8)
    assert by_group["c64"].hosts == 1 and by_group["c64"].cost_per_hour == pytest.approx(2.0)
    (choice,) = plan.host_types
    assert (choice.scenario, choice.cheapest, choice.groups) == ("tiny_mlp-b1-t1-fp32-eager", "c2", ["c2", "c64"])
    text = render_markdown(plan)
    assert "## Host types" in text and "c2 **cheapest**" in text and "Host group **c64**" in text
    # the run's environment.json is the client's: the header describes no single machine
    assert "- Measured on: each host group's hosts" in text and "usable cores" not in text.split("## Host types")[0]

    unpriced = {**groups, "c64": dataclasses.replace(base, host=Host(64, 256 * GIB, None, "c64's machine"))}
    (choice,) = make_plan("r", [small, big], {}, base, unpriced).host_types
    assert choice.cheapest is None and "--host-cost GROUP=PRICE" in choice.note


@pytest.mark.parametrize("value", ["c2", "c2=-1", "=1", "c2=cheap"])
def test_bad_host_costs_are_refused(capacity_run, capsys, value):
    code, _, err = _plan(
        capsys, "--run", str(capacity_run), "--slo-p99-ms", "50", "--target-qps", "1000", "--host-cost", value
    )
    assert code == 2 and "--host-cost" in err and "GROUP=PRICE" in err


def test_a_host_cost_for_a_group_the_run_does_not_have_is_refused(capacity_run, capsys):
    code, _, err = _plan(
        capsys, "--run", str(capacity_run), "--slo-p99-ms", "50", "--target-qps", "1000", "--host-cost", "c7i=1.5"
    )
    assert code == 2 and "host group(s) c7i" in err


def _llm_run(confirmed: bool = True):
    """A generate: scenario measured with 1 and 2 instances: 6/s and 11/s at p99 TTFT <= 1 s and TPOT <= 100 ms."""
    return llm_capacity(
        [
            generation_layout(2, [(5.5, True), (11.0, True), (16.5, False)], confirmed=confirmed),
            generation_layout(1, [(3.0, True), (6.0, True), (9.0, False)], confirmed=confirmed),
        ]
    )


@pytest.mark.parametrize("slo_s", [0.001, 10.0])
def test_a_generate_row_is_planned_at_its_own_ttft_and_tpot_slos_whatever_the_p99_slo(slo_s):
    plan = plan_scenario(record(_llm_run()), _request(target=100, slo_s=slo_s))
    assert plan.status == "ok" and (plan.slo_ttft_s, plan.slo_tpot_s) == (1.0, 0.1)
    assert plan.measured_slo_p99_s is None
    # 2 single-thread instances on 2 cores: 11 requests/s per host; 100/s at 70 % -> 100 / 7.7 -> 13 hosts
    assert plan.chosen.qps_per_host == pytest.approx(11.0)
    assert plan.hosts == 13
    assert plan.verdict_rule.startswith("a request is over the SLO")
    text = render_markdown(make_plan("r", [record(_llm_run())], {}, _request(target=100, slo_s=slo_s)))
    assert "p99 TTFT <= 1000 ms and p99 TPOT <= 100 ms; --slo-p99-ms does not apply" in text
    assert "11 requests/s per host at the SLO (5.5 per instance" in text and "| 2x1 | 11 | 5.5 |" in text


def test_a_generate_row_without_a_confirmed_rate_is_unreachable_at_its_slos():
    plan = plan_scenario(record(_llm_run(confirmed=False)), _request(target=100))
    assert plan.status == "unreachable"
    assert "p99 TTFT <= 1000 ms and p99 TPOT <= 100 ms is unreachable" in plan.reason
    assert "no rate confirmed" in plan.reason
