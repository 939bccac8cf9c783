"""The host's stall floor (bench.capacity.stalls): its rule on synthetic steps, and server mode's search with a fake
host (tests/support/capacity_fakes.FakeHost) whose steps are computed, so nothing here is timed."""

from __future__ import annotations

import dataclasses
import json

import pytest
from support.capacity_fakes import FakeHost, capacity, layout, stalled
from support.demo_runs import EVIL, Spec, make_run

from bench.capacity import host
from bench.capacity.loadgen import StepLimits
from bench.capacity.queueing import md1_share_over
from bench.capacity.stalls import QUEUEING_MAX, UTILISATIONS, floor_rate, needs_floor, queueing_rate, stall_floor
from bench.history.store import record_run, run_by_id
from bench.report import write_report
from bench.results.runfolder import load_run
from bench.suite.scenarios import CapacityPolicy

SERVICE_S, SLO_S = 0.012, 0.040  # the mobilenet_v3_small at one thread, and its SLO
CLOSED_PER_S = 1 / SERVICE_S
FLOOR_LIMITS = StepLimits(min_duration_s=1.0, min_requests=600, max_duration_s=60.0)  # the policy's defaults


def _floor_step(stall_every: int | None, rate: float = 12.45):  # floor_rate's choice for this call and SLO
    step, _ = FakeHost(SERVICE_S, stall_every, stall_s=0.05).server_step(None, 1, rate, 3, FLOOR_LIMITS, SLO_S)
    return step


def test_a_host_whose_stalls_put_1_2_percent_over_the_slo_at_low_load_limits_the_rate():
    step = _floor_step(stall_every=83)  # 1.2 % of calls take 50 ms longer: over a 40 ms SLO whatever the load
    floor = stall_floor(step, SLO_S, utilisation=0.15, queueing_share=0.0003)
    assert floor.requests == step.requests > 300 and floor.over_slo == step.over_slo
    assert floor.over_slo_share == pytest.approx(0.012, abs=0.002)
    assert floor.over_slo_lower_bound >= 0.0025 and floor.over_slo_upper_bound > 0.01
    assert floor.limits_rate
    assert floor.note.startswith("this host's stalls put 1.2 % of requests over the 40 ms SLO at any rate (")
    assert "a p99 allows 1 %" in floor.note and floor.step == step


def test_a_quiet_host_does_not_limit_the_rate_and_has_no_note():
    floor = stall_floor(_floor_step(stall_every=None), SLO_S, utilisation=0.15, queueing_share=0.0003)
    assert floor.over_slo == 0 and floor.over_slo_upper_bound < 0.01
    assert not floor.limits_rate and floor.note is None


def test_a_few_requests_over_in_a_short_step_are_chance_not_a_floor():
    step = _floor_step(stall_every=83)
    short = dataclasses.replace(step, requests=300, over_slo=2, over_slo_lower_bound=0.0012)  # 0.67 %
    assert not stall_floor(short, SLO_S, 0.15, 0.0003).limits_rate
    # ... and a share queueing could explain is not blamed on the host
    assert not stall_floor(step, SLO_S, 0.25, 10 * QUEUEING_MAX).limits_rate


def test_the_floor_step_runs_where_queueing_puts_at_most_a_tenth_of_the_tail_over_the_slo():
    rate, utilisation, share = floor_rate(CLOSED_PER_S, 1, SERVICE_S, SLO_S)
    assert utilisation in UTILISATIONS and rate == pytest.approx(utilisation * CLOSED_PER_S)
    assert share <= QUEUEING_MAX < md1_share_over(0.25 * CLOSED_PER_S, SERVICE_S, SLO_S, requests=20_000)
    # two instances each take half the arrivals: the same utilisation
    assert floor_rate(2 * CLOSED_PER_S, 2, SERVICE_S, SLO_S)[1] == utilisation
    # an SLO hardly above the call: no low load keeps queueing out of its tail
    assert floor_rate(CLOSED_PER_S, 1, SERVICE_S, 1.1 * SERVICE_S) is None


def test_only_no_rate_or_a_low_one_against_md1_queueing_calls_for_a_floor():
    md1 = queueing_rate(1, SERVICE_S, SLO_S)
    assert 25 < md1 < 35  # a 12 ms call reaches a 40 ms p99 at about 30/s
    assert needs_floor(None, 1, SERVICE_S, SLO_S)
    assert needs_floor(13.1, 1, SERVICE_S, SLO_S) and needs_floor(14.9, 1, SERVICE_S, SLO_S)  # the answers
    assert not needs_floor(0.85 * md1, 1, SERVICE_S, SLO_S)


