"""The advice's decisions, as pure functions over typed records: no clock, no process, no file.

A candidate (`Measured`) is one point of the search space with the rows its stages gave it
(bench.advise.stages): the screen row (a short single-stream measurement with fidelity), the
capacity row (server mode at the SLO on the layout that fills a host at its width) and, for the
winner, the confirm row (the same search once more). From those:

- `fidelity_check`: the floor's figure of a row, and why it cannot show the floor (a flat output,
  too few distinct samples, a null figure): such a candidate does not pass;
- `screen_verdicts`: unsupported, below_fidelity, slo_missed (one call's median is over the SLO: no
  rate can meet it), dominated (another candidate of the model is at least as good on core-seconds
  per sample, one call's p99, peak memory and fidelity, and better on one), the rest `frontier`;
- `capacity_order`: the frontier by predicted cost (core-seconds per sample), cheapest first;
- `plan_candidate`: the capacity row planned with bench.analysis.plan's rules (instances per host
  bound by cores and memory, headroom, hosts, cost) for the target; where the host's own stalls set
  the rate (capacity's stall floor), the plan's `stall_note` goes into the candidate's why;
- `decide`: every verdict, the winner (the cheapest candidate meeting both SLO and floor, its rate
  the lower of the capacity and confirm rows'), the runner-up and why it lost, the nearest miss.

A request is one call on the candidate's batch of one sample each: `target_rps` counts samples,
and a batch-B candidate serves target_rps / B calls per second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from bench.analysis.plan import DEFAULT_HEADROOM, Host, PlanRequest, ScenarioPlan, plan_scenario
from bench.checks.fidelity import INPUT_DEPENDENCE_FLOOR, NEIGHBOUR_MIN_SAMPLES, is_flat
from bench.format.units import GIB
from bench.results.advice import UPPER_BOUND_METRICS, Advice, CandidateAdvice, FidelityFloor, Winner
from bench.results.record import ResultRecord

DEFAULT_FLOOR = FidelityFloor("cosine", 0.99)
REAL_DATA = "measure it on real inputs (a data: folder for images, text: for text models) to show the floor"


@dataclass(frozen=True)
class AdviceRequest:
    slo_p99_s: float
    target_rps: float  # requests (samples) per second
    floor: FidelityFloor
    host: Host  # the host planned for: the measured machine, at --host-cost-per-hour
    budget_s: float
    top_k: int = 3  # candidates load-tested in the capacity stage
    headroom: float = DEFAULT_HEADROOM


@dataclass(frozen=True)
class Measured:
    """A candidate as the decisions see it: its axes and the rows its stages gave it."""

    scenario_id: str
    model: str
    precision: str
    load: str
    threads: int
    batch_size: int
    batching: str | None = None
    unsupported: str | None = None  # known without trying (bench.runtimes)
    screen: ResultRecord | None = None
    capacity: ResultRecord | None = None
    confirm: ResultRecord | None = None
    left: str | None = None  # why a stage it needed did not run (the budget, --top)

    @property
    def rows(self) -> list[str]:
        return [r.scenario_id for r in (self.screen, self.capacity, self.confirm) if r is not None]


@dataclass(frozen=True)
class Verdict:
    verdict: str
    why: str


# --- fidelity -------------------------------------------------------------------------------------


def fidelity_value(record: ResultRecord, metric: str) -> tuple[float | None, str | None]:
    """The floor's figure of a row, or None and why it cannot show the floor."""
    if metric == "accuracy":
        accuracy = record.pipeline.top1_accuracy if record.pipeline else None
        if accuracy is None:
            return None, "no top-1 accuracy was measured (it needs a data: folder of labelled images)"
        return accuracy, None
    f = record.fidelity
    if f is None:
        return None, "no fidelity figures were recorded for it"
    if f.non_finite_outputs:
        return None, f"{f.non_finite_outputs} of its output values are NaN or infinite"
    if is_flat(f.input_dependence):
        return None, (
            f"its output barely depends on the input (input_dependence {f.input_dependence:.2g} < "
            f"{INPUT_DEPENDENCE_FLOOR:g}), so cosine and top-1 against fp32 are noise with these inputs and weights"
        )
    if f.inputs is not None and f.inputs < NEIGHBOUR_MIN_SAMPLES:
        return None, f"only {f.inputs} distinct sample(s) were compared (at least {NEIGHBOUR_MIN_SAMPLES} are needed)"
    text_embedding = f.cosine_min is not None
    value = {
        "cosine": f.cosine_min if text_embedding else f.cosine_similarity,
        "top1": f.top1_agreement,
        "nn": f.nearest_neighbour_agreement,
        "kl": f.kl_divergence_max,
    }[metric]
    if value is None:
        return None, f"its {metric} figure is null" + (f" ({f.note})" if f.note else "") + (
            " (this model's task records other figures)" if f.metric else ""
        )
    return value, None


