"""The capacity planner: measured capacity rows in; instances, hosts and cost for a target load out.

Pure functions over ResultRecords (their `capacity` figures, bench.capacity.host): for each
scenario and each measured thread width T,

- the rate at the SLO of each measured instance count k (the sweep): the rate the run's
  search confirmed (bench.capacity.loadgen, bench.capacity.verdict) at its SLO, used for the plan's SLO when
  that is the same or looser ("at least" when looser); never a rate no confirming step passed;
- instances per host: min(host cores // T, (host memory - shared) // USS), where USS is the
  largest instance's unique memory and `shared` its resident pages shared with other
  processes (libraries, mmap'd weights), counted once per host; whichever is smaller binds;
- requests/s per host: instances x the per-instance rate measured at the largest k, scaled
  beyond k by the sweep's measured efficiency per doubling of instances (1.0: linear in cores);
- hosts = ceil(target / (requests/s per host x (1 - headroom))), and their cost.

The width giving the most requests/s per host is chosen. An SLO that no measured step
met is `unreachable` (never 0 hosts); a host too small for one instance `does_not_fit`.
A width whose layouts' stall floor limits the rate (`ServerFigures.stall_floor`,
bench.capacity.stalls) carries its note (`stall_note`): the rate, or its absence, is the
measuring host's, and neither more instances nor more hosts change it.

A generate: scenario's rows (LLM server mode, bench.capacity.llm) are planned at the TTFT and
TPOT SLOs their run confirmed rates at (`generation_server`), which the plan names; the
request's p99 SLO (`--slo-p99-ms`) bounds one forward call's latency and does not apply to them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.format.markdown import table
from bench.format.units import GIB, MIB, ms_number
from bench.results.record import (
    CapacityFigures,
    GenerationServerFigures,
    LayoutFigures,
    ResultRecord,
    ServerStep,
)
from bench.results.stats import PERCENTILE_RULE

DEFAULT_HEADROOM = 0.3


@dataclass(frozen=True)
class Host:
    cores: int
    memory_bytes: int
    cost_per_hour: float | None
    source: str  # "given" or "the measured machine"


@dataclass(frozen=True)
class PlanRequest:
    slo_p99_s: float
    target_qps: float  # requests per second; one request = one call on the scenario's batch
    headroom: float  # hosts are loaded to at most (1 - headroom) of their rate at the SLO
    host: Host


@dataclass(frozen=True)
class SweepPoint:
    """One measured layout of a width, as the plan sees it."""

    layout: str
    instances: int
    threads_per_instance: int
    rate_at_slo_per_s: float | None  # the confirmed rate (bench.capacity.verdict), for the plan's SLO
    rate_is_lower_bound: bool  # confirmed at a stricter SLO than the plan's: the true rate may be higher
    per_instance_per_s: float | None
    vs_one_instance: float | None  # per-instance rate / the 1-instance rate: 1.0 = linear
    single_stream_p99_s: float | None  # 1-instance closed loop at this width (MLPerf SingleStream)
    lowest_server_p99_s: float | None  # the best p99 any valid server step of this layout had
    server_steps: int  # server steps run, valid or not
    closed_loop_samples_per_s: float | None
    offline_samples_per_s: float | None
    uss_bytes: int | None  # largest instance's
    shared_bytes: int | None  # largest RSS - USS of an instance
    no_rate_reason: str | None = None  # why the layout has no confirmed rate for the plan, beyond its steps
    stall_note: str | None = None  # the layout's stall floor limits its rate: what the host's stalls put over the SLO


@dataclass(frozen=True)
class WidthOption:
    """What a host does with instances of `threads_per_instance` threads."""

    threads_per_instance: int
    status: str  # ok, unreachable, does_not_fit
    reason: str | None
    measured_instances: int | None = None  # the instance count the per-instance rate comes from
    per_instance_per_s: float | None = None  # at measured_instances
    doubling_efficiency: float | None = None  # applied per doubling beyond measured_instances
    efficiency_measured: bool = False  # false: no sweep at this width, linear assumed
    instances_cpu_bound: int | None = None
    instances_memory_bound: int | None = None
    instances: int | None = None
    binds: str | None = None  # CPU, memory, or CPU and memory
    qps_per_host: float | None = None
    per_instance_at_host_per_s: float | None = None  # the per-instance rate at `instances`, projected
    doublings_beyond_measured: float = 0.0  # log2(instances / measured_instances) when above it, else 0
    rate_is_lower_bound: bool = False
    memory_per_host_bytes: int | None = None  # instances x USS + shared once
    sweep: list[SweepPoint] = field(default_factory=list)
    stall_note: str | None = None  # a layout of this width whose rate the host's stalls limit: its note


@dataclass(frozen=True)
class ScenarioPlan:
    scenario_id: str
    batch_size: int
    status: str  # ok, unreachable, does_not_fit, not_measured
    reason: str | None
    measured_slo_p99_s: float | None  # the SLO server mode searched against in the run
    host: Host | None = None  # the host planned for (a fleet run: its host group's)
    host_group: str | None = None
    step_min_requests: int | None = None  # every valid server step had at least this many requests ...
    step_min_duration_s: float | None = None  # ... and lasted at least this long
    verdict_rule: str | None = None  # how the run's steps passed (bench.capacity.verdict.RULE)
    chosen: WidthOption | None = None
    options: list[WidthOption] = field(default_factory=list)
    hosts: int | None = None
    usable_qps_per_host: float | None = None  # qps_per_host x (1 - headroom)
    cost_per_hour: float | None = None
    cost_per_million_requests: float | None = None
    stall_note: str | None = None  # the chosen width's stall note (no plan: the first width's that has one)
    # a generate: scenario (LLM server mode): the SLOs its rates were confirmed at, and planned at
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None


@dataclass(frozen=True)
class HostTypeChoice:
    """A fleet run's scenario measured on several host groups: which one serves the target cheapest."""

    scenario: str  # the scenario id without its @group
    groups: list[str]  # in the order of cost (cheapest first) when every cost is known
    cheapest: str | None  # None when a group has no cost or no plan
    note: str


