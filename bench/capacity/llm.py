"""LLM server mode: the request rate a host serves for a `generate:` scenario at a TTFT and a TPOT SLO.

A generate: scenario's `capacity:` gives `slo_ttft_ms` and `slo_tpot_ms` (and no `slo_p99_ms`,
bench.suite.scenarios.CapacityPolicy.check). For each layout point, after the closed loop
(forward calls: the prefill floor), bench.capacity.host runs `serve_mode(policy)` instead of the
forward-call server mode and the offline run:

- Requests arrive as a Poisson process (bench.capacity.loadgen) through the shared request pipe;
  each is a generation of one request shape (prompt tokens, new tokens), drawn from the
  `request_mix` ({prompt_tokens: [...], new_tokens: [...], weights: [...]}) with the step's seed,
  or the scenario's seq_len and generate.new_tokens without one.
- An instance (bench.capacity.instance.Generator) runs the requests it takes as one greedy
  generate() call: static batching, up to `batching.max_batch` requests (one without
  `batching:`), padded to the longest prompt, generating the longest output; a batch runs to
  its end before the instance takes more. Continuous batching (requests joining and leaving a
  running batch at token boundaries, as vLLM or TGI do) is out of reach with transformers'
  generate(), which runs one fixed batch from prefill to its last token.
- A request's TTFT runs from its *scheduled* arrival to its first token (queueing included,
  as a request's latency does in forward-call server mode); its TPOT is its mean time per output
  token after the first: (its own last token - its first) / (new tokens - 1). A request with a
  single output token has no TPOT and meets that SLO.
- A request is *over* when it missed either bound (TTFT > slo_ttft or TPOT > slo_tpot) or did
  not finish: "p99 TTFT <= slo_ttft and p99 TPOT <= slo_tpot" holds exactly when at most 1 %
  of requests miss TTFT and at most 1 % miss TPOT; counting a request over when it misses
  either is the stricter reading (MLPerf's LLM server scenario requires both percentiles, a
  user is served well only when both hold), so a step that passes on it passes both
  percentiles, and its over-share bounds the share of requests served badly (goodput's
  complement). The verdict is bench.capacity.verdict's binomial rule on that count.
- The search and its confirmation are bench.capacity.loadgen.search_max_rate's, with the
  forward-call mode's confirming-step length; there is no low-load step.

Per step (ServerStep.generation): TTFT and TPOT p50/p90/p99 over the finished requests,
goodput (requests meeting both SLOs per second), output tokens per second, the largest batch,
the largest KV cache's bytes, and the largest instance RSS after the step. The ServerStep's own
latency figures are each request's scheduled arrival to its last token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import psutil

from bench.capacity.host import (
    MIN_RATE_DIVISOR,
    PASSABLE_MARGIN,
    InstanceGroup,
    Layout,
    OpenLoopRun,
    Phase,
    ServeMode,
    batch_size_counts,
    confirming_limits,
    open_loop,
    request_choices,
)
from bench.capacity.instance import (
    Batching,
    GenerateDone,
    GenerationProbe,
    GenerationSetup,
    ServeGenerate,
    step_region,
)
from bench.capacity.loadgen import (
    StepLimits,
    StepTimes,
    evaluate_step,
    next_seed,
    poisson_schedule,
    search_max_rate,
)
from bench.capacity.verdict import FAIL, PASS, RULE, TAIL, UNDECIDED, decide, fewest_to_pass
from bench.results.record import GenerationServerFigures, GenerationStepFigures, ServerStep
from bench.results.stats import nearest_rank
from bench.suite.scenarios import CapacityPolicy, GenerationMix

DRAIN_MIN_S = 0.5
RULE_LLM = (
    "a request is over the SLO when its TTFT (scheduled arrival to first token) > slo_ttft_ms or its TPOT "
    "(mean time per output token after the first) > slo_tpot_ms, or when it did not finish; "
)


@dataclass(frozen=True)
class Slos:
    ttft_s: float
    tpot_s: float


def serve_mode(policy: CapacityPolicy) -> ServeMode:
    """bench.capacity.host's `serve` for a generate: scenario: the LLM server search of each layout point."""
    assert policy.slo_ttft_ms is not None and policy.slo_tpot_ms is not None  # CapacityPolicy.check
    slos = Slos(policy.slo_ttft_ms / 1e3, policy.slo_tpot_ms / 1e3)

    def serve(group: InstanceGroup, k: int, phase: Phase, log: Phase, raw: dict) -> dict[str, GenerationServerFigures]:
        return {"generation_server": search(group, k, policy, slos, phase, log, raw)}

    return serve