def fidelity_check(record: ResultRecord, floor: FidelityFloor) -> tuple[bool, float | None, str]:
    """(passes, the figure, a sentence): a row whose figure cannot show the floor does not pass."""
    value, why_none = fidelity_value(record, floor.metric)
    if value is None:
        return False, None, f"its fidelity cannot show the floor {floor.text}: {why_none}; {REAL_DATA}"
    upper = floor.metric in UPPER_BOUND_METRICS
    passes = value <= floor.value if upper else value >= floor.value
    word = "meets" if passes else "misses"
    return passes, value, f"{floor.metric} {value:.4g} {word} the floor {floor.text}"


# --- screen ----------------------------------------------------------------------------------------


def core_s_per_sample(record: ResultRecord) -> float | None:
    """One call's median x its threads / its batch: what a sample costs a host's cores."""
    if record.latency_s is None:
        return None
    return record.latency_s.median * record.threads / record.batch_size


def _peak(record: ResultRecord) -> int | None:
    return record.rss_bytes.peak_uss or record.rss_bytes.peak


def _better_or_equal(a: ResultRecord, b: ResultRecord, floor: FidelityFloor) -> tuple[bool, bool]:
    """(a is at least as good as b on every screened figure, a is strictly better on one)."""
    pairs: list[tuple[float, float]] = []  # (a, b), lower is better
    for figure in (core_s_per_sample, lambda r: r.latency_s.p99 if r.latency_s else None, _peak):
        x, y = figure(a), figure(b)
        if x is None or y is None:
            return False, False  # a figure one lacks: no claim either way
        pairs.append((float(x), float(y)))
    fa, fb = fidelity_value(a, floor.metric)[0], fidelity_value(b, floor.metric)[0]
    if fa is None or fb is None:
        return False, False
    sign = 1.0 if floor.metric in UPPER_BOUND_METRICS else -1.0
    pairs.append((sign * fa, sign * fb))
    return all(x <= y for x, y in pairs), any(x < y for x, y in pairs)