@dataclass(frozen=True)
class Plan:
    run_id: str
    request: PlanRequest
    measured_cores: int | None
    measured_memory_bytes: int | None
    cpu_model: str | None
    percentile_rule: str
    assumptions: list[str]
    scenarios: list[ScenarioPlan]
    host_types: list[HostTypeChoice] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return all(s.status == "ok" for s in self.scenarios)


# --- the arithmetic ------------------------------------------------------------------------------


def rate_at_slo(layout: LayoutFigures, slo_p99_s: float) -> tuple[float | None, bool, str | None]:
    """The layout's confirmed rate for `slo_p99_s`, whether it is only a lower bound, and why there is none.

    Only a rate that passed its confirming step counts. It was confirmed at the run's SLO: it
    holds for a looser SLO too (a lower bound there) but says nothing about a stricter one.
    """
    if layout.generation_server is not None:  # its own SLOs, whatever slo_p99_s says (module docstring)
        generation = layout.generation_server
        return (generation.max_rate_per_s, False, None) if generation.confirmed else (None, False, None)
    server = layout.server
    if server is None:
        return None, False, None
    if server.verdict_rule is None:
        return None, False, "measured before rates were confirmed (p99 verdicts); measure it again"
    if slo_p99_s < server.slo_p99_s - 1e-12:
        return (
            None,
            False,
            (
                f"the run confirmed rates at p99 <= {server.slo_p99_s * 1e3:g} ms; a stricter SLO needs a run "
                "measured at it"
            ),
        )
    if not server.confirmed or server.max_rate_per_s is None:
        return None, False, None
    return server.max_rate_per_s, slo_p99_s > server.slo_p99_s + 1e-12, None


def _server_steps(layout: LayoutFigures) -> list[ServerStep]:
    if layout.generation_server is not None:
        return list(layout.generation_server.steps)
    if layout.server is None:
        return []
    return list(layout.server.steps) + ([layout.server.low_load_step] if layout.server.low_load_step else [])