def _search(fake: FakeHost, monkeypatch):
    monkeypatch.setattr(host, "server_step", fake.server_step)
    policy = CapacityPolicy(slo_p99_ms=SLO_S * 1e3, layouts=("1x1",), max_steps=8, tolerance=0.2)
    lines: list[str] = []
    server = host.search_server(
        fake.group, 1, policy, CLOSED_PER_S, 0.015, lines.append, lines.append, {}, service_s=SERVICE_S
    )
    return server, lines


def test_server_mode_on_a_stalling_host_says_the_host_sets_the_rate(monkeypatch):
    server, lines = _search(FakeHost(SERVICE_S, stall_every=83, stall_s=0.05), monkeypatch)
    floor = server.stall_floor
    assert floor is not None and floor.limits_rate, floor
    assert any(line.startswith("capacity 1x1: stall floor step at ") for line in lines), lines
    assert floor.note in server.stop_reason
    assert floor.rate_per_s < 0.25 * CLOSED_PER_S and floor.requests >= 300
    figures = capacity([dataclasses.replace(layout(1, 1, [], SLO_S), server=server)], SLO_S)
    line = host.summary(figures)
    share = f"{floor.over_slo_share * 100:.2g} %"  # 1.1 or 1.2 %, as the step's arrivals fall
    assert f"1x1 no confirmed rate: this host's stalls put {share} of requests over the SLO at any rate" in line


def test_server_mode_on_a_quiet_host_runs_no_floor_step(monkeypatch):
    server, lines = _search(FakeHost(SERVICE_S), monkeypatch)
    assert server.confirmed and server.max_rate_per_s is not None, server.stop_reason
    assert server.stall_floor is None and "stall floor" not in " ".join(lines)
    assert "stalls" not in host.summary(capacity([dataclasses.replace(layout(1, 1, [], SLO_S), server=server)], SLO_S))


def test_the_reports_capacity_section_shows_the_floor_and_its_note_escaped(tmp_path):
    limited = stalled(layout(1, 1, [(10, 0.09)], SLO_S), SLO_S)
    floor = limited.server.stall_floor
    evil = dataclasses.replace(floor, note=f"{floor.note} {EVIL}")  # a row's text is never trusted as markup
    limited = dataclasses.replace(limited, server=dataclasses.replace(limited.server, stall_floor=evil))
    quiet = stalled(layout(1, 1, [(10, 0.02)], SLO_S), SLO_S, over=1)
    runs = [
        Spec(extra={"capacity": capacity([limited], SLO_S)}),
        Spec(model="tiny_cnn", extra={"capacity": capacity([quiet], SLO_S)}),
    ]
    result = write_report([make_run(tmp_path, runs)])
    page = result.html.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert '<div class="note">tiny_mlp-b1-t1-fp32-eager 1x1: this host&#x27;s stalls put 1.2 % of requests' in page
    assert "a quieter host, or loosen the SLO" in page
    table = page[page.index('id="capacity-table"') : page.index("</table>", page.index('id="capacity-table"'))]
    assert "1.2 (0.69 to 1.9) at 12.45/s; limits the rate" in table and "0.1 (0.0051 to 0.47) at 12.45/s<" in table
    markdown = result.markdown.read_text()
    assert "| stall floor (% over the SLO at low load) |" in markdown and "; limits the rate |" in markdown
    assert "> tiny_mlp-b1-t1-fp32-eager 1x1: this host's stalls put 1.2 %" in markdown
    assert "<script>" not in markdown


def test_the_floor_survives_the_run_folder_and_the_history_and_a_row_from_before_it_reads(tmp_path):
    figures = capacity([stalled(layout(1, 1, [(10, 0.09)], SLO_S), SLO_S)], SLO_S)
    run = make_run(tmp_path / "runs", [Spec(extra={"capacity": figures})])
    (result,) = load_run(run).results.values()
    assert result.record.capacity == figures  # nested in capacity.layouts[].server, its step included
    hist = tmp_path / "history.sqlite"
    record_run(hist, run)
    (again,) = run_by_id(hist, run.name).results.values()
    assert again.record.capacity.layouts[0].server.stall_floor == figures.layouts[0].server.stall_floor

    row = json.loads((run / "results.jsonl").read_text())
    del row["capacity"]["layouts"][0]["server"]["stall_floor"]  # written before the stall floor existed
    (run / "results.jsonl").write_text(json.dumps(row) + "\n")
    (old,) = load_run(run).results.values()
    assert old.record.capacity.layouts[0].server.stall_floor is None and not load_run(run).warnings
