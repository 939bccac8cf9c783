"""Backends: how each (precision, load mode) pair is prepared on disk and loaded for inference.

The parent calls `prepare_artifact` (once per model, precision and format; cached).
The worker calls `load_model` inside the timed load phase and gets back a callable that
runs one inference on one batch. A pair that is not supported gets a reason from
`unsupported_reason` and becomes an `unsupported` row, never a crash or a gap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import models
from bench.artifacts import Artifact, cached_artifact
from bench.suite import Scenario

# (precision, load) pairs this version can run. Everything else in the suite's axes is
# accepted by the validator and reported as unsupported, with this list in the reason.
SUPPORTED: frozenset[tuple[str, str]] = frozenset({("fp32", "eager")})


def runtime_of(scenario: Scenario) -> str:
    return "onnxruntime" if scenario.load == "onnxruntime" else "torch"


def unsupported_reason(scenario: Scenario) -> str | None:
    if (scenario.precision, scenario.load) in SUPPORTED:
        return None
    supported = ", ".join(f"{p}/{l}" for p, l in sorted(SUPPORTED))
    return (
        f"precision '{scenario.precision}' with load mode '{scenario.load}' is not implemented "
        f"in this version of bench (supported: {supported})"
    )


def prepare_artifact(scenario: Scenario, cache_dir: Path) -> Artifact:
    """Write (or reuse) the file this scenario loads. Runs in the parent; imports torch."""
    import torch

    key = {
        "model": scenario.model,
        "seed": scenario.seed,
        "precision": scenario.precision,
        "format": "state_dict",
        "torch": torch.__version__,
    }

    def write(path: Path) -> None:
        model = models.build_model(scenario.model, scenario.seed)
        torch.save(model.state_dict(), path)

    return cached_artifact(cache_dir, key, f"{scenario.model}.pt", write)


def load_model(scenario: Scenario, artifact_path: Path) -> Callable[[Any], Any]:
    """From file to a ready callable `infer(batch)`. This whole function is `load_s`."""
    import torch

    model = models.build_model(scenario.model, scenario.seed)
    state = torch.load(artifact_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    del state
    return model


def make_batch(scenario: Scenario) -> Any:
    return models.make_input(scenario.input_shape, scenario.batch_size, scenario.seed)
