"""The search space of `bench advise`: the suite's models, and every configuration this host can run them in.

The suite names the models and, optionally, the axes (`precision`, `load`, `threads`,
`batch_size` in its matrix, defaults or include entries). An axis it leaves out is searched over
what the runtime registry says runs here: every load mode of `RUNTIMES` and precision of
`PRECISIONS` (a pair the registry refuses, a missing library, a precision this CPU cannot run,
is a candidate with verdict `unsupported` and the registry's reason), thread widths that divide
the usable cores, and batch 1 and the offline batch. grad_mode and module_mode stay at inference
(eval under inference_mode).

Each candidate is measured in stages, every stage a row of its own in the one run folder: the
screen row keeps the candidate's own scenario id (so it compares with any other run's row of the
same scenario), the capacity and confirm rows add `~capacity` and `~confirm` (STAGE_SEPARATOR).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import yaml

from bench import runtimes
from bench.capacity.host import requested_layouts, sweep_counts
from bench.suite.calibration import CalibrationSpec, check_calibration
from bench.suite.scenarios import MODULE_MODES, CapacityPolicy, MeasurePolicy, Scenario, Suite

SEARCHED_AXES = ("precision", "load", "threads", "batch_size")
STAGE_SEPARATOR = "~"
STAGES = ("screen", "capacity", "confirm")
# The screen is short: enough rounds for a median and a rough p99 of one call, and the fidelity check.
SCREEN_MEASURE = MeasurePolicy(warmup_rounds=2, min_rounds=10, max_rounds=200, max_time_s=0.5)
# The capacity search when the suite has no `capacity:` block: steps of 1-10 s and at most 6 of them,
# as scenarios/capacity.yaml measured well under a minute per layout on 2 cores.
ADVISE_CAPACITY = {
    "duration_s": 1.0,
    "step_min_duration_s": 1.0,
    "step_max_duration_s": 10.0,
    "max_steps": 6,
    "tolerance": 0.1,
    "sweep": False,
}
SCREEN_OVERHEAD_S = 6.0  # a screen row beyond its timed rounds, before any has run (see estimate_screen_s)
OFFLINE_BATCH = next(f.default for f in dataclasses.fields(CapacityPolicy) if f.name == "offline_batch_size")


def stage_id(scenario_id: str, stage: str) -> str:
    """The row id of a candidate's stage: the screen keeps the scenario's id."""
    return scenario_id if stage == "screen" else f"{scenario_id}{STAGE_SEPARATOR}{stage}"


def stage_of(row_id: str) -> str:
    """The stage a row of an advise run belongs to."""
    _, separator, tail = row_id.rpartition(STAGE_SEPARATOR)
    return tail if separator and tail in STAGES else "screen"


@dataclass(frozen=True)
class Candidate:
    scenario: Scenario  # as screened: the short measure policy, no capacity, no profile or generation
    batching: str | None  # the suite's capacity.batching, measured in the capacity stage
    unsupported: str | None  # the registry's reason, known without trying
    capacity: CapacityPolicy | None = None  # the suite's capacity: block, if it gave one (its SLO is replaced)
    cores: int = 1  # the usable cores of the host it is measured on (this one, or its host group's)

    @property
    def id(self) -> str:
        return self.scenario.id


def divisors(cores: int) -> list[int]:
    return [t for t in range(1, cores + 1) if cores % t == 0]


def named_axes(text: str) -> set[str]:
    """The searched axes a suite's text names anywhere (matrix, defaults, include)."""
    doc: Any = yaml.safe_load(text) or {}
    matrices = doc.get("matrix") or []
    entries = [doc.get("defaults") or {}, *([matrices] if isinstance(matrices, dict) else matrices)]
    entries += list(doc.get("include") or [])
    return {axis for entry in entries if isinstance(entry, dict) for axis in SEARCHED_AXES if axis in entry}


def axis_values(cores: int, offline_batch: int) -> dict[str, list[Any]]:
    """Every value of each searched axis this host offers."""
    return {
        "precision": list(runtimes.PRECISIONS),
        "load": list(runtimes.RUNTIMES),
        "threads": divisors(cores),
        "batch_size": sorted({1, offline_batch}),
    }


def candidates(suite: Suite, cores: int) -> list[Candidate]:
    """The suite's scenarios with every axis it leaves out searched, each once, in the suite's order."""
    named = named_axes(suite.text)
    found: dict[str, Candidate] = {}
    for base in suite.scenarios:
        offline = base.capacity.offline_batch_size if base.capacity else OFFLINE_BATCH
        values = {a: v for a, v in axis_values(cores, offline).items() if a not in named}
        for combo in itertools.product(*values.values()):
            scenario = screen_scenario(dataclasses.replace(base, **dict(zip(values, combo, strict=True))))
            if scenario.id not in found:
                batching = base.capacity.batching.label if base.capacity and base.capacity.batching else None
                found[scenario.id] = Candidate(scenario, batching, unsupported(scenario), base.capacity, cores)
    return list(found.values())


def screen_scenario(scenario: Scenario) -> Scenario:
    return dataclasses.replace(
        scenario,
        measure=SCREEN_MEASURE,
        capacity=None,
        profile=False,
        generate=None,
        grad_mode="inference_mode",
        module_mode=MODULE_MODES[0],
    )


def unsupported(scenario: Scenario) -> str | None:
    """The registry's reason (bench.runtimes), and int8_static's calibration rules, which a suite file meets
    when it is read and a searched precision meets here."""
    if (reason := runtimes.unsupported_reason(scenario)) is not None:
        return reason
    if scenario.precision == "int8_static":
        calibration = scenario.calibration or CalibrationSpec()
        return check_calibration(calibration, scenario.input_shape, scenario.data, scenario.source)
    return None


def capacity_scenario(scenario: Scenario, given: CapacityPolicy | None, slo_p99_ms: float, cores: int) -> Scenario:
    """The candidate for the capacity and confirm stages: server mode at the SLO on the layout that fills the
    host at its width (instances x its threads), with the suite's capacity settings where it gave them."""
    layout = f"{max(1, cores // scenario.threads)}x{scenario.threads}"
    if given is not None:
        policy = dataclasses.replace(given, slo_p99_ms=slo_p99_ms, layouts=(layout,))
    else:
        policy = CapacityPolicy(slo_p99_ms=slo_p99_ms, layouts=(layout,), **ADVISE_CAPACITY)
    return dataclasses.replace(scenario, capacity=policy)


def estimate_screen_s(scenario: Scenario) -> float:
    """A screen row before any has run: a worker's start, its warmup and timed rounds, fidelity, the artifact.
    On a 2-core VM a tiny model's row took ~5-8 s, most of it process start and imports (bench.results.timeline)."""
    return SCREEN_OVERHEAD_S + scenario.measure.max_time_s


def estimate_capacity_s(scenario: Scenario, cores: int) -> float:
    """A capacity row before any has run: per measured layout (bench.capacity.host measures 1 instance and N of
    each width, and the powers of 2 between with `sweep`), instance start, the closed loop and offline runs, and
    the search's steps plus up to three confirming ones at about twice their least length; a screen row too."""
    policy = scenario.capacity
    assert policy is not None
    points = sum(len(sweep_counts(layout.instances, policy.sweep)) for layout in requested_layouts(policy, cores))
    per_point = 5.0 + 2 * policy.duration_s + (policy.max_steps + 3) * 2 * policy.step_min_duration_s
    return SCREEN_OVERHEAD_S + SCREEN_MEASURE.max_time_s + per_point * points
