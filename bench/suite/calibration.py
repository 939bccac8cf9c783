"""Calibration data for static int8: the suite's `calibration:` block, checked, and turned into batches.

Static quantization runs the fp32 model over calibration inputs to choose each activation's
int8 range. Three sources:

- `random` (the default): `samples` seeded random inputs. They set ranges for noise, so the
  fidelity and accuracy of a real model quantized this way say nothing about real inputs.
- `data`: the first `samples` images of the scenario's `data:` folder, through the same
  transforms as the input pipeline (bench.checks.pipeline).
- `text`: the first `samples` sentences of the model source's `text:` file, tokenized.

What can be checked without running anything is checked when the suite is read
(`check_calibration`); what only loading tells raises CalibrationError naming the field.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.checks import pipeline
from bench.checks.pipeline import IMAGE_SUFFIXES, DataSpec
from bench.models import catalog as models
from bench.models import hf
from bench.models.sources import ModelSource
from bench.schema import choice, integer, key
from bench.suite import inputs

SOURCES = ("random", "data", "text")
DEFAULT_SAMPLES = 32
CALIBRATION_BATCH = 8  # samples per calibration call: ranges do not depend on it, only time does
_SEED_OFFSET = 2000  # random calibration inputs are seeded apart from the timed batch and fidelity's
RANDOM_NOTE = (
    "calibrated on seeded random inputs: the int8 ranges fit noise, so fidelity and accuracy say nothing "
    "about a real model on real inputs (give calibration: {source: data} or {source: text})"
)


class CalibrationError(Exception):
    """Calibration data that does not fit the model; the message starts with the suite field."""


@dataclass(frozen=True)
class CalibrationSpec:
    """The suite's `calibration:` block (int8_static rows)."""

    # random, data (the scenario's data: folder) or text (the source's text: file)
    source: str = key(choice(SOURCES), default="random")
    samples: int = key(integer(1), default=DEFAULT_SAMPLES)


def check_calibration(
    spec: CalibrationSpec, input_shape: tuple[int, ...], data: DataSpec | None, model_source: ModelSource | None
) -> str | None:
    """Why this calibration cannot feed the model (None when it can), as far as the suite tells."""
    named = model_source is not None and bool(model_source.inputs)
    if spec.source == "data":
        if data is None:
            return "calibration.source is data, but the scenario has no data: folder to calibrate on"
        if named:
            return (
                f"calibration.source is data (images), but {model_source.name} takes named inputs "  # type: ignore[union-attr]
                "(token ids); use source: text or random"
            )
        if reason := pipeline.check_data_spec(data, input_shape):
            return f"calibration.source is data: {reason}"
        if not any(_images(Path(data.folder))):
            return f"calibration.source is data, but {data.folder} has no images ({', '.join(IMAGE_SUFFIXES)})"
    if spec.source == "text" and (model_source is None or not model_source.text):
        return "calibration.source is text, but the model has no text: file (a model source with inputs: and text:)"
    return None


def _images(folder: Path) -> Any:
    return (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def cache_key(spec: CalibrationSpec, data: DataSpec | None, model_source: ModelSource | None) -> dict[str, Any]:
    """What decides the calibration inputs, for the artifact's cache key: the spec and the files' content."""
    key: dict[str, Any] = {"source": spec.source, "samples": spec.samples}
    if spec.source == "data" and data is not None:
        digest = hashlib.sha256()
        for path in sorted(_images(Path(data.folder))):
            digest.update(f"{path.relative_to(data.folder)}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
        key["data"] = {
            "folder_listing_sha256": digest.hexdigest(),
            "resize": data.resize,
            "mean": list(data.mean),
            "std": list(data.std),
            "class_index": data.class_index,
        }
    if spec.source == "text" and model_source is not None and model_source.text:
        key["text_sha256"] = hashlib.sha256(Path(model_source.text).read_bytes()).hexdigest()
    return key


def note(spec: CalibrationSpec) -> str | None:
    """What the row must say about its calibration (None when the data is real)."""
    return RANDOM_NOTE if spec.source == "random" else None


def calibration_batches(
    spec: CalibrationSpec,
    input_shape: tuple[int, ...],
    data: DataSpec | None,
    model_source: ModelSource | None,
    seq_len: int | None,
    seed: int,
) -> list[Any]:
    """The calibration inputs in fp32, in batches of up to CALIBRATION_BATCH: tensors, or dicts of named inputs."""
    specs = model_source.inputs if model_source is not None else ()
    if spec.source == "data":
        assert data is not None  # check_calibration refused it otherwise
        return _image_batches(spec, input_shape, data)
    if spec.source == "text":
        assert model_source is not None
        everything = hf.tokenize(model_source, specs, spec.samples, seq_len or 0, skip=0)
        return [_rows(everything, start) for start in range(0, spec.samples, CALIBRATION_BATCH)]
    if specs:
        everything = inputs.make_inputs(specs, spec.samples, seq_len, seed + _SEED_OFFSET)
        return [_rows(everything, start) for start in range(0, spec.samples, CALIBRATION_BATCH)]
    everything = models.make_input(input_shape, spec.samples, seed + _SEED_OFFSET)
    return list(everything.split(CALIBRATION_BATCH))


def _rows(batch: dict[str, Any], start: int) -> dict[str, Any]:
    return inputs.rows(batch, start, start + CALIBRATION_BATCH)


def _image_batches(spec: CalibrationSpec, input_shape: tuple[int, ...], data: DataSpec) -> list[Any]:
    batches: list[Any] = []
    taken = 0
    for images, _labels in pipeline.build_loader(data, input_shape, CALIBRATION_BATCH):
        if tuple(images.shape[1:]) != tuple(input_shape):
            raise CalibrationError(
                f"calibration.source data: the folder's images come out as {list(images.shape[1:])}, "
                f"the model takes {list(input_shape)}"
            )
        batches.append(images[: spec.samples - taken])
        taken += len(batches[-1])
        if taken >= spec.samples:
            break
    if not batches:
        raise CalibrationError(f"calibration.source data: {data.folder} gave no images")
    return batches
