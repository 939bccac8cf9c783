"""The pytest-benchmark harness that each worker process runs (see bench.measure.worker).

`test_scenario` is the benchmark of one scenario. `test_selfcheck_block` is used only
by `bench selfcheck`: it times the same model alternately with the harness and with
torch.utils.benchmark.Timer, in this one process, so the two can be compared fairly.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.measure import harness_plugin
from bench.measure.child import die_with_parent
from bench.measure.worker import SelfcheckBlock, WorkerSession

die_with_parent()
SELFCHECK_BLOCKS = int(os.environ.get("BENCH_SELFCHECK_BLOCKS", "0"))


@pytest.fixture(scope="module")
def session() -> Iterator[WorkerSession]:
    with WorkerSession.from_env(harness_plugin.configured_s) as worker_session:
        yield worker_session


def test_scenario(benchmark, session: WorkerSession) -> None:
    session.run_scenario(benchmark)


@pytest.mark.parametrize("block", range(SELFCHECK_BLOCKS))
def test_selfcheck_block(benchmark, session: WorkerSession, block: int) -> None:
    from torch.utils.benchmark import Timer

    with session.guard():
        if session.infer is None:
            session.load()
            session.compile()
            session.first_inference()
            session.block_rounds = session.warmup()
        timer = Timer(
            stmt="infer(batch)",
            globals={"infer": session.infer, "batch": session.batch},
            num_threads=session.scenario.threads,  # Timer defaults to 1 thread
        )
        budget_s = session.scenario.measure.max_time_s
        # Alternate which goes first so that slow drift (heat, frequency) favours neither.
        timer_first = block % 2 == 0
        if timer_first:
            timer_median_s = timer.blocked_autorange(min_run_time=budget_s).median
        round_starts_s = session.steady(benchmark, session.block_rounds, phase=f"block{block}")
        if not timer_first:
            timer_median_s = timer.blocked_autorange(min_run_time=budget_s).median
        facts = session.facts
        facts.selfcheck_blocks.append(SelfcheckBlock(block, timer_median_s, round_starts_s, facts.contention))
        facts.status = "ok"