def screen_verdicts(candidates: Sequence[Measured], request: AdviceRequest) -> dict[str, Verdict]:
    """The screen's verdict of every screened or unsupported candidate; `frontier` for those that go on."""
    verdicts: dict[str, Verdict] = {}
    passing: list[Measured] = []
    for c in candidates:
        row = c.screen
        if c.unsupported is not None:
            verdicts[c.scenario_id] = Verdict("unsupported", c.unsupported)
        elif row is None:
            continue  # not screened: decide() says why
        elif row.status != "ok" or row.latency_s is None:
            verdicts[c.scenario_id] = Verdict("unsupported", f"its screen row is {row.status}: {row.reason}")
        else:
            passes, _, why = fidelity_check(row, request.floor)
            if not passes:
                verdicts[c.scenario_id] = Verdict("below_fidelity", why)
            elif row.latency_s.median > request.slo_p99_s:
                verdicts[c.scenario_id] = Verdict(
                    "slo_missed",
                    f"one call's median is {row.latency_s.median * 1e3:.3g} ms single-stream, above the "
                    f"{request.slo_p99_s * 1e3:g} ms SLO: no rate can meet it"
                    + (" (measured while other processes took the CPU: see its contention)" if row.contended else ""),
                )
            else:
                passing.append(c)
    for c in passing:
        row = c.screen
        assert row is not None
        by = next(
            (
                o
                for o in passing
                if o is not c and o.model == c.model and all(_better_or_equal(o.screen, row, request.floor))  # type: ignore[arg-type]
            ),
            None,
        )
        if by is not None:
            verdicts[c.scenario_id] = Verdict(
                "dominated",
                f"{by.scenario_id} is at least as good on core-seconds per sample, one call's p99, peak memory "
                "and fidelity, and better on one",
            )
        else:
            verdicts[c.scenario_id] = Verdict(
                "frontier", f"on the frontier after the screen; {_screen_line(row, request)}"
            )
    return verdicts


def _screen_line(row: ResultRecord, request: AdviceRequest) -> str:
    assert row.latency_s is not None
    _, _, fidelity = fidelity_check(row, request.floor)
    return f"median {row.latency_s.median * 1e3:.3g} ms, p99 {row.latency_s.p99 * 1e3:.3g} ms single-stream; {fidelity}"


def capacity_order(candidates: Sequence[Measured], verdicts: dict[str, Verdict]) -> list[Measured]:
    """The frontier, cheapest predicted first: core-seconds per sample from the screen (the fewer, the more a
    host serves), then one call's p99."""
    frontier = [c for c in candidates if verdicts.get(c.scenario_id, Verdict("", "")).verdict == "frontier"]
    return sorted(
        frontier,
        key=lambda c: (core_s_per_sample(c.screen) or float("inf"), c.screen.latency_s.p99),  # type: ignore[union-attr]
    )


# --- capacity and the plan -------------------------------------------------------------------------


def plan_request(request: AdviceRequest, batch_size: int) -> PlanRequest:
    """bench plan's request for a candidate: a call carries batch_size requests."""
    return PlanRequest(request.slo_p99_s, request.target_rps / batch_size, request.headroom, request.host)


def plan_candidate(record: ResultRecord, request: AdviceRequest) -> ScenarioPlan:
    return plan_scenario(record, plan_request(request, record.batch_size))


def rate_per_host(plan: ScenarioPlan, batch_size: int) -> float | None:
    """Requests (samples) per second one host serves at the SLO, before headroom."""
    if plan.chosen is None or plan.chosen.qps_per_host is None:
        return None
    return plan.chosen.qps_per_host * batch_size


def cost_per_million(plan: ScenarioPlan, request: AdviceRequest) -> float | None:
    if plan.cost_per_hour is None:
        return None
    return plan.cost_per_hour / (request.target_rps * 3600) * 1e6


def _layout(plan: ScenarioPlan) -> str | None:
    c = plan.chosen
    return f"{c.instances}x{c.threads_per_instance}" if c is not None and c.instances else None


def _projection(plan: ScenarioPlan) -> str:
    """Where the plan's rate per host comes from, when not from the layout it plans: bench plan projects
    the per-instance rate of the largest instance count that confirmed one. On the 2-core VM, bert_tiny's
    2x1 layout (0.26 ms calls, thousands of requests/s, the generator on the instances' cores) confirmed
    none and its rate was 2 x the 1x1 point's, which the advice had called 'a second search on 2x1'."""
    c = plan.chosen
    if c is None or c.measured_instances is None or c.instances is None or c.measured_instances >= c.instances:
        return ""
    return (
        f" (projected from the confirmed rate of {c.measured_instances} instance(s) by bench plan's scaling "
        f"rule: no layout of {c.instances} instances confirmed a rate at the SLO)"
    )


