"""The one registry of load modes: `RUNTIMES` maps each `load:` name to its runtime (bench.runtimes.base).

Each runtime module registers its class with `@register` when the package imports it; a module
that only needs to look a runtime up (model building, formats) imports this one, not the runtimes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from bench.runtimes.base import Runtime
    from bench.suite.scenarios import Scenario

RUNTIMES: dict[str, Runtime] = {}
R = TypeVar("R", bound="type[Runtime]")


def register(cls: R) -> R:
    """Class decorator: one instance of `cls` becomes the load mode `cls.name`."""
    if cls.name in RUNTIMES:
        raise ValueError(f"load mode {cls.name!r} is registered twice")
    RUNTIMES[cls.name] = cls()
    return cls


def runtime_for(scenario: Scenario) -> Runtime:
    """The runtime of the scenario's load mode (suite validation admits only the names in suite.LOADS,
    which tests/test_runtimes.py keeps equal to the registry's)."""
    return RUNTIMES[scenario.load]