def sweep_points(capacity: CapacityFigures, threads: int, slo_p99_s: float) -> list[SweepPoint]:
    layouts = sorted(
        (f for f in capacity.layouts if f.threads_per_instance == threads and f.status == "ok"),
        key=lambda f: f.instances,
    )
    single = next((f.closed_loop for f in layouts if f.instances == 1), None)
    single_p99 = single.latency_s.p99 if single and single.latency_s else None
    points: list[SweepPoint] = []
    one_instance_rate: float | None = None
    for f in layouts:
        steps = _server_steps(f)
        rate, lower_bound, why_none = rate_at_slo(f, slo_p99_s)
        per_instance = rate / f.instances if rate is not None else None
        if f.instances == 1:
            one_instance_rate = per_instance
        p99s = [s.latency_p99_s for s in steps if s.valid and s.latency_p99_s is not None]
        uss = [m.uss_bytes for m in f.memory if m.uss_bytes is not None]
        shared = [m.rss_bytes - m.uss_bytes for m in f.memory if m.rss_bytes is not None and m.uss_bytes is not None]
        points.append(
            SweepPoint(
                layout=f.layout,
                instances=f.instances,
                threads_per_instance=threads,
                rate_at_slo_per_s=rate,
                rate_is_lower_bound=lower_bound,
                per_instance_per_s=per_instance,
                vs_one_instance=per_instance / one_instance_rate if per_instance and one_instance_rate else None,
                single_stream_p99_s=single_p99,
                lowest_server_p99_s=min(p99s) if p99s else None,
                server_steps=len(steps),
                closed_loop_samples_per_s=f.closed_loop.samples_per_s if f.closed_loop else None,
                offline_samples_per_s=f.offline.samples_per_s if f.offline else None,
                uss_bytes=max(uss) if uss else None,
                shared_bytes=max(shared) if shared else None,
                no_rate_reason=why_none,
                stall_note=_stall_note(f),
            )
        )
    return points


def _stall_note(layout: LayoutFigures) -> str | None:
    floor = layout.server.stall_floor if layout.server else None
    return floor.note if floor is not None and floor.limits_rate else None


def doubling_efficiency(points: Sequence[SweepPoint]) -> tuple[float, bool]:
    """Per-instance rate kept per doubling of instances, from the two largest measured counts (<= 1).

    (1.0, False) when the sweep has fewer than two counts with a rate: linear is then assumed.
    """
    measured = [p for p in points if p.per_instance_per_s]
    if len(measured) < 2:
        return 1.0, False
    small, large = measured[-2], measured[-1]
    ratio = large.per_instance_per_s / small.per_instance_per_s  # type: ignore[operator]
    return min(1.0, ratio ** (1 / math.log2(large.instances / small.instances))), True


def per_instance_rate(points: Sequence[SweepPoint], instances: int, efficiency: float) -> tuple[float, int]:
    """The per-instance rate at `instances`, and the measured count it comes from.

    Up to the largest measured count: the smallest measured count >= instances (more
    contention than asked, so not optimistic). Beyond it: scaled by `efficiency` per doubling.
    """
    measured = [p for p in points if p.per_instance_per_s]
    for p in measured:
        if p.instances >= instances:
            return p.per_instance_per_s, p.instances  # type: ignore[return-value]
    largest = measured[-1]
    scale = efficiency ** math.log2(instances / largest.instances)
    return largest.per_instance_per_s * scale, largest.instances  # type: ignore[operator]


def llm_slos(generation: GenerationServerFigures) -> str:
    return f"p99 TTFT <= {generation.slo_ttft_s * 1e3:g} ms and p99 TPOT <= {generation.slo_tpot_s * 1e3:g} ms"