@dataclass(frozen=True)
class Feasible:
    candidate: Measured
    plan: ScenarioPlan  # the confirm row's when its rate was the lower
    fidelity: float | None
    rate_per_host_per_s: float
    cost_per_million: float | None
    confirmed: bool
    note: str  # how the confirm stage went


def _cost_key(f: Feasible) -> tuple[float, float, float]:
    cost = f.cost_per_million if f.cost_per_million is not None else float("inf")
    return (cost, float(f.plan.hosts or 0), -f.rate_per_host_per_s)


def _feasible(c: Measured, request: AdviceRequest) -> tuple[Feasible | None, Verdict | None]:
    """A load-tested candidate planned: Feasible when it meets the SLO on a host, else its verdict."""
    record = c.capacity
    assert record is not None
    if record.status != "ok" or record.capacity is None:
        return None, Verdict("not_measured", f"its capacity row is {record.status}: {record.reason}")
    plan = plan_candidate(record, request)
    if plan.status == "not_measured":
        return None, Verdict("not_measured", f"its capacity measurement did not run: {plan.reason}")
    if plan.status != "ok":
        why, note = plan.reason or plan.status, plan.stall_note  # the host's stalls, where they set the rate
        return None, Verdict("slo_missed", why + (f"; {note}" if note and note not in why else ""))
    fidelity = fidelity_value(c.screen, request.floor.metric)[0] if c.screen else None
    rate = rate_per_host(plan, c.batch_size) or 0.0
    return Feasible(c, plan, fidelity, rate, cost_per_million(plan, request), False, ""), None


def confirmed(f: Feasible, request: AdviceRequest) -> Feasible:
    """The winner with its confirm row: its rate the lower of the two searches', confirmed when the second held."""
    row = f.candidate.confirm
    if row is None:
        why = f.candidate.left or "the confirm stage did not run"
        return dataclasses.replace(f, note=f"not confirmed: {why}")
    if row.status != "ok" or row.capacity is None:
        return dataclasses.replace(f, note=f"not confirmed: the confirm row is {row.status}: {row.reason}")
    plan = plan_candidate(row, request)
    rate = rate_per_host(plan, f.candidate.batch_size) if plan.status == "ok" else None
    if rate is None:
        return dataclasses.replace(
            f, note=f"not confirmed: the second search found no rate at the SLO ({plan.reason or plan.status})"
        )
    note = (
        f"confirmed: a second search gave {rate:,.1f} requests/s per host on {_layout(plan)}{_projection(plan)} "
        f"(the capacity stage: {f.rate_per_host_per_s:,.1f}); the lower one is planned"
    )
    if rate < f.rate_per_host_per_s:
        return Feasible(f.candidate, plan, f.fidelity, rate, cost_per_million(plan, request), True, note)
    return dataclasses.replace(f, confirmed=True, note=note)


def rank(candidates: Sequence[Measured], request: AdviceRequest) -> tuple[list[Feasible], dict[str, Verdict]]:
    """The load-tested candidates that meet the SLO, cheapest first, and the verdicts of those that do not.

    Only the screen's frontier counts: a candidate below the floor or dominated never wins, whatever its rate."""
    screened = screen_verdicts(candidates, request)
    feasible, verdicts = [], {}
    for c in candidates:
        if c.capacity is None or screened.get(c.scenario_id, Verdict("", "")).verdict != "frontier":
            continue
        ok, verdict = _feasible(c, request)
        if ok is not None:
            feasible.append(ok)
        elif verdict is not None:
            verdicts[c.scenario_id] = verdict
    return sorted(feasible, key=_cost_key), verdicts


# --- the whole advice ------------------------------------------------------------------------------


def _money(value: float | None) -> str:
    return "no price given" if value is None else f"${value:,.4f} per million requests"


