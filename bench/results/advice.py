"""advice.json: what `bench advise` decided (bench.advise), as typed records both sides share.

`bench advise` writes it into its run folder (bench.advise.output); the report's "Advice" section
(bench.report.advice) and any other tool read it back with `read_advice`. The field names are the
ones issue #31 fixed so that other tools can read them: `slo_p99_ms`, `target_rps`,
`fidelity_floor` {`metric`, `value`}, `budget_s`, `spent_s`, `winner` (null, with `why`, when no
candidate meets both the SLO and the floor) and `candidates`, each with its axes, `verdict` (one
of VERDICTS) and `why`. Fields are added, never renamed; a reader drops keys it does not know.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.schema import from_json

ADVICE_FILE = "advice.json"
ADVICE_SUITE_FILE = "advice.yaml"
# chosen: the winner; frontier: meets both but costs more (or was not load-tested: see its why);
# dominated: another candidate is at least as good on every screened figure and better on one;
# below_fidelity: under the floor, or its fidelity cannot show the floor; unsupported: cannot run here
# (or its measurement failed); slo_missed: load-tested and no rate met the SLO; not_measured: the
# budget (or --top) left it unmeasured.
VERDICTS = ("chosen", "frontier", "dominated", "below_fidelity", "unsupported", "slo_missed", "not_measured")
# --min-fidelity metrics: the record figure each reads (bench.advise.decide.fidelity_value), and
# whether the floor is a lower bound (cosine >= 0.99) or an upper bound (kl <= 0.05).
FIDELITY_METRICS = {
    "cosine": "fidelity.cosine_similarity (fidelity.cosine_min for feature-extraction text models)",
    "top1": "fidelity.top1_agreement",
    "accuracy": "pipeline.top1_accuracy (top-1 on a data: folder's labels, absolute)",
    "nn": "fidelity.nearest_neighbour_agreement",
    "kl": "fidelity.kl_divergence_max (causal-lm; an upper bound)",
}
UPPER_BOUND_METRICS = ("kl",)


@dataclass(frozen=True)
class FidelityFloor:
    metric: str  # a key of FIDELITY_METRICS
    value: float

    @property
    def text(self) -> str:
        return f"{self.metric} {'<=' if self.metric in UPPER_BOUND_METRICS else '>='} {self.value:g}"


@dataclass(frozen=True)
class Winner:
    """The configuration to deploy: the cheapest candidate that met the SLO and the fidelity floor."""

    scenario_id: str
    precision: str
    load: str
    threads: int
    batch_size: int
    batching: str | None  # dynamic batching in server mode (capacity.batching); None: one request per call
    layout: str | None  # instances x threads per instance on one host, e.g. 2x1
    rate_per_host_per_s: float | None  # requests/s one host serves at the SLO (confirmed rates)
    confirmed: bool  # the confirm stage measured the rate again and it held
    hosts: int | None
    cost_per_hour: float | None
    cost_per_million: float | None  # per million requests at the target rate
    fidelity: float | None  # the floor's metric
    model: str | None = None
    stall_note: str | None = None  # this host's stalls set the rate, not queueing (server mode's low-load step)


@dataclass(frozen=True)
class CandidateAdvice:
    """One point of the search space and what became of it."""

    scenario_id: str  # the screen row's id; its capacity and confirm rows add ~capacity, ~confirm
    model: str
    precision: str
    load: str
    threads: int
    batch_size: int
    batching: str | None
    verdict: str  # one of VERDICTS
    why: str
    layout: str | None = None
    median_ms: float | None = None  # screen: one call, single stream
    p99_ms: float | None = None
    peak_rss_bytes: int | None = None
    fidelity: float | None = None  # the floor's metric
    rate_per_host_per_s: float | None = None
    hosts: int | None = None
    cost_per_hour: float | None = None
    cost_per_million: float | None = None
    rows: list[str] = field(default_factory=list)  # the run folder's rows behind it (scenario ids)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Advice:
    slo_p99_ms: float
    target_rps: float  # requests per second; one request is one call on the candidate's batch
    fidelity_floor: FidelityFloor
    budget_s: float
    spent_s: float
    winner: Winner | None
    why: str  # the winner's reason, or why there is none (with the nearest miss)
    candidates: list[CandidateAdvice] = field(default_factory=list)
    runner_up: str | None = None  # the next cheapest candidate that met both, and why it lost
    host: str | None = None  # the host planned for: cores, memory, price
    assumptions: list[str] = field(default_factory=list)
    run_id: str | None = None
    # a fleet advise over host groups: each group's own advice (this shape, its `groups` empty); the fields
    # above are then the advice of the group whose winner costs least per million requests
    groups: dict[str, Advice] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, allow_nan=False) + "\n"


def read_advice(run_dir: Path) -> Advice | None:
    """The run folder's advice.json, or None when it has none; ValueError for one that is no advice."""
    path = run_dir / ADVICE_FILE
    if not path.is_file():
        return None
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        advice = from_json(Advice, data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is no advice: {exc}") from None
    if not isinstance(advice, Advice):
        raise ValueError(f"{path} is no advice: expected a JSON object")
    return advice


def ranked(advice: Advice) -> list[CandidateAdvice]:
    """The candidates in the order the console and the report show them: the winner, then those that met both
    by cost per million requests (then hosts, then rate per host), then the rest by verdict."""

    def key(c: CandidateAdvice) -> tuple[int, float, float, float]:
        cost = c.cost_per_million if c.cost_per_million is not None else float("inf")
        return (VERDICTS.index(c.verdict), cost, float(c.hosts or 0), -(c.rate_per_host_per_s or 0.0))

    return sorted(advice.candidates, key=key)