def request_weights(policy: CapacityPolicy) -> list[float]:
    mix = policy.request_mix
    return list(mix.weights) if isinstance(mix, GenerationMix) else [1.0]


def request_outcomes(
    scheduled: np.ndarray, first: np.ndarray, ended: np.ndarray, new_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each request's TTFT (NaN: no first token yet) and TPOT (NaN: unfinished, or a single output token)."""
    ttft = np.where(first > 0, first - scheduled, np.nan)
    several = (ended > 0) & (new_tokens > 1)
    tpot = np.full(len(ended), np.nan)
    tpot[several] = (ended[several] - first[several]) / (new_tokens[several] - 1)
    return ttft, tpot


def missed(
    scheduled: np.ndarray, first: np.ndarray, ended: np.ndarray, new_tokens: np.ndarray, slos: Slos
) -> np.ndarray:
    """Per finished request, whether it missed either SLO (an unfinished request counts as missed)."""
    ttft, tpot = request_outcomes(scheduled, first, ended, new_tokens)
    with np.errstate(invalid="ignore"):
        return (ended <= 0) | (ttft > slos.ttft_s) | (tpot > slos.tpot_s)


def running_verdict(
    scheduled: np.ndarray,
    first: np.ndarray,
    ended: np.ndarray,
    new_tokens: np.ndarray,
    sent: int,
    now: float,
    slos: Slos,
    confidence: float,
) -> str:
    """The verdict on the first `sent` requests whatever the unfinished ones turn out to be (loadgen.running_verdict's
    rule): one without a first token older than slo_ttft has missed already; any other unfinished one may go
    either way."""
    scheduled, first, ended, new_tokens = scheduled[:sent], first[:sent], ended[:sent], new_tokens[:sent]
    done = ended > 0
    late = int(np.count_nonzero(done & missed(scheduled, first, ended, new_tokens, slos)))
    overdue = int(np.count_nonzero(~done & (first <= 0) & (now - scheduled > slos.ttft_s)))
    in_flight = int(np.count_nonzero(~done)) - overdue
    if decide(late + overdue + in_flight, sent, confidence) == PASS:
        return PASS
    if decide(late + overdue, sent, confidence) == FAIL:
        return FAIL
    return UNDECIDED


def _percentiles(values: np.ndarray) -> list[float | None]:
    ordered = sorted(values[~np.isnan(values)].tolist())
    return [nearest_rank(ordered, p) if ordered else None for p in (50, 90, 99)]


def generation_figures(
    run: OpenLoopRun, setup: GenerationSetup, slos: Slos, rss_bytes: int | None
) -> tuple[GenerationStepFigures, np.ndarray]:
    """A finished step's generation figures, and per request whether it missed an SLO."""
    scheduled, first, ended = run.fields["scheduled"], run.fields["first"], run.fields["ended"]
    shapes = run.fields["seq"].astype(int)
    new_tokens = np.asarray(setup.new_tokens, dtype=float)[shapes] if len(shapes) else np.zeros(0)
    ttft, tpot = request_outcomes(scheduled, first, ended, new_tokens)
    over = missed(scheduled, first, ended, new_tokens, slos)
    done = ended > 0
    with np.errstate(invalid="ignore"):
        over_ttft = int(np.count_nonzero((first <= 0) | (ttft > slos.ttft_s)))
        over_tpot = int(np.count_nonzero(~done | (tpot > slos.tpot_s)))
    last = max(float(ended.max()) if len(ended) else 0.0, float(scheduled[-1]) if len(scheduled) else 0.0)
    span_s = last - run.step_start
    tokens = int(new_tokens[done].sum())
    largest = max((r.largest_batch for r in run.replies), default=0)
    kv = [r.kv_cache_bytes for r in run.replies if r.kv_cache_bytes is not None]
    ttft_p, tpot_p = _percentiles(ttft), _percentiles(tpot)
    figures = GenerationStepFigures(
        ttft_p50_s=ttft_p[0],
        ttft_p90_s=ttft_p[1],
        ttft_p99_s=ttft_p[2],
        tpot_p50_s=tpot_p[0],
        tpot_p90_s=tpot_p[1],
        tpot_p99_s=tpot_p[2],
        over_ttft=over_ttft,
        over_tpot=over_tpot,
        goodput_per_s=int(np.count_nonzero(~over)) / span_s if span_s > 0 else 0.0,
        output_tokens_per_s=tokens / span_s if span_s > 0 else 0.0,
        output_tokens=tokens,
        largest_batch=largest or None,
        kv_cache_bytes=max(kv) if kv else None,
        rss_bytes=rss_bytes,
        mix_requests=np.bincount(shapes, minlength=len(setup.new_tokens)).tolist()
        if len(setup.new_tokens) > 1
        else None,
    )
    return figures, over


def generation_step(
    group: InstanceGroup,
    k: int,
    rate_per_s: float,
    seed: int,
    limits: StepLimits,
    slos: Slos,
    weights: list[float],
    batching: Batching | None,
) -> tuple[ServerStep, dict]:
    """One open-loop step of generation requests at `rate_per_s` against the first k instances."""
    setup = group.generation
    assert setup is not None
    offsets = poisson_schedule(rate_per_s, limits, seed)
    n = len(offsets)
    shapes = request_choices(weights, n, seed)
    new_tokens = np.asarray(setup.new_tokens, dtype=float)[shapes.astype(int)]
    # a request still unfinished this long after the last arrival has missed its SLOs whatever happens
    drain_s = max(DRAIN_MIN_S, 2 * (slos.ttft_s + max(setup.new_tokens) * slos.tpot_s))

    def running(scheduled: np.ndarray, slots: np.ndarray, sent: int, now: float) -> str:
        first = slots[step_region("first", n)]
        ended = slots[step_region("ended", n)]
        return running_verdict(scheduled, first, ended, new_tokens, sent, now, slos, limits.confidence)

    run = open_loop(
        group, k, offsets, limits, lambda path: ServeGenerate(n, path, batching), shapes, running, GenerateDone, drain_s
    )
    rss = [_rss_bytes(instance.child.pid) for instance in group.instances[:k]]
    figures, over = generation_figures(run, setup, slos, max((r for r in rss if r is not None), default=None))
    times = StepTimes(
        scheduled=run.fields["scheduled"].tolist(),
        sent=run.sent.tolist(),
        started=run.fields["started"].tolist(),
        ended=run.fields["ended"].tolist(),
        step_start=run.step_start,
        drain_end=run.drain_end,
    )
    step = evaluate_step(
        rate_per_s,
        times,
        limits,
        float("inf"),  # the end-to-end latency is a figure here; `missed` decides
        loadgen_cpu_s=run.loadgen_cpu_s,
        wall_s=run.wall_s,
        instances_cpu_s=sum(r.cpu_s for r in run.replies),
        seed=seed,
        missed=over.tolist(),
    )
    step = dataclasses.replace(
        step,
        loadgen_cores=run.generator_cores,
        batch_size_counts=batch_size_counts(run.fields["batch"]) if batching else None,
        generation=figures,
    )
    return step, run.raw(("batch", "seq", "first"))


def search_bounds(
    policy: CapacityPolicy, slos: Slos, probes: list[GenerationProbe], weights: list[float], k: int, max_batch: int
) -> dict[str, float | str] | str:
    """Where the rate search starts and how low it may go, or why there is none (a stop reason).

    From the probes (each request shape generated alone, at rest): no search when a shape drawn
    for at least 1 % of requests misses an SLO even alone, or when k instances serving one
    request after another (max_batch at a time, at best) cannot hold a passing step's requests
    within step_max_duration_s.
    """
    total = sum(weights)
    for i, (probe, weight) in enumerate(zip(probes, weights, strict=True)):
        if weight / total < TAIL:
            continue
        if probe.ttft_s > slos.ttft_s or (probe.tpot_s is not None and probe.tpot_s > slos.tpot_s):
            tpot = f"{probe.tpot_s * 1e3:.3g} ms" if probe.tpot_s is not None else "none"
            return (
                f"not searched: request shape {i} ({weight / total:.0%} of requests) alone, at rest, has TTFT "
                f"{probe.ttft_s * 1e3:.3g} ms and TPOT {tpot}, over slo_ttft_ms {slos.ttft_s * 1e3:g} or slo_tpot_ms "
                f"{slos.tpot_s * 1e3:g}; no rate can meet them"
            )
    service_s = sum(p.total_s * w for p, w in zip(probes, weights, strict=True)) / total
    closed_rate = k / service_s  # one request per generate() call, back to back
    fewest = max(fewest_to_pass(policy.confidence), policy.step_min_requests)
    passable = PASSABLE_MARGIN * fewest / policy.step_max_duration_s
    if closed_rate * max_batch < passable:
        return (
            f"not searched: too slow to plan within step_max_duration_s ({policy.step_max_duration_s:g} s): a step "
            f"passes at {policy.confidence:.0%} confidence with at least {fewest} requests, and these instances "
            f"serve at most about {closed_rate * max_batch:.3g} requests/s; raise step_max_duration_s to at least "
            f"{PASSABLE_MARGIN * fewest / (closed_rate * max_batch):.0f} s"
        )
    lowest = closed_rate / 2 / MIN_RATE_DIVISOR
    return {
        "start_rate_per_s": max(closed_rate / 2, passable),
        "min_rate_per_s": max(lowest, passable),
        "min_rate_why": (
            f"the lowest rate at which a step can hold the {fewest} requests a pass needs within "
            f"step_max_duration_s ({policy.step_max_duration_s:g} s)"
            if passable > lowest
            else "the lowest rate tried"
        ),
    }


def progress_line(step: ServerStep) -> str:
    """One line per finished step: rate, requests, over either SLO, p99 TTFT and TPOT, verdict."""
    g = step.generation
    assert g is not None

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1e3:.3g} ms"

    kind = "confirming step" if step.confirmation else "step"
    verdict = step.verdict if step.valid else "invalid"
    return (
        f"{kind} at {step.rate_per_s:,.4g}/s: {step.requests} requests in {step.duration_s:.1f} s, {step.over_slo} "
        f"over an SLO (TTFT {g.over_ttft}, TPOT {g.over_tpot}), p99 TTFT {ms(g.ttft_p99_s)}, p99 TPOT "
        f"{ms(g.tpot_p99_s)}, {g.output_tokens_per_s:.4g} tokens/s: {verdict}"
    )


