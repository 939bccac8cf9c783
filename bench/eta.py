"""How long a run has left: an estimate from the wall times of the scenarios finished so far.

A scenario's shape is its (model, load, precision): the same model loaded the same way at the
same precision costs about the same whatever its batch size or threads, while a different one
(ONNX export, quantization, a larger model) can cost ten times more. Each scenario still to run
is estimated at the mean wall time of the finished ones of its shape, else at the mean of all
finished ones. No clock is read here: the caller passes each scenario's wall time.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from bench.suite.scenarios import Scenario

Shape = tuple[str, str, str]  # model, load, precision


def shape_of(scenario: Scenario) -> Shape:
    return (scenario.model, scenario.load, scenario.precision)


def shapes_of(scenarios: Iterable[Scenario]) -> dict[str, Shape]:
    """Scenario id -> shape, for RemainingTime."""
    return {scenario.id: shape_of(scenario) for scenario in scenarios}


class RemainingTime:
    """The scenarios of a run still to finish and an estimate of their wall time."""

    def __init__(self, todo: Mapping[str, Shape]) -> None:
        self._todo = dict(todo)  # scenario id -> shape, not finished yet
        self._walls_s: dict[Shape, list[float]] = {}
        self._all_walls_s: list[float] = []

    def finished(self, scenario_id: str, wall_s: float) -> None:
        """A scenario ended after `wall_s` seconds (an id it was not given counts in the overall mean only)."""
        shape = self._todo.pop(scenario_id, None)
        self._all_walls_s.append(wall_s)
        if shape is not None:
            self._walls_s.setdefault(shape, []).append(wall_s)

    def estimate_s(self, left: int) -> float | None:
        """Seconds for the `left` scenarios still to run: those it was given at their shape's mean,
        any beyond them at the overall mean. None before any scenario has finished."""
        if not self._all_walls_s:
            return None
        overall_s = statistics.fmean(self._all_walls_s)
        known_s = sum(statistics.fmean(self._walls_s.get(shape, self._all_walls_s)) for shape in self._todo.values())
        return known_s + max(0, left - len(self._todo)) * overall_s
