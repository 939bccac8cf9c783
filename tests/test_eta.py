"""The time left in a run (bench.eta) and the console line that shows it, with made-up wall times."""

from __future__ import annotations

import io

import pytest

from bench.capacity.host import PointProgress
from bench.console import ConsoleProgress
from bench.eta import RemainingTime, shapes_of
from bench.format.units import duration_readable
from bench.results.record import ResultRecord
from bench.suite.scenarios import Scenario


def scenario(model: str = "tiny_mlp", precision: str = "fp32", load: str = "eager", batch_size: int = 1) -> Scenario:
    return Scenario(model, batch_size, 1, 1, precision, load, (64,))


def test_a_scenario_is_estimated_at_its_shapes_mean_else_the_overall_mean():
    fast, slow, other = scenario(), scenario(load="onnxruntime"), scenario(model="tiny_cnn")
    todo = [fast, scenario(batch_size=8), slow, scenario(load="onnxruntime", batch_size=8), other]
    remaining = RemainingTime(shapes_of(todo))
    assert remaining.estimate_s(5) is None  # nothing finished: nothing to go on
    remaining.finished(fast.id, 2.0)
    remaining.finished(slow.id, 30.0)
    # left: tiny_mlp eager b8 (its shape's 2 s), onnxruntime b8 (30 s), tiny_cnn (no row of its shape: the mean, 16 s)
    assert remaining.estimate_s(3) == pytest.approx(2.0 + 30.0 + 16.0)


def test_rows_beyond_the_known_scenarios_count_at_the_overall_mean():
    remaining = RemainingTime({})
    remaining.finished("selfcheck-run0", 4.0)
    remaining.finished("selfcheck-run1", 6.0)
    assert remaining.estimate_s(3) == pytest.approx(15.0)


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def finished_row(s: Scenario) -> ResultRecord:
    return ResultRecord(
        run_id="r",
        scenario_id=s.id,
        suite="t",
        model=s.model,
        batch_size=s.batch_size,
        threads=1,
        interop_threads=1,
        precision=s.precision,
        load=s.load,
        runtime="torch",
        input_shape=[64],
        status="unsupported",
        reason="not here",
    )


def test_each_finished_line_says_how_many_are_left_and_about_how_long():
    todo = [scenario(), scenario(batch_size=4), scenario(load="onnxruntime")]
    stream, clock = io.StringIO(), FakeClock()
    progress = ConsoleProgress(stream, scenarios=todo, clock=clock)
    lines = []
    for index, (s, wall_s) in enumerate(zip(todo, (90.0, 110.0, 5.0), strict=True), start=1):
        progress.scenario_started(index, len(todo), s.id)
        clock.now_s += wall_s
        progress.scenario_finished(finished_row(s))
        lines.append(stream.getvalue().splitlines()[-1])
    assert lines[0].endswith("[2 left, about 3 min 00 s]")  # 90 s for the b4 row (its shape), 90 s for the rest
    assert lines[1].endswith("[1 left, about 1 min 40 s]")  # no onnxruntime row yet: the mean of 90 and 110 s
    assert "left" not in lines[2]  # the last row: nothing left to estimate


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (59.4, "59 s"), (200, "3 min 20 s"), (3599, "59 min 59 s"), (7500, "2 h 05 min")],
)
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert duration_readable(seconds) == text


def test_a_capacity_step_line_says_its_layout_point_and_the_time_left():
    clock, lines = FakeClock(), []
    points = PointProgress(3, lines.append, clock=clock)
    points.start()
    clock.now_s += 40.0
    points.step("capacity 1x1: step at 100/s: ...")
    points.finish()
    points.start()
    clock.now_s += 10.0
    points.step("capacity 2x1: step at 200/s: ...")
    assert lines[0] == "capacity 1x1: step at 100/s: ...  [layout point 1 of 3]"  # no point finished: no estimate
    # two points to go at the first one's 40 s, 10 s of this one already spent
    assert lines[1] == "capacity 2x1: step at 200/s: ...  [layout point 2 of 3, about 1 min 10 s left]"
