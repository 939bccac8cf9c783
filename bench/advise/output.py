"""What `bench advise` leaves behind: the console table, advice.json and advice.yaml in the run folder.

advice.json is bench.results.advice's `Advice` as JSON (the report reads it back with
`read_advice`). advice.yaml is a suite that reproduces the winner: its model as the user's suite
wrote it (file paths made absolute, since the suite now lives in the run folder), the winner's
precision, load, threads and batch, the user's other defaults, and a `capacity:` block with the SLO
and layout the advice measured, so that `bench run` measures that one configuration again and the
regression gate can hold it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from bench.advise.space import SEARCHED_AXES
from bench.format.text import format_table
from bench.models import sources
from bench.results.advice import ADVICE_FILE, ADVICE_SUITE_FILE, Advice, ranked
from bench.suite.scenarios import CapacityPolicy, Scenario, default_input_shape

FILE_KEYS = (*sources.FILE_KINDS, "text")  # the keys of a model: mapping that name a file or folder


def console_table(advice: Advice) -> str:
    """The candidates ranked by cost per million requests (the winner first), with verdict and why."""
    rows = []
    for i, c in enumerate(ranked(advice), start=1):
        rows.append(
            [
                str(i),
                c.scenario_id,
                c.verdict,
                "-" if c.median_ms is None else f"{c.median_ms:.3g}",
                "-" if c.fidelity is None else f"{c.fidelity:.4g}",
                "-" if c.rate_per_host_per_s is None else f"{c.rate_per_host_per_s:,.1f}",
                "-" if c.hosts is None else str(c.hosts),
                "-" if c.cost_per_million is None else f"${c.cost_per_million:,.4f}",
                c.why,
            ]
        )
    header = [
        "#",
        "candidate",
        "verdict",
        "median ms",
        advice.fidelity_floor.metric,
        "req/s per host",
        "hosts",
        "per million",
        "why",
    ]
    return format_table(header, rows, right=(0, 3, 4, 5, 6, 7))


def _model_entry(doc: dict[str, Any], model: str, suite_dir: Path) -> Any:
    """The suite's own `model:` mapping named `model` (its paths made absolute), else the model's name."""
    matrices = doc.get("matrix") or []
    places = [doc.get("defaults") or {}, *([matrices] if isinstance(matrices, dict) else matrices)]
    places += list(doc.get("include") or [])
    for place in places:
        values = place.get("model") if isinstance(place, dict) else None
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, dict) and value.get("name") == model:
                return {
                    k: str((suite_dir / v).absolute()) if k in FILE_KEYS and isinstance(v, str) else v
                    for k, v in value.items()
                }
    return model


def _capacity_block(policy: CapacityPolicy) -> dict[str, Any]:
    block = dataclasses.asdict(policy)
    block["layouts"] = list(policy.layouts)
    if policy.request_mix is not None:
        block["request_mix"] = {
            "seq_len": {"choices": list(policy.request_mix.choices), "weights": list(policy.request_mix.weights)}
        }
    return {k: v for k, v in block.items() if v is not None}


def advice_suite(advice: Advice, winner: Scenario, suite_text: str, suite_dir: Path) -> str:
    """A suite that measures the winner again, with its capacity at the advice's SLO and layout."""
    assert advice.winner is not None and winner.capacity is not None
    doc: dict[str, Any] = yaml.safe_load(suite_text) or {}
    capacity = dataclasses.replace(winner.capacity, layouts=(advice.winner.layout or winner.capacity.layouts[0],))
    defaults = {k: v for k, v in (doc.get("defaults") or {}).items() if k not in (*SEARCHED_AXES, "model")}
    defaults.pop("generate", None)  # the advice measured no generation
    defaults["capacity"] = _capacity_block(capacity)
    matrix: dict[str, list[Any]] = {
        "model": [_model_entry(doc, winner.model, suite_dir)],
        **{axis: [getattr(winner, axis)] for axis in SEARCHED_AXES},
    }
    if winner.seq_len is not None:
        matrix["seq_len"] = [winner.seq_len]
    elif (winner.source is None or not winner.source.inputs) and winner.input_shape != default_input_shape(
        winner.source or winner.model
    ):
        matrix["input_shape"] = [list(winner.input_shape)]
    name = f"advice-{doc.get('name', 'suite')}"[:80]
    out = {
        "name": name,
        "description": (
            f"The configuration bench advise chose (run {advice.run_id}): {advice.winner.scenario_id} on "
            f"{advice.winner.layout}, p99 <= {advice.slo_p99_ms:g} ms at {advice.target_rps:g} requests/s, "
            f"fidelity {advice.fidelity_floor.text}. Measure it again with bench run."
        ),
        "defaults": defaults,
        "matrix": matrix,
    }
    if winner.host_group is not None:  # measured on a fleet's host group: measured again there (--scheduler)
        out["hosts"] = [winner.host_group]
    return yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=100)


def write_advice(run_dir: Path, advice: Advice, suite_yaml: str | None) -> list[Path]:
    """advice.json, and advice.yaml when there is a winner; the paths written."""
    written = [run_dir / ADVICE_FILE]
    written[0].write_text(advice.to_json(), encoding="utf-8")
    stale = run_dir / ADVICE_SUITE_FILE
    if suite_yaml is None:
        stale.unlink(missing_ok=True)  # a resumed advise that no longer names a winner
    else:
        stale.write_text(suite_yaml, encoding="utf-8")
        written.append(stale)
    return written
