"""The stages of `bench advise`, run into one run folder within a time budget: screen, capacity, confirm.

1. screen: every candidate (bench.advise.space) measured briefly single-stream with fidelity; an
   unsupported one's row says why at no cost;
2. capacity: server mode at the SLO (bench.capacity, the runner's own capacity path) for the best
   `top_k` of each model's screen frontier by predicted cost (bench.advise.decide.capacity_order),
   each model's cheapest first;
3. confirm: the cheapest feasible candidate's search once more.

A fleet advise (`--scheduler`) runs the stages once per host group, each stage for every group
before the next, under the one budget: every row is sent to its group's hosts through
bench.measure.fleet (the same path as `bench run --scheduler`), one row at a time.

Each row is appended to results.jsonl as it ends (bench.measure.runner.run_scenario, the same
path as `bench run`), so an interrupted advise continues with `--resume`: the rows already there
are read back and only the missing ones measured. Before each row the stage's cost is estimated
(the mean wall time of the stage's rows so far, else bench.advise.space's estimates) and the row
runs only if it and a reserve for the stages after it fit in what the budget has left; what does
not fit is left with the reason, never silently skipped. `spent_s` is the rows' own wall time.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import sys
from collections.abc import Callable, Sequence

from bench.advise.decide import AdviceRequest, Measured, capacity_order, confirmed, rank, screen_verdicts
from bench.advise.space import Candidate, capacity_scenario, estimate_capacity_s, estimate_screen_s, stage_id, stage_of
from bench.console import ConsoleProgress
from bench.format.units import duration_readable
from bench.measure import fleet
from bench.measure.runner import (
    Progress,
    RunContext,
    close_workers,
    open_workers,
    run_scenario,
    utc_now,
    write_run_info,
)
from bench.results.record import ResultRecord, append_record
from bench.suite.scenarios import Scenario

Announce = Callable[[str], None]


def wall_s(record: ResultRecord) -> float:
    """What a row cost: its timeline's wall time (profile and capacity included), else its duration."""
    return record.timeline.wall_s if record.timeline is not None else record.duration_s or 0.0


class StageProgress:
    """A runner Progress whose console (bench.console.ConsoleProgress: the row lines and their ETA) starts over
    at each stage with that stage's rows; the command may wrap it (bench.history.store.RecordAsItRuns)."""

    def __init__(self) -> None:
        self.console = ConsoleProgress()

    def stage(self, scenarios: Sequence[Scenario]) -> None:
        self.console = ConsoleProgress(scenarios=scenarios)

    def scenario_started(self, index: int, total: int, scenario_id: str) -> None:
        self.console.scenario_started(index, total, scenario_id)

    def scenario_phase(self, phase: str, elapsed_s: float) -> None:
        self.console.scenario_phase(phase, elapsed_s)

    def scenario_finished(self, record: ResultRecord) -> None:
        self.console.scenario_finished(record)