def _lost_because(loser: Feasible, winner: Feasible) -> str:
    lose, win = loser.cost_per_million, winner.cost_per_million
    if lose is not None and win is not None and lose > win:
        return f"costs {_money(loser.cost_per_million)} against {_money(winner.cost_per_million)}"
    if (loser.plan.hosts or 0) > (winner.plan.hosts or 0):
        return f"needs {loser.plan.hosts} host(s) against {winner.plan.hosts}"
    return (
        f"serves {loser.rate_per_host_per_s:,.1f} requests/s per host against {winner.rate_per_host_per_s:,.1f} "
        "(the same number of hosts at the target; the faster leaves more headroom)"
    )


def _nearest_miss(candidates: Sequence[Measured], verdicts: dict[str, Verdict], request: AdviceRequest) -> str:
    """The candidate that came closest: on latency among those meeting the floor, else on fidelity."""
    slo_missed = [
        c
        for c in candidates
        if verdicts[c.scenario_id].verdict == "slo_missed" and c.screen is not None and c.screen.latency_s
    ]
    if slo_missed:
        near = min(slo_missed, key=lambda c: c.screen.latency_s.p99)  # type: ignore[union-attr]
        why = verdicts[near.scenario_id].why
        return f"the nearest miss is {near.scenario_id}, which meets the floor but not the SLO: {why}"
    below = [(c, fidelity_value(c.screen, request.floor.metric)[0]) for c in candidates if c.screen is not None]
    below = [(c, v) for c, v in below if v is not None and verdicts[c.scenario_id].verdict == "below_fidelity"]
    if below:
        upper = request.floor.metric in UPPER_BOUND_METRICS
        near, _ = min(below, key=lambda cv: cv[1]) if upper else max(below, key=lambda cv: cv[1])
        return f"the nearest miss is {near.scenario_id}: {verdicts[near.scenario_id].why}"
    left = [c for c in candidates if verdicts[c.scenario_id].verdict == "not_measured"]
    if left:
        return f"{len(left)} candidate(s) were not measured (see their why); a larger --budget-min may find one"
    return "no candidate came near: every one is unsupported here or cannot show the fidelity floor"


def decide(candidates: Sequence[Measured], request: AdviceRequest, spent_s: float) -> Advice:
    """Every candidate's verdict and why, and the winner: the cheapest that meets the SLO and the floor."""
    verdicts = screen_verdicts(candidates, request)
    feasible, capacity_verdicts = rank(candidates, request)
    verdicts.update(capacity_verdicts)
    winner = confirmed(feasible[0], request) if feasible else None
    if winner is not None:
        feasible = [winner, *feasible[1:]]
    for f in feasible[1:]:
        assert winner is not None
        note = f.plan.stall_note
        verdicts[f.candidate.scenario_id] = Verdict(
            "frontier", f"meets the SLO and the floor but {_lost_because(f, winner)}" + (f"; {note}" if note else "")
        )
    for c in candidates:
        if c.scenario_id in verdicts and (c.scenario_id not in {f.candidate.scenario_id for f in feasible}):
            if verdicts[c.scenario_id].verdict == "frontier":  # screened onto the frontier, never load-tested
                verdicts[c.scenario_id] = Verdict("not_measured", f"not load-tested: {c.left or 'the budget ran out'}")
        elif c.scenario_id not in verdicts:
            verdicts[c.scenario_id] = Verdict("not_measured", f"not screened: {c.left or 'the budget ran out'}")
    runner_up = None
    if winner is not None:
        note = winner.plan.stall_note
        why = (
            f"the cheapest that meets p99 <= {request.slo_p99_s * 1e3:g} ms at {request.target_rps:g} requests/s "
            f"and the floor {request.floor.text}: {winner.plan.hosts} host(s) of {_layout(winner.plan)} at "
            f"{winner.rate_per_host_per_s:,.1f} requests/s each{_projection(winner.plan)} "
            f"({winner.plan.chosen.binds} binds), "  # type: ignore[union-attr]
            f"{_money(winner.cost_per_million)}; {winner.note}" + (f"; {note}" if note else "")
        )
        verdicts[winner.candidate.scenario_id] = Verdict("chosen", why)
        others = [f for f in feasible if f.candidate is not winner.candidate]
        if others:
            runner_up = f"{others[0].candidate.scenario_id} {_lost_because(others[0], winner)}"
    else:
        why = (
            f"no candidate meets both p99 <= {request.slo_p99_s * 1e3:g} ms at {request.target_rps:g} requests/s "
            f"and the floor {request.floor.text}; {_nearest_miss(candidates, verdicts, request)}"
        )
    return Advice(
        slo_p99_ms=request.slo_p99_s * 1e3,
        target_rps=request.target_rps,
        fidelity_floor=request.floor,
        budget_s=request.budget_s,
        spent_s=spent_s,
        winner=_winner(winner, request) if winner is not None else None,
        why=why,
        candidates=[_candidate(c, verdicts[c.scenario_id], request, feasible) for c in candidates],
        runner_up=runner_up,
        host=_host_line(request.host),
        assumptions=ASSUMPTIONS,
    )