def search(
    group: InstanceGroup, k: int, policy: CapacityPolicy, slos: Slos, phase: Phase, log: Phase, raw: dict
) -> GenerationServerFigures:
    """LLM server mode with the first k instances: the search for the highest rate meeting both SLOs, confirmed."""
    setup = group.generation
    assert setup is not None and group.instances[0].ready is not None
    layout = Layout(k, group.scenario.threads).name
    weights = request_weights(policy)
    batching = policy.batching
    batches = Batching(batching.max_batch, batching.max_delay_ms / 1e3) if batching else None
    limits = StepLimits(
        policy.step_min_duration_s, policy.step_min_requests, policy.step_max_duration_s, policy.confidence
    )
    probes = group.instances[0].ready.probes

    def run_step(rate: float, index: int, step_limits: StepLimits = limits, kind: str = "step") -> ServerStep:
        phase(f"capacity {layout}: LLM server {kind} {index + 1} at {rate:,.4g} requests/s")
        seed = next_seed(group.scenario.seed, index)
        step, step_raw = generation_step(group, k, rate, seed, step_limits, slos, weights, batches)
        step = dataclasses.replace(step, confirmation=kind == "confirming step")
        raw.update({f"generation_server_step{index}_{key}": v for key, v in step_raw.items()})
        log(f"capacity {layout}: {progress_line(step)}")
        return step

    def confirm(rate: float, index: int, passing: ServerStep) -> ServerStep:
        return run_step(rate, index, confirming_limits(policy, limits, passing), "confirming step")

    bounds = search_bounds(policy, slos, probes, weights, k, setup.max_batch)
    steps: list[ServerStep] = []
    max_rate, confirmed, stop = None, False, bounds if isinstance(bounds, str) else ""
    if not isinstance(bounds, str):
        found = search_max_rate(
            run_step, tolerance=policy.tolerance, max_steps=policy.max_steps, confirm=confirm, **bounds
        )
        steps, max_rate, stop, confirmed = found.steps, found.max_rate_per_s, found.stop_reason, found.confirmed
    return GenerationServerFigures(
        slo_ttft_s=slos.ttft_s,
        slo_tpot_s=slos.tpot_s,
        max_rate_per_s=max_rate,
        stop_reason=stop,
        min_duration_s=policy.step_min_duration_s,
        min_requests=policy.step_min_requests,
        max_batch=setup.max_batch,
        max_delay_s=batches.max_delay_s if batches else None,
        prompt_tokens=list(setup.prompt_tokens),
        new_tokens=list(setup.new_tokens),
        weights=weights,
        probe_ttft_s=[p.ttft_s for p in probes],
        probe_tpot_s=[p.tpot_s for p in probes],
        steps=steps,
        verdict_rule=RULE_LLM + RULE.format(confidence=policy.confidence),
        confirmed=confirmed,
    )


def _rss_bytes(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None