class Stages:
    """The rows of an advise run, measured or read back, and the budget they spend."""

    def __init__(
        self,
        context: RunContext,
        items: Sequence[Candidate],
        request: AdviceRequest,
        cores: int,
        announce: Announce,
        stage_progress: StageProgress | None = None,
        progress: Progress | None = None,
        client=None,
    ):
        """`progress`: what each row's events go to (default: `stage_progress`, which each stage restarts);
        `client`: a Dask fleet's, which measures the rows on its hosts (None: here)."""
        self.context, self.request, self.cores, self.announce = context, request, cores, announce
        self.client = client
        self.stage_progress = stage_progress or StageProgress()
        self.progress: Progress = progress or self.stage_progress
        self.items = list(items)
        self.rows: dict[str, ResultRecord] = {r.scenario_id: r for r in context.records}
        self.left: dict[str, str] = {}  # candidate id -> why a stage it needed did not run

    @property
    def spent_s(self) -> float:
        """Every row of the run folder: host groups share the one budget."""
        return sum(wall_s(r) for r in self.context.records)

    def measured(self) -> list[Measured]:
        return [
            Measured(
                scenario_id=c.id,
                model=c.scenario.model,
                precision=c.scenario.precision,
                load=c.scenario.load,
                threads=c.scenario.threads,
                batch_size=c.scenario.batch_size,
                batching=c.batching,
                unsupported=c.unsupported,
                screen=self.rows.get(c.id),
                capacity=self.rows.get(stage_id(c.id, "capacity")),
                confirm=self.rows.get(stage_id(c.id, "confirm")),
                left=self.left.get(c.id),
            )
            for c in self.items
        ]

    def _mean_wall(self, stage: str, default_s: float) -> float:
        walls = [wall_s(r) for key, r in self.rows.items() if stage_of(key) == stage and r.status == "ok"]
        return statistics.fmean(walls) if walls else default_s

    def _fits(self, cost_s: float, reserve_s: float) -> bool:
        return self.spent_s + cost_s + reserve_s <= self.request.budget_s

    def _no_time(self, stage: str, cost_s: float) -> str:
        return (
            f"the budget ({duration_readable(self.request.budget_s)}) left no time to {stage} it: about "
            f"{duration_readable(cost_s)} each, {duration_readable(self.spent_s)} already spent"
        )

    def _measure(self, scenario: Scenario, stage: str, index: int, total: int) -> None:
        row_id = stage_id(scenario.id, stage)
        if self.client is not None:  # the fleet runner appends the row and tells the progress
            fleet.run_suite_on_fleet(self.context, self.client, self.progress, rows={row_id: scenario}, finish=False)
            self.rows[row_id] = self.context.records[-1]
            return
        self.progress.scenario_started(index, total, row_id)
        record = run_scenario(self.context, scenario, self.progress, file_stem=row_id)
        record = dataclasses.replace(record, scenario_id=row_id)
        append_record(self.context.results_path, record)
        self.context.records.append(record)
        self.rows[row_id] = record
        self.progress.scenario_finished(record)

    def _stage_line(self, stage: str, count: int, each_s: float) -> None:
        left = max(0.0, self.request.budget_s - self.spent_s)
        self.announce(
            f"{stage}: {count} row(s) to measure, about {duration_readable(each_s)} each; "
            f"{duration_readable(self.spent_s)} of the {duration_readable(self.request.budget_s)} budget spent, "
            f"{duration_readable(left)} left"
        )

    def screen(self) -> None:
        todo = [c for c in self.items if c.id not in self.rows]
        capacity_s = self._capacity_estimate()
        each_s = self._mean_wall("screen", estimate_screen_s(todo[0].scenario) if todo else 0.0)
        self._stage_line("screen", len(todo), each_s)
        self.stage_progress.stage([c.scenario for c in todo])
        for index, c in enumerate(todo, start=1):
            cost_s = 0.0 if c.unsupported else self._mean_wall("screen", estimate_screen_s(c.scenario))
            # a capacity row and its confirmation must still fit after the screen
            if not self._fits(cost_s, 2 * capacity_s):
                self.left[c.id] = self._no_time("screen", cost_s)
                continue
            self._measure(c.scenario, "screen", index, len(todo))

    def _capacity_estimate(self) -> float:
        """The mean of the capacity rows so far, else the first candidate's capacity row's estimate."""
        return self._mean_wall("capacity", estimate_capacity_s(self._capacity_of(self.items[0]), self.cores))

    def _capacity_of(self, c: Candidate) -> Scenario:
        return capacity_scenario(c.scenario, c.capacity, self.request.slo_p99_s * 1e3, c.cores)

    def capacity(self) -> None:
        verdicts = screen_verdicts(self.measured(), self.request)
        per_model: dict[str, list[Measured]] = {}
        for m in capacity_order(self.measured(), verdicts):
            per_model.setdefault(m.model, []).append(m)
        k = self.request.top_k
        for ranked_ in per_model.values():
            for place, m in enumerate(ranked_[k:], start=k + 1):
                self.left[m.scenario_id] = (
                    f"--top {k} load-tests the {k} cheapest of each model by the screen's core-seconds per "
                    f"sample; it came {place}th"
                )
        # each model's cheapest first, then each one's second ...: a short budget still load-tests every model
        chosen = [m for level in itertools.zip_longest(*(r[:k] for r in per_model.values())) for m in level if m]
        by_id = {c.id: c for c in self.items}
        todo = [by_id[m.scenario_id] for m in chosen if stage_id(m.scenario_id, "capacity") not in self.rows]
        self._stage_line("capacity", len(todo), self._capacity_estimate())
        self.stage_progress.stage([self._capacity_of(c) for c in todo])
        for index, c in enumerate(todo, start=1):
            cost_s = self._capacity_estimate()
            if not self._fits(cost_s, cost_s):  # and the winner's confirmation after it
                self.left[c.id] = self._no_time("load-test", cost_s)
                continue
            self._measure(self._capacity_of(c), "capacity", index, len(todo))

    def confirm(self) -> None:
        feasible, _ = rank(self.measured(), self.request)
        if not feasible or feasible[0].candidate.confirm is not None:
            return
        c = next(c for c in self.items if c.id == feasible[0].candidate.scenario_id)
        cost_s = self._capacity_estimate()
        self._stage_line("confirm", 1, cost_s)
        if not self._fits(cost_s, 0.0):
            self.left[c.id] = self._no_time("confirm", cost_s)
            return
        self.stage_progress.stage([self._capacity_of(c)])
        self._measure(self._capacity_of(c), "confirm", 1, 1)
        # the confirmation itself is read by decide(); computed here only to say how it went
        winner = confirmed(rank(self.measured(), self.request)[0][0], self.request)
        self.announce(f"confirm: {winner.candidate.scenario_id}: {winner.note}")


def run_stages(
    context: RunContext,
    groups: Sequence[tuple[Sequence[Candidate], AdviceRequest]],
    announce: Announce = lambda line: print(f"bench: {line}", file=sys.stderr, flush=True),
    *,
    stage_progress: StageProgress | None = None,
    progress: Progress | None = None,
    client=None,
) -> list[Stages]:
    """Measure what the budget allows of every stage into the context's run folder, for each (candidates, request)
    of `groups` (one per host group on a fleet, else one), each stage for every group before the next; here the
    run's zygote opens and closes, on a fleet (`client`) the rows go to the hosts. `progress` (wrapping
    `stage_progress`): e.g. the history's RecordAsItRuns."""
    every = [
        Stages(context, items, request, request.host.cores, announce, stage_progress, progress, client)
        for items, request in groups
    ]
    if client is None:
        open_workers(context)
    try:
        for stage in (Stages.screen, Stages.capacity, Stages.confirm):
            for stages in every:
                stage(stages)
    except KeyboardInterrupt:
        write_run_info(context, status="interrupted", finished_at=utc_now())
        raise
    finally:
        close_workers(context)
    write_run_info(context, status="complete", finished_at=utc_now())
    return every
