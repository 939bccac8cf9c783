"""The `zygote` fixture: one zygote (bench.measure.zygote) for a test session's profiles and capacity instances.

Measured on the shared 2-core dev VM (2026-12-07, load average 8 to 9, tiny_mlp): a forked
capacity instance was Ready 0.11 s after its start against 4.1 s fresh, a whole 5-call profile
took 0.76 s against 13.4 s; the zygote itself is ready once per session (6.9 s). None where
fork is not available: children start fresh.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.measure.child import child_env
from bench.measure.zygote import ZygoteWorkers, fork_available


@pytest.fixture(scope="session")
def zygote(tmp_path_factory) -> Iterator[ZygoteWorkers | None]:
    if not fork_available():
        yield None
        return
    workers = ZygoteWorkers(child_env(1, {}), tmp_path_factory.mktemp("zygote") / "zygote.log", print)
    yield workers
    workers.close()