ASSUMPTIONS = [
    "The measured host stands for the fleet's hosts: instances per host, the rate per instance and memory are "
    "this machine's (bench plan's rules, headroom included); other hosts need their own measurement.",
    "The SLO is the p99 latency of one request, from its scheduled arrival to the end of its call, under Poisson "
    "arrivals (bench capacity's server mode); a rate counts only when a confirming step held it.",
    "A request is one sample: a batch-B candidate serves the target as target / B calls per second, each "
    "request arriving already batched (capacity.batching in the suite measures batching on the server).",
    "Fidelity is measured against the same model's fp32 eager outputs on the screen's inputs: seeded random "
    "inputs unless the suite gives data: or text:.",
]


def _host_line(host: Host) -> str:
    cost = "no price given" if host.cost_per_hour is None else f"${host.cost_per_hour:,.2f} per hour"
    return f"{host.cores} cores, {host.memory_bytes / GIB:.1f} GiB ({host.source}), {cost}"


def _winner(f: Feasible, request: AdviceRequest) -> Winner:
    c = f.candidate
    return Winner(
        scenario_id=c.scenario_id,
        precision=c.precision,
        load=c.load,
        threads=c.threads,
        batch_size=c.batch_size,
        batching=c.batching,
        layout=_layout(f.plan),
        rate_per_host_per_s=f.rate_per_host_per_s,
        confirmed=f.confirmed,
        hosts=f.plan.hosts,
        cost_per_hour=f.plan.cost_per_hour,
        cost_per_million=f.cost_per_million,
        fidelity=f.fidelity,
        model=c.model,
        stall_note=f.plan.stall_note,
    )


def _candidate(c: Measured, verdict: Verdict, request: AdviceRequest, feasible: Sequence[Feasible]) -> CandidateAdvice:
    row = c.screen
    latency = row.latency_s if row is not None and row.status == "ok" else None
    planned = next((f for f in feasible if f.candidate is c), None)
    return CandidateAdvice(
        scenario_id=c.scenario_id,
        model=c.model,
        precision=c.precision,
        load=c.load,
        threads=c.threads,
        batch_size=c.batch_size,
        batching=c.batching,
        verdict=verdict.verdict,
        why=verdict.why,
        layout=_layout(planned.plan) if planned else None,
        median_ms=latency.median * 1e3 if latency else None,
        p99_ms=latency.p99 * 1e3 if latency else None,
        peak_rss_bytes=_peak(row) if row is not None else None,
        fidelity=fidelity_value(row, request.floor.metric)[0] if row is not None and row.status == "ok" else None,
        rate_per_host_per_s=planned.rate_per_host_per_s if planned else None,
        hosts=planned.plan.hosts if planned else None,
        cost_per_hour=planned.plan.cost_per_hour if planned else None,
        cost_per_million=planned.cost_per_million if planned else None,
        rows=c.rows,
    )