def width_option(
    points: list[SweepPoint], threads: int, request: PlanRequest, generation: GenerationServerFigures | None = None
) -> WidthOption:
    """`generation`: a generate: scenario's LLM server figures of this width (its SLOs, why no rate)."""
    host = request.host
    slo_ms = request.slo_p99_s * 1e3
    measured = [p for p in points if p.per_instance_per_s]
    # the largest instance count's note first: the layout the plan's rate comes from
    stall_note = next((p.stall_note for p in reversed(points) if p.stall_note), None)
    if not measured and generation is not None:
        why = f"no rate was confirmed at {llm_slos(generation)} ({generation.stop_reason})"
        return WidthOption(threads, "unreachable", why, sweep=points)
    if not measured:
        single = next((p.single_stream_p99_s for p in points if p.single_stream_p99_s is not None), None)
        lowest = min((p.lowest_server_p99_s for p in points if p.lowest_server_p99_s is not None), default=None)
        no_rate = next((p.no_rate_reason for p in points if p.no_rate_reason), None)
        if single is not None and single > request.slo_p99_s:
            why = f"the single-stream p99 is {single * 1e3:.3g} ms, above the SLO"
        elif stall_note is not None:
            why = f"no rate was confirmed: {stall_note}"
        elif no_rate is not None:
            why = no_rate
        elif lowest is not None:
            why = (
                f"no rate was confirmed at p99 <= {slo_ms:g} ms (the lowest p99 of any valid step: "
                f"{lowest * 1e3:.3g} ms)"
            )
        elif any(p.server_steps for p in points):
            why = (
                "no server step was valid: each was too short or had too few requests, so no rate was judged "
                "(lower step_min_requests or step_min_duration_s, or raise step_max_duration_s)"
            )
        else:
            why = "server mode was not measured at this width"
        return WidthOption(threads, "unreachable", why, sweep=points, stall_note=stall_note)
    efficiency, from_sweep = doubling_efficiency(points)
    largest = measured[-1]
    uss, shared = largest.uss_bytes, largest.shared_bytes or 0
    cpu_bound = host.cores // threads
    memory_bound = max(0, (host.memory_bytes - shared) // uss) if uss else None
    instances = cpu_bound if memory_bound is None else min(cpu_bound, memory_bound)
    base = dict(
        threads_per_instance=threads,
        measured_instances=largest.instances,
        per_instance_per_s=largest.per_instance_per_s,
        doubling_efficiency=efficiency,
        efficiency_measured=from_sweep,
        instances_cpu_bound=cpu_bound,
        instances_memory_bound=memory_bound,
        instances=instances,
        sweep=points,
        stall_note=stall_note,
    )
    if instances < 1:
        if cpu_bound < 1:
            why = f"an instance needs {threads} cores and the host has {host.cores}"
        else:
            why = (
                f"an instance needs {uss / GIB:.2f} GiB of its own (USS) plus {shared / GIB:.2f} GiB shared "
                f"and the host has {host.memory_bytes / GIB:.2f} GiB"
            )
        return WidthOption(status="does_not_fit", reason=why, **base)  # type: ignore[arg-type]
    rate, source = per_instance_rate(points, instances, efficiency)
    if memory_bound is None:
        binds = "CPU (memory not measured)"
    else:
        binds = "memory" if memory_bound < cpu_bound else "CPU" if cpu_bound < memory_bound else "CPU and memory"
    return WidthOption(
        status="ok",
        reason=None,
        binds=binds,
        qps_per_host=instances * rate,
        per_instance_at_host_per_s=rate,
        doublings_beyond_measured=max(0.0, math.log2(instances / source)),
        rate_is_lower_bound=next(p.rate_is_lower_bound for p in measured if p.instances == source),
        memory_per_host_bytes=instances * uss + shared if uss else None,
        **base,  # type: ignore[arg-type]
    )


def plan_scenario(record: ResultRecord, request: PlanRequest) -> ScenarioPlan:
    capacity = record.capacity
    where = {"host": request.host, "host_group": record.host_group}
    if capacity is None or capacity.status != "ok":
        why = "no capacity measurement" if capacity is None else f"capacity {capacity.status}: {capacity.note}"
        return ScenarioPlan(record.scenario_id, record.batch_size, "not_measured", why, None, **where)
    widths = list(dict.fromkeys(f.threads_per_instance for f in capacity.layouts if f.status == "ok"))

    def generation_of(threads: int) -> GenerationServerFigures | None:
        ok = [f for f in capacity.layouts if f.status == "ok" and f.threads_per_instance == threads]
        return next((f.generation_server for f in sorted(ok, key=lambda f: -f.instances) if f.generation_server), None)

    options = [width_option(sweep_points(capacity, t, request.slo_p99_s), t, request, generation_of(t)) for t in widths]
    generation = next((f.generation_server for f in capacity.layouts if f.generation_server is not None), None)
    if not options:
        return ScenarioPlan(
            record.scenario_id, record.batch_size, "not_measured", "no layout was measured", None, **where
        )
    ok = [o for o in options if o.status == "ok"]
    server = next((f.server for f in capacity.layouts if f.server is not None), None)
    base = dict(
        scenario_id=record.scenario_id,
        batch_size=record.batch_size,
        measured_slo_p99_s=capacity.slo_p99_s,
        options=options,
        step_min_requests=server.min_requests if server else None,
        step_min_duration_s=server.min_duration_s if server else None,
        verdict_rule=server.verdict_rule if server else None,
        **where,
    )
    if generation is not None:
        base.update(
            step_min_requests=generation.min_requests,
            step_min_duration_s=generation.min_duration_s,
            verdict_rule=generation.verdict_rule,
            slo_ttft_s=generation.slo_ttft_s,
            slo_tpot_s=generation.slo_tpot_s,
        )
    if not ok:
        reasons = "; ".join(f"{o.threads_per_instance} thread(s) per instance: {o.reason}" for o in options)
        # A width that meets the SLO where it was measured but does not fit this host makes the
        # host the problem, whatever the other widths do.
        if all(o.status == "unreachable" for o in options):
            status = "unreachable"
            slos = llm_slos(generation) if generation else f"p99 <= {request.slo_p99_s * 1e3:g} ms"
            remedy = (
                "More hosts cannot make one request faster: loosen the SLO, or measure a faster configuration"
                if not any(o.stall_note for o in options)
                else "More instances or hosts like it cannot help: measure on a quieter host, or loosen the SLO"
            )
            reason = f"{slos} is unreachable with the measured layouts ({reasons}). {remedy}"
        else:
            status = "does_not_fit"
            reason = f"no instance that meets the SLO fits on the host ({reasons})"
        stall_note = next((o.stall_note for o in options if o.stall_note), None)
        return ScenarioPlan(status=status, reason=reason, stall_note=stall_note, **base)  # type: ignore[arg-type]
    chosen = max(ok, key=lambda o: o.qps_per_host or 0.0)
    usable = (chosen.qps_per_host or 0.0) * (1 - request.headroom)
    hosts = math.ceil(round(request.target_qps / usable, 9))  # 490 / (700 * 0.7) is 1.0000000000000002
    cost = request.host.cost_per_hour
    cost_per_hour = hosts * cost if cost is not None else None
    per_million = cost_per_hour / (request.target_qps * 3600) * 1e6 if cost_per_hour is not None else None
    return ScenarioPlan(
        status="ok",
        reason=None,
        chosen=chosen,
        hosts=hosts,
        usable_qps_per_host=usable,
        cost_per_hour=cost_per_hour,
        cost_per_million_requests=per_million,
        stall_note=chosen.stall_note,
        **base,  # type: ignore[arg-type]
    )


def make_plan(
    run_id: str,
    records: Sequence[ResultRecord],
    environment: dict[str, Any],
    request: PlanRequest,
    group_requests: dict[str, PlanRequest] | None = None,
) -> Plan:
    """The plan per scenario; rows of a fleet run's host groups use their group's request (host and cost)."""
    measured_cores = next((r.capacity.usable_cores for r in records if r.capacity), environment.get("usable_cores"))
    group_requests = group_requests or {}
    scenarios = [
        plan_scenario(r, group_requests.get(r.host_group or "", request)) for r in records if r.capacity is not None
    ]
    return Plan(
        run_id=run_id,
        request=request,
        measured_cores=measured_cores,
        measured_memory_bytes=environment.get("memory_total_bytes"),
        cpu_model=environment.get("cpu_model"),
        percentile_rule=PERCENTILE_RULE.replace("round times", "request latencies of a server step"),
        assumptions=assumptions(request, measured_cores),
        scenarios=scenarios,
        host_types=host_type_choices(scenarios),
    )


def host_type_choices(scenarios: Sequence[ScenarioPlan]) -> list[HostTypeChoice]:
    """For each scenario measured on more than one host group, the group that meets the target cheapest."""
    by_scenario: dict[str, list[ScenarioPlan]] = {}
    for plan in scenarios:
        if plan.host_group is not None:
            by_scenario.setdefault(plan.scenario_id.rsplit("@", 1)[0], []).append(plan)
    choices = []
    for scenario, plans in by_scenario.items():
        if len(plans) < 2:
            continue
        groups = [p.host_group or "" for p in plans]
        planned = [p for p in plans if p.status == "ok"]
        unpriced = [p.host_group or "" for p in planned if p.cost_per_hour is None]
        if not planned:
            choices.append(HostTypeChoice(scenario, groups, None, "no host group meets the SLO (see each plan)"))
        elif unpriced:
            note = f"no price for host group(s) {', '.join(unpriced)}: give --host-cost GROUP=PRICE to compare"
            choices.append(HostTypeChoice(scenario, groups, None, note))
        else:
            ranked = sorted(planned, key=lambda p: p.cost_per_hour or 0.0)
            best = ranked[0]
            rest = [p.host_group or "" for p in plans if p not in ranked]
            note = f"{best.host_group}: {best.hosts} host(s), ${best.cost_per_hour:,.2f} per hour" + (
                f"; {', '.join(rest)} cannot meet it" if rest else ""
            )
            choices.append(HostTypeChoice(scenario, [p.host_group or "" for p in ranked] + rest, best.host_group, note))
    return choices


def assumptions(request: PlanRequest, measured_cores: int | None) -> list[str]:
    on = f"{measured_cores} cores" if measured_cores else "the measured machine"
    return [
        "Scaling: requests/s per host = instances per host x requests/s per instance, the per-instance rate "
        f"measured with N instances on {on}. Beyond N, each doubling of instances keeps the fraction "
        "'efficiency per doubling' of the per-instance rate, as the instance-count sweep measured it from the "
        "two largest counts (capped at 1.0; 1.0 is linear in cores). A width without a sweep is assumed linear. "
        "A host with other cores (frequency, cache, memory bandwidth, SMT) is not modelled: measure on it.",
        "Memory: instances x USS (each instance's own pages) + the largest instance's shared resident pages "
        "(RSS - USS: libraries, mmap'd weights) once per host; nothing is reserved for the OS or other services.",
        f"Headroom: hosts are loaded to at most {1 - request.headroom:.0%} of their rate at the SLO.",
        "A rate at the SLO is the highest offered Poisson rate the run's search found and then confirmed with a "
        "longer step, both passing its p99 verdict (below); it was confirmed at the run's SLO, so a looser plan "
        "SLO reads it as 'at least' and a stricter one has no rate.",
    ]


# --- output --------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rate(value: float | None) -> str:
    """A rate: whole numbers from 100/s up; 3 significant digits below (LLM server rates of a few per second)."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _int(value: int | None) -> str:
    return "-" if value is None else str(value)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f}"


def render_markdown(plan: Plan) -> str:
    request, host = plan.request, plan.request.host
    cost = f", ${host.cost_per_hour:,.2f} per hour" if host.cost_per_hour is not None else ", no cost given"
    measured = (
        f"{plan.measured_cores} usable cores, {plan.measured_memory_bytes / GIB:.1f} GiB"
        if plan.measured_cores and plan.measured_memory_bytes
        else "unknown"
    )
    out = [
        f"# Capacity plan for run `{plan.run_id}`",
        "",
        f"- Target: **{request.target_qps:,.0f} requests/s** at **p99 <= {request.slo_p99_s * 1e3:g} ms**; "
        f"headroom {request.headroom:.0%}",
        f"- Host ({host.source}): {host.cores} cores, {host.memory_bytes / GIB:.1f} GiB{cost}",
        f"- Measured on: {plan.cpu_model or 'unknown CPU'}, {measured}",
        f"- Percentiles: {plan.percentile_rule}",
        "",
    ]
    if plan.host_types:  # environment.json is the client's, which measured nothing
        out[4:6] = [
            f"- Host: {host.cores} cores, {host.memory_bytes / GIB:.1f} GiB (given) for every host group"
            if host.source == "given"
            else "- Host: each host group's own measured machine, at its --host-cost price",
            "- Measured on: each host group's hosts (see Host types and each group's plan below)",
        ]
    if plan.host_types:
        rows = []
        for choice in plan.host_types:
            for group in choice.groups:
                p = next(s for s in plan.scenarios if s.scenario_id == f"{choice.scenario}@{group}")
                rows.append(
                    [
                        f"`{choice.scenario}`",
                        group + (" **cheapest**" if group == choice.cheapest else ""),
                        p.status,
                        _int(p.hosts),
                        _num(p.usable_qps_per_host),
                        "-" if p.cost_per_hour is None else f"${p.cost_per_hour:,.2f}",
                        "-" if p.cost_per_million_requests is None else f"${p.cost_per_million_requests:,.4f}",
                    ]
                )
        out += [
            "## Host types",
            "",
            "The same scenario measured on each host group of the fleet run, each planned on its own "
            "measured machine (or the --host-* figures) and price:",
            "",
            table(
                [
                    "scenario",
                    "host group",
                    "plan",
                    "hosts",
                    "requests/s per host (with headroom)",
                    "cost per hour",
                    "per million requests",
                ],
                rows,
            ),
            "",
        ]
        out += [f"- `{c.scenario}`: {c.note}" for c in plan.host_types] + [""]
    for scenario in plan.scenarios:
        out += _scenario_markdown(scenario, plan)
    out += ["## Assumptions", ""] + [f"- {a}" for a in plan.assumptions]
    return "\n".join(out) + "\n"


def _scenario_markdown(scenario: ScenarioPlan, plan: Plan) -> list[str]:
    out = [f"## `{scenario.scenario_id}`", ""]
    host = scenario.host or plan.request.host
    if scenario.host_group is not None:
        cost = "no cost given" if host.cost_per_hour is None else f"${host.cost_per_hour:,.2f} per hour"
        out += [
            f"Host group **{scenario.host_group}** ({host.source}): {host.cores} cores, "
            f"{host.memory_bytes / GIB:.1f} GiB, {cost}.",
            "",
        ]
    if scenario.status == "ok" and scenario.chosen is not None:
        c = scenario.chosen
        at_least = "at least " if c.rate_is_lower_bound else ""
        cost = ""
        if scenario.cost_per_hour is not None:
            cost = (
                f" Cost: **${scenario.cost_per_hour:,.2f} per hour**, "
                f"${scenario.cost_per_million_requests:,.4f} per million requests at the target."
            )
        projection = (
            f"measured with {c.measured_instances} instance(s) and projected {c.doublings_beyond_measured:.2g} "
            f"doubling(s) further at efficiency {c.doubling_efficiency:.2f}"
            if c.doublings_beyond_measured > 0
            else "as measured"
        )
        out += [
            f"**{scenario.hosts} host(s)**, each running **{c.instances} instance(s) x {c.threads_per_instance} "
            f"thread(s)** ({c.binds} binds: {c.instances_cpu_bound} by cores, "
            f"{'-' if c.instances_memory_bound is None else c.instances_memory_bound} by memory), "
            f"{at_least}{_rate(c.qps_per_host)} requests/s per host at the SLO "
            f"({c.per_instance_at_host_per_s:,.1f} per instance, {projection}), "
            f"{_rate(scenario.usable_qps_per_host)} with headroom.{cost}",
            "",
        ]
        if scenario.stall_note:
            out += [
                f"**The measuring host set this rate, not the model**: {scenario.stall_note}. More instances or "
                "hosts like it do not raise it; a quieter host, or a looser SLO, does.",
                "",
            ]
    else:
        word = {
            "unreachable": "**Unreachable**",
            "does_not_fit": "**Does not fit on this host**",
            "not_measured": "**Not measured**",
        }[scenario.status]
        out += [f"{word}: {scenario.reason}", ""]
    if scenario.slo_ttft_s is not None and scenario.slo_tpot_s is not None:
        out += [
            f"_LLM server mode (a generate: scenario): planned at the SLOs its rates were confirmed at, p99 TTFT <= "
            f"{scenario.slo_ttft_s * 1e3:g} ms and p99 TPOT <= {scenario.slo_tpot_s * 1e3:g} ms; --slo-p99-ms "
            "does not apply to it. A request is one generation (its prompt and output lengths from the run's "
            "request mix)._",
            "",
        ]
    if scenario.measured_slo_p99_s is not None and abs(scenario.measured_slo_p99_s - plan.request.slo_p99_s) > 1e-12:
        out += [
            f"_The run confirmed rates at p99 <= {scenario.measured_slo_p99_s * 1e3:g} ms; at "
            f"{plan.request.slo_p99_s * 1e3:g} ms they are lower bounds if looser, and absent if stricter._",
            "",
        ]
    if scenario.options:
        out += [
            f"Per thread width, on the host ({host.cores} cores, {host.memory_bytes / GIB:.1f} GiB):",
            "",
            table(WIDTH_HEADERS, [_width_row(o) for o in scenario.options]),
            "",
            *[
                f"- {o.threads_per_instance} thread(s) per instance: {o.stall_note}"
                for o in scenario.options
                if o.stall_note
            ],
            *([""] if any(o.stall_note for o in scenario.options) else []),
            "Sweep measured on this machine (the scaling assumption rests on it; batch "
            f"{scenario.batch_size} per request; every rate is a confirmed one, from server steps of at least "
            f"{_num(scenario.step_min_duration_s, 1)} s):",
            "",
            f"Verdict rule: {scenario.verdict_rule or 'none recorded (a run before confirmed rates)'}.",
            "",
            table(SWEEP_HEADERS, [_sweep_row(p) for o in scenario.options for p in o.sweep]),
            "",
        ]
    return out


WIDTH_HEADERS = [
    "threads/instance",
    "status",
    "requests/s per instance (measured at N)",
    "efficiency per doubling",
    "instances by cores",
    "instances by memory",
    "instances",
    "binds",
    "requests/s per host",
    "memory per host MiB",
]
SWEEP_HEADERS = [
    "layout",
    "rate at SLO /s",
    "per instance /s",
    "vs 1 instance",
    "single-stream p99 ms",
    "lowest server p99 ms",
    "closed-loop samples/s",
    "offline samples/s",
    "USS MiB",
    "shared MiB",
]


def _width_row(o: WidthOption) -> list[str]:
    efficiency = "-"
    if o.doubling_efficiency is not None:
        efficiency = f"{o.doubling_efficiency:.2f}" + ("" if o.efficiency_measured else " (assumed)")
    return [
        str(o.threads_per_instance),
        o.status,
        _rate(o.per_instance_per_s) + (f" (at {o.measured_instances})" if o.measured_instances else ""),
        efficiency,
        _int(o.instances_cpu_bound),
        _int(o.instances_memory_bound),
        _int(o.instances),
        o.binds or o.reason or "-",
        _rate(o.qps_per_host),
        _mib(o.memory_per_host_bytes),
    ]


def _sweep_row(p: SweepPoint) -> list[str]:
    return [
        p.layout,
        ("at least " if p.rate_is_lower_bound else "") + _rate(p.rate_at_slo_per_s),
        _rate(p.per_instance_per_s),
        "-" if p.vs_one_instance is None else f"{p.vs_one_instance:.2f}",
        ms_number(p.single_stream_p99_s),
        ms_number(p.lowest_server_p99_s),
        _num(p.closed_loop_samples_per_s),
        _num(p.offline_samples_per_s),
        _mib(p.uss_bytes),
        _mib(p.shared_bytes),
    ]


def render_json(plan: Plan) -> str:
    data = dataclasses.asdict(plan)
    data["complete"] = plan.complete
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


# --- the command ---------------------------------------------------------------------------------
