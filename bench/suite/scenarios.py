"""Suite files: YAML in, a validated Suite and its expanded Scenarios out.

A suite is `name`, `description`, `defaults`, a `matrix` of axes, and optional
`exclude` / `include` lists and `hosts` (host groups of a fleet run, bench.measure.fleet).
Every error names the file, the line and the field: the loader keeps the line of every key
and list item, and a failure at a place in the document is reported on the nearest line it has.

The top level (SuiteDocument), a `model:` mapping (ModelEntry) and the settings (`measure:`,
`capacity:`, `data:`, …) are declared once, on their dataclasses' fields (bench.schema), and
read by one reader; the axes' checks are one table (_AXIS_CHECKS). What the validator adds is
what needs the suite read so far (a model named by a source defined earlier) or the disk: a
source's files and factory, and what a Hugging Face folder gives its entry (bench.models.hf.check_entry).
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.checks.generation import GeneratePolicy
from bench.checks.pipeline import DataSpec, check_data_spec
from bench.errors import SuiteError
from bench.models import catalog as models
from bench.models import hf, pruning, sources
from bench.models.sources import ModelSource, SourceError
from bench.results.record import ROW_DEFAULTS
from bench.schema import (
    Check,
    Context,
    Invalid,
    block,
    byte_size,
    choice,
    describe,
    expect_mapping,
    flag,
    fraction,
    from_json,
    integer,
    key,
    keys,
    positive,
    read,
    read_keys,
    seconds,
)
from bench.suite.calibration import CalibrationSpec, check_calibration
from bench.suite.inputs import TOKEN_INDEX_INPUTS, InputsError, InputSpec, parse_inputs, uses_seq

PRECISIONS = ("fp32", "int8_dynamic", "fp16", "bf16", "int8_static", "int8_weight_only", "int4_weight_only")
LOADS = ("eager", "mmap", "torchscript", "export", "onnxruntime", "litert", "compile", "aoti", "openvino", "executorch")
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
COMPILE_CACHES = ("cold", "warm")
# How the model is called (bench.checks.hygiene): the right way first, then the forgotten ones.
GRAD_MODES = ("inference_mode", "no_grad", "enabled")
MODULE_MODES = ("eval", "train")

# An axis a suite does not set, and a row written before the axis existed, mean the same value: the
# readers' one table (bench.results.record.ROW_DEFAULTS); batch_size and threads are in every row.
AXIS_DEFAULTS: dict[str, Any] = {
    "batch_size": 1,
    "threads": 1,
    **{
        axis: ROW_DEFAULTS[axis]
        for axis in ("interop_threads", "precision", "load", "variant", "grad_mode", "module_mode")
    },
}
# How a non-default grad_mode / module_mode shows in a scenario id.
_MODE_ID_PARTS = {"no_grad": "no_grad", "enabled": "grad_enabled", "train": "train"}
DEFAULT_TIMEOUT_S = 900.0
DEFAULT_MAX_SCENARIOS = 1000
_MAX_YAML_NODES = 100_000
_MAX_YAML_DEPTH = 64  # real suites nest ~6 levels; PyYAML's composer recurses and overflows at ~300
MAX_SUITE_BYTES = 2**20  # real suites are a few KiB; a huge one takes minutes to validate and is copied per run
SLOW_FACTOR = 3  # a steady state may run up to 3x max_time_s to reach min_rounds ...
SLOW_MIN_ROUNDS = 5  # ... beyond that it is cut to this many rounds at least, and flagged
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
LAYOUT_RE = re.compile(r"^([1-9][0-9]{0,3})x([1-9][0-9]{0,3})$")  # instances x threads per instance

Path_ = tuple[Any, ...]  # a location inside the YAML document, e.g. ("matrix", "threads", 1): schema.Where
_YAML_STR_TAG = "tag:yaml.org,2002:str"


def _input_shape(value: Any, where: Path_, context: Context) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value)
    ):
        raise Invalid(
            where, f"expected a list of positive integers without the batch, e.g. [3, 224, 224], got {value!r}"
        )
    return tuple(value)


def _variant(value: Any, where: Path_, context: Context) -> str:
    try:
        pruning.parse_variant(value)
    except ValueError as exc:
        raise Invalid(where, str(exc)) from None
    return value


# The axes that may vary in `matrix`, in the order they appear in a scenario id, and how their
# values are checked; `model`'s check is the validator's (it knows the suite's model sources).
_PRECISION = choice(PRECISIONS)
_AXIS_CHECKS: dict[str, Check] = {
    "batch_size": integer(1),
    "threads": integer(1),
    "interop_threads": integer(1),
    "precision": _PRECISION,
    "load": choice(LOADS),
    "input_shape": _input_shape,
    "seq_len": integer(1),
    "variant": _variant,
    "grad_mode": choice(GRAD_MODES),
    "module_mode": choice(MODULE_MODES),
}
AXES = ("model", *_AXIS_CHECKS)


# ---------------------------------------------------------------- a `model:` mapping (bench.models.sources)

_SOURCE_NAME = "a name of letters, digits, '_' or '.' (it starts the scenario ids)"
_ARCHITECTURE = "a built-in or torchvision model name, or a factory 'package.module:function'"


def _source_name(value: Any, where: Path_, context: Context) -> str:
    if not isinstance(value, str) or not sources.NAME_RE.match(value):
        raise Invalid(where, f"expected {_SOURCE_NAME}, got {value!r}")
    if models.is_known(value):
        raise Invalid(
            where,
            f"'{value}' is already a built-in or torchvision model; pick another name so that "
            "its rows are never taken for that model's",
        )
    return value


def _file(value: Any, where: Path_, context: Context) -> str:
    """A source's file or folder, absolute (relative paths start at the suite's folder)."""
    if not isinstance(value, str) or not value.strip():
        raise Invalid(where, f"expected a path, got {describe(value)}")
    return context.path(value)


def _factory(value: Any, where: Path_, context: Context) -> str:
    if not isinstance(value, str) or not sources.is_factory(value):
        got = repr(value) if isinstance(value, str) and value.strip() else describe(value)
        raise Invalid(where, f"expected 'package.module:function', got {got}")
    return value


def _architecture(value: Any, where: Path_, context: Context) -> str:
    if not isinstance(value, str):
        raise Invalid(where, f"expected {_ARCHITECTURE}; got {describe(value)}")
    if not models.is_known(value) and not sources.is_factory(value):
        hint = difflib.get_close_matches(value, models.known_models(), n=3)
        suggestion = f" Did you mean {', '.join(hint)}?" if hint else ""
        raise Invalid(where, f"unknown architecture '{value}'; expected {_ARCHITECTURE}.{suggestion}")
    return value


def _kwargs(value: Any, where: Path_, context: Context) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise Invalid(where, f"expected a mapping of argument names to values, got {describe(value)}")
    try:  # the worker gets them as JSON: a YAML date, say, would arrive as a string
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise Invalid(where, "values must be numbers, strings, booleans, lists or mappings of those") from None
    return value


def _sha256(value: Any, where: Path_, context: Context) -> str:
    if not (isinstance(value, str) and sources.SHA256_RE.match(value)):
        raise Invalid(where, f"expected 64 hexadecimal digits, got {value!r}")
    return value.lower()


def _inputs(value: Any, where: Path_, context: Context) -> tuple[InputSpec, ...]:
    try:
        return parse_inputs(value)
    except InputsError as exc:
        raise Invalid((*where, *exc.where), str(exc)) from None


def _output(value: Any, where: Path_, context: Context) -> str | int:
    if not (isinstance(value, str) and value) and not (
        isinstance(value, int) and not isinstance(value, bool) and value >= 0
    ):
        raise Invalid(where, f"expected an attribute or key name (e.g. logits) or an index, got {value!r}")
    return value


def _text_file(value: Any, where: Path_, context: Context) -> str:
    if not isinstance(value, str):
        raise Invalid(where, f"expected the path of a text file, got {describe(value)}")
    return context.path(value)


_NOT_TFLITE = tuple(kind for kind in sources.KINDS if kind != "tflite")  # a TFLite file runs as given
# The keys of a `model:` mapping that apply to some kinds of source only: the kinds they apply to.
_KINDS_OF_KEY: dict[str, tuple[str, ...]] = {
    "architecture": sources.WEIGHT_KINDS,
    "kwargs": sources.MODULE_KINDS,
    "trust_pickle": ("checkpoint", "exported_program"),  # the kinds that unpickle
    "trust_code": ("aoti",),
    "saved_precision": tuple(sources.NATIVE_LOAD),
    "sha256": sources.FILE_KINDS,
    "inputs": _NOT_TFLITE,
    "output": _NOT_TFLITE,
    "task": _NOT_TFLITE,
    "text": ("hf",),
    "random_weights": ("hf",),
    "input_shape": tuple(kind for kind in sources.KINDS if kind != "hf"),  # an hf folder's inputs give its shapes
}


@dataclass(frozen=True)
class ModelEntry:
    """A `model:` mapping as written: the user's own model (bench.models.sources). Exactly one key names
    the source and its kind (sources.KINDS); which other keys apply to that kind (_KINDS_OF_KEY)
    and the other rules across keys are `__post_init__`'s. Optional keys default to None, "not
    given", so that a key which does not apply is refused even at its usual value."""

    name: str = key(_source_name, required=f"has no 'name'; expected {_SOURCE_NAME}")
    checkpoint: str | None = key(_file, default=None)
    safetensors: str | None = key(_file, default=None)
    factory: str | None = key(_factory, default=None)
    torchscript: str | None = key(_file, default=None)
    onnx: str | None = key(_file, default=None)
    exported_program: str | None = key(_file, default=None)
    tflite: str | None = key(_file, default=None)
    aoti: str | None = key(_file, default=None)
    hf: str | None = key(_file, default=None)
    architecture: str | None = key(_architecture, default=None)
    kwargs: dict[str, Any] | None = key(_kwargs, default=None)
    input_shape: tuple[int, ...] | None = key(_input_shape, default=None)
    sha256: str | None = key(_sha256, default=None)
    trust_pickle: bool | None = key(flag, default=None)
    trust_code: bool | None = key(flag, default=None)
    saved_precision: str | None = key(_PRECISION, default=None)
    inputs: tuple[InputSpec, ...] | None = key(_inputs, default=None)
    output: str | int | None = key(_output, default=None)
    task: str | None = key(choice(sources.TASKS), default=None)
    text: str | None = key(_text_file, default=None)
    random_weights: bool | None = key(flag, default=None)

    def __post_init__(self) -> None:
        kinds = [kind for kind in sources.KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(sources.KINDS)} (got {', '.join(kinds) or 'none'})")
        kind = kinds[0]
        for name, applies in _KINDS_OF_KEY.items():
            if getattr(self, name) is not None and kind not in applies:
                raise Invalid((name,), f"does not apply to {kind} sources")
        if kind in sources.WEIGHT_KINDS and self.architecture is None:
            raise Invalid(("architecture",), f"a {kind} source needs an architecture: {_ARCHITECTURE}; got nothing")
        if self.kwargs and self.architecture in models.BUILTIN:
            raise Invalid(("kwargs",), f"the built-in model {self.architecture} takes no kwargs")
        if kind == "aoti" and not self.trust_code:
            raise Invalid(("trust_code",), f"is not set: {sources.CODE_RISK}")
        if kind == "hf" or self.task is not None:  # a text model
            for i, spec in enumerate(self.inputs or ()):
                if spec.name in TOKEN_INDEX_INPUTS and not spec.integer:
                    raise Invalid(
                        ("inputs", i, "dtype"),
                        f"{spec.name} indexes an embedding table, so it takes integers: dtype: int64 with "
                        f"range: [0, vocabulary size), not {spec.dtype} (the model's embedding would refuse it "
                        "when it runs)",
                    )
        if kind != "hf" and self.task is not None and not self.inputs:
            raise Invalid(("task",), "applies to models with inputs: (token ids) or hf: folders")
        if self.inputs and self.input_shape is not None:
            raise Invalid(("input_shape",), "does not apply with inputs: (their shapes are given there)")
        known = self.architecture is not None and models.is_known(self.architecture)
        if kind != "hf" and not self.inputs and self.input_shape is None and not known:
            raise ValueError(
                f"needs input_shape: one sample's shape without the batch, e.g. [3, 224, 224] "
                f"(a {kind} source has no default)"
            )

    @property
    def kind(self) -> str:
        return next(kind for kind in sources.KINDS if getattr(self, kind) is not None)

    def source(self, inputs: tuple[InputSpec, ...], search_path: str) -> ModelSource:
        """The model source this entry names; `inputs`: its own, or those its hf: folder gives."""
        kind = self.kind
        architecture = self.factory if kind == "factory" else self.architecture
        # __post_init__ made sure that one without inputs has an input_shape or a known architecture
        input_shape = () if inputs else self.input_shape or models.default_input_shape(str(architecture))
        return ModelSource(
            name=self.name,
            kind=kind,
            input_shape=input_shape,
            path=getattr(self, kind) if kind in sources.FILE_KINDS else None,
            architecture=architecture,
            kwargs=self.kwargs or {},
            sha256=self.sha256,
            trust_pickle=bool(self.trust_pickle),
            trust_code=bool(self.trust_code),
            saved_precision=self.saved_precision or "fp32",
            search_path=search_path,
            inputs=inputs,
            output=self.output,
            task=self.task,
            text=self.text,
            random_weights=bool(self.random_weights),
        )


@dataclass(frozen=True)
class MeasurePolicy:
    """How long and how often the steady state is timed, and how often RSS is sampled (`measure:`)."""

    warmup_rounds: int = key(integer(0), default=5)
    min_rounds: int = key(integer(1), default=30)
    max_rounds: int = key(integer(1), default=10_000)
    max_time_s: float = key(seconds, default=5.0)
    rss_interval_s: float = key(seconds, default=0.01)
    # While the steady state is timed, RSS is flat and every wakeup of the parent's sampler
    # takes CPU from the worker (~0.1 ms each on a VM): sample less often there.
    rss_steady_interval_s: float = key(seconds, default=0.05)

    def __post_init__(self) -> None:
        if self.min_rounds > self.max_rounds:
            raise ValueError("min_rounds is larger than max_rounds")

    def rounds_for(self, estimated_latency_s: float) -> tuple[int, bool]:
        """Rounds to fill `max_time_s` within [min_rounds, max_rounds], and whether time cut them.

        When even min_rounds would take more than SLOW_FACTOR times the budget (a precision
        with no hardware support can be 40x slower), the budget wins: at least
        SLOW_MIN_ROUNDS rounds, flagged, rather than one scenario eating the whole run.
        """
        estimated_latency_s = max(estimated_latency_s, 1e-9)
        wanted = int(self.max_time_s / estimated_latency_s)
        rounds = max(self.min_rounds, min(self.max_rounds, wanted))
        if rounds * estimated_latency_s > SLOW_FACTOR * self.max_time_s:
            return max(SLOW_MIN_ROUNDS, int(SLOW_FACTOR * self.max_time_s / estimated_latency_s)), True
        return rounds, False


_BATCHING_EXAMPLE = "expected e.g. {max_batch: 8, max_delay_ms: 5}"


@dataclass(frozen=True)
class BatchingPolicy:
    """Dynamic batching in server mode (`capacity.batching`): as Triton's dynamic batcher does, an
    instance that takes a request waits for more until it holds `max_batch` or until `max_delay_ms`
    after the first one's arrival, then runs them as one batch."""

    max_batch: int = key(integer(2), required=f"has no 'max_batch'; {_BATCHING_EXAMPLE}")
    max_delay_ms: float = key(
        positive("milliseconds > 0, e.g. 5"), required=f"has no 'max_delay_ms'; {_BATCHING_EXAMPLE}"
    )

    @property
    def label(self) -> str:
        return f"batched (max {self.max_batch}, {self.max_delay_ms:g} ms)"


@dataclass(frozen=True)
class SeqLenMix:
    """A request mix (`capacity.request_mix.seq_len`): each server-mode request's seq_len is drawn from
    `choices` with `weights`, so capacity reflects traffic of mixed lengths (text models)."""

    choices: tuple[int, ...]
    weights: tuple[float, ...]

    @property
    def label(self) -> str:
        total = sum(self.weights)
        return "seq_len " + ", ".join(f"{c} ({w / total:.0%})" for c, w in zip(self.choices, self.weights, strict=True))


_GENERATION_MIX_EXAMPLE = "e.g. {prompt_tokens: [32, 128], new_tokens: [64, 16], weights: [3, 1]}"


@dataclass(frozen=True)
class GenerationMix:
    """A generation request mix (`capacity.request_mix` of a `generate:` scenario): request shape i has
    `prompt_tokens[i]` prompt tokens and `new_tokens[i]` output tokens, drawn with `weights[i]`."""

    prompt_tokens: tuple[int, ...]
    new_tokens: tuple[int, ...]
    weights: tuple[float, ...]

    @property
    def label(self) -> str:
        total = sum(self.weights)
        shapes = zip(self.prompt_tokens, self.new_tokens, self.weights, strict=True)
        return "prompt/new tokens " + ", ".join(f"{p}/{n} ({w / total:.0%})" for p, n, w in shapes)


def _generation_mix(value: dict[str, Any], where: Path_, context: Context) -> GenerationMix:
    """`request_mix: {prompt_tokens: [...], new_tokens: [...], weights: [...]}`: one request shape per position."""
    lists = {}
    for name in ("prompt_tokens", "new_tokens"):
        items = value.get(name)
        if not isinstance(items, list) or not items:
            raise Invalid((*where, name), f"expected a non-empty list of token counts, {_GENERATION_MIX_EXAMPLE}")
        lists[name] = tuple(integer(1)(c, (*where, name, i), context) for i, c in enumerate(items))
    shapes = len(lists["prompt_tokens"])
    if len(lists["new_tokens"]) != shapes:
        raise Invalid(
            (*where, "new_tokens"),
            f"expected one output length per prompt length ({shapes}), got {len(lists['new_tokens'])}: "
            f"request shape i is (prompt_tokens[i], new_tokens[i]), {_GENERATION_MIX_EXAMPLE}",
        )
    weights = value.get("weights", [1] * shapes)
    if not isinstance(weights, list) or len(weights) != shapes:
        raise Invalid((*where, "weights"), f"expected one weight per request shape ({shapes}), got {weights!r}")
    weight = positive("a weight > 0 (relative; they need not sum to 1)")
    numbers = tuple(weight(w, (*where, "weights", i), context) for i, w in enumerate(weights))
    return GenerationMix(lists["prompt_tokens"], lists["new_tokens"], numbers)


def _request_mix(value: Any, where: Path_, context: Context) -> SeqLenMix | GenerationMix:
    """`request_mix: {seq_len: {choices: [...], weights: [...]}}`, shortest first (a batch pads to its longest);
    or, for a `generate:` scenario, a GenerationMix."""
    expect_mapping(value, where, ("seq_len", "prompt_tokens", "new_tokens", "weights"))
    if "seq_len" not in value and ("prompt_tokens" in value or "new_tokens" in value):
        return _generation_mix(value, where, context)
    if "seq_len" not in value:
        raise Invalid(
            where,
            "has no 'seq_len'; expected e.g. {seq_len: {choices: [32, 128], weights: [3, 1]}} (or, for a "
            f"generate: scenario, {_GENERATION_MIX_EXAMPLE})",
        )
    if len(value) > 1:
        other = next(name for name in value if name != "seq_len")
        raise Invalid((*where, other), "goes with prompt_tokens/new_tokens (a generation mix), not with seq_len")
    at = (*where, "seq_len")
    mix = value["seq_len"]
    expect_mapping(mix, at, ("choices", "weights"))
    choices = mix.get("choices")
    if not isinstance(choices, list) or not choices:
        raise Invalid(at, f"expected 'choices', a non-empty list of sequence lengths, got {describe(choices)}")
    lengths = [integer(1)(c, (*at, "choices", i), context) for i, c in enumerate(choices)]
    if len(set(lengths)) != len(lengths):
        raise Invalid((*at, "choices"), f"lists a sequence length twice: {lengths}")
    weights = mix.get("weights", [1] * len(lengths))
    if not isinstance(weights, list) or len(weights) != len(lengths):
        raise Invalid((*at, "weights"), f"expected one weight per choice ({len(lengths)}), got {weights!r}")
    weight = positive("a weight > 0 (relative; they need not sum to 1)")
    numbers = [weight(w, (*at, "weights", i), context) for i, w in enumerate(weights)]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return SeqLenMix(tuple(lengths[i] for i in order), tuple(numbers[i] for i in order))


def _layouts(value: Any, where: Path_, context: Context) -> tuple[str, ...]:
    if value == "auto":
        return ("auto",)
    if not isinstance(value, list) or not value:
        raise Invalid(where, f"expected 'auto' or a non-empty list such as [2x1, 1x2], got {describe(value)}")
    for i, item in enumerate(value):
        if item != "auto" and not (isinstance(item, str) and LAYOUT_RE.match(item)):
            raise Invalid(
                (*where, i),
                "expected a layout 'NxT' (N instances x T threads per instance, e.g. 2x1) or 'auto', "
                + context.got(item, (*where, i)),
            )
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class CapacityPolicy:
    """How a scenario's serving capacity is measured (bench.capacity.host): `capacity:` in a suite."""

    # the latency bound server mode searches against (required, except in a generate: scenario, which is
    # judged on slo_ttft_ms and slo_tpot_ms instead: checked with the scenario, CapacityPolicy.check)
    slo_p99_ms: float | None = key(positive("a latency bound in milliseconds > 0, e.g. 50"), default=None)
    # "NxT": N instances x T threads; auto: every N x T = usable cores
    layouts: tuple[str, ...] = key(_layouts, default=("auto",))
    sweep: bool = key(flag, default=True)  # also measure 1, 2, 4 ... instances of each layout's width (scaling)
    duration_s: float = key(seconds, default=2.0)  # closed-loop and offline runs
    offline_batch_size: int = key(integer(1), default=16)
    # server mode: each step lasts at least step_min_duration_s and has at least step_min_requests
    # requests (0: the verdict alone decides), then runs until its p99 verdict is decided, at most
    # step_max_duration_s
    step_min_duration_s: float = key(seconds, default=1.0)
    step_min_requests: int = key(integer(0), default=0)
    step_max_duration_s: float = key(seconds, default=60.0)
    max_steps: int = key(integer(1), default=12)  # server mode search steps per layout, at most (+ confirming steps)
    tolerance: float = key(fraction, default=0.1)  # stop bisecting when (fail - pass) / pass is at most this
    confidence: float = key(fraction, default=0.95)  # of a step's p99 verdict (bench.capacity.verdict)
    batching: BatchingPolicy | None = key(block(BatchingPolicy), default=None)  # also search with dynamic batching
    # server mode: requests of mixed seq_len (else all the scenario's); a generate: scenario's: prompt and
    # output lengths (GenerationMix)
    request_mix: SeqLenMix | GenerationMix | None = key(_request_mix, default=None)
    # LLM server mode (a generate: scenario): p99 time to first token and p99 time per output token
    slo_ttft_ms: float | None = key(positive("a time to first token bound in milliseconds > 0, e.g. 500"), default=None)
    slo_tpot_ms: float | None = key(
        positive("a time per output token bound in milliseconds > 0, e.g. 100"), default=None
    )

    def __post_init__(self) -> None:
        if self.step_min_duration_s > self.step_max_duration_s:
            raise ValueError("step_min_duration_s is larger than step_max_duration_s")

    @property
    def seq_len_mix(self) -> SeqLenMix | None:
        return self.request_mix if isinstance(self.request_mix, SeqLenMix) else None

    def check(self, generates: bool) -> tuple[str, str] | None:
        """Which key is wrong (or missing) for a scenario that does (or does not) `generate:`, and the message
        for its capacity block; None when all fit."""
        llm = {"slo_ttft_ms": self.slo_ttft_ms, "slo_tpot_ms": self.slo_tpot_ms}
        if not generates:
            given = next((name for name, value in llm.items() if value is not None), None)
            if given:
                return given, f"{given} applies to generate: scenarios (LLM server mode); this one has no generate:"
            if isinstance(self.request_mix, GenerationMix):
                return "request_mix", (
                    "request_mix: prompt_tokens/new_tokens apply to generate: scenarios; use {seq_len: {choices: ...}}"
                )
            if self.slo_p99_ms is None:
                return "slo_p99_ms", "has no 'slo_p99_ms': server mode needs the p99 latency bound to search against"
            return None
        missing = [name for name, value in llm.items() if value is None]
        if missing:
            return missing[0], (
                f"has no '{missing[0]}': a generate: scenario's server mode searches the rate at which p99 time to "
                "first token <= slo_ttft_ms and p99 time per output token <= slo_tpot_ms both hold; give both, "
                "e.g. {slo_ttft_ms: 500, slo_tpot_ms: 100}"
            )
        if self.slo_p99_ms is not None:
            return "slo_p99_ms", (
                "slo_p99_ms does not apply to a generate: scenario: a generation request is judged on its time to "
                "first token (slo_ttft_ms) and time per output token (slo_tpot_ms), not on one call's latency"
            )
        if isinstance(self.request_mix, SeqLenMix):
            return "request_mix", (
                f"request_mix: a generate: scenario's mix gives prompt and output lengths, {_GENERATION_MIX_EXAMPLE}"
            )
        return None


@dataclass(frozen=True)
class CompilePolicy:
    """How `load: compile` compiles the model (bench.runtimes.compile): `compile:` in a suite."""

    mode: str = key(choice(COMPILE_MODES), default="default")  # torch.compile's mode
    dynamic: bool = key(flag, default=False)  # false: shapes are static (a new batch size recompiles); true: dynamic
    # cold: a fresh Inductor cache per scenario; warm: one kept beside the artifact
    cache: str = key(choice(COMPILE_CACHES), default="cold")


@dataclass(frozen=True)
class Scenario:
    """One fully specified point of a suite's matrix."""

    model: str
    batch_size: int
    threads: int
    interop_threads: int
    precision: str
    load: str
    input_shape: tuple[int, ...]
    # The settings: keys of `defaults:` and `include:` entries (SETTINGS); the blocks that merge
    # lay an include entry's keys over the defaults' block, the others replace it.
    measure: MeasurePolicy = key(block(MeasurePolicy), merge=True, default_factory=MeasurePolicy)
    timeout_s: float = key(seconds, default=DEFAULT_TIMEOUT_S)
    max_rss_bytes: int | None = key(byte_size, default=None)  # the parent kills a worker whose RSS goes above it
    seed: int = key(integer(0), default=0)
    profile: bool = key(
        flag, default=False
    )  # after the timed run, profile it in its own process (bench.profile.profiler)
    host_group: str | None = None  # fleet runs: the host group (a Dask worker resource) that measures it
    source: ModelSource | None = None  # the user's own model (bench.models.sources); `model` is then its name
    variant: str = AXIS_DEFAULTS["variant"]  # pruned variants of the model (bench.models.pruning)
    data: DataSpec | None = key(
        block(DataSpec), default=None
    )  # images through the input pipeline (bench.checks.pipeline)
    # after the timed run, measure serving capacity (bench.capacity.host)
    capacity: CapacityPolicy | None = key(block(CapacityPolicy), merge=True, default=None)
    grad_mode: str = AXIS_DEFAULTS["grad_mode"]  # inference_mode, no_grad or enabled (bench.checks.hygiene)
    module_mode: str = AXIS_DEFAULTS["module_mode"]  # eval, or train: the forgotten eval()
    seq_len: int | None = None  # the `seq` dimension of a model's named inputs (bench.suite.inputs)
    # causal-lm: greedy generation after the timed run (bench.checks.generation)
    generate: GeneratePolicy | None = key(block(GeneratePolicy), default=None)
    compile: CompilePolicy | None = key(block(CompilePolicy), merge=True, default=None)  # load: compile; None: defaults
    # int8_static only; None: seeded random inputs (bench.suite.calibration)
    calibration: CalibrationSpec | None = key(block(CalibrationSpec), merge=True, default=None)

    @property
    def id(self) -> str:
        parts = [self.model, f"b{self.batch_size}", f"t{self.threads}", self.precision, self.load]
        # Only non-default extras go into the id, so ids stay short and the same
        # scenario gets the same id in any suite.
        if self.interop_threads != AXIS_DEFAULTS["interop_threads"]:
            parts.append(f"i{self.interop_threads}")
        if self.source is not None and self.source.inputs:
            if self.seq_len is not None:
                parts.append(f"s{self.seq_len}")
        elif self.input_shape != default_input_shape(self.source or self.model):
            parts.append("s" + "x".join(str(d) for d in self.input_shape))
        if self.variant != pruning.DENSE:
            parts.append(self.variant)
        parts += [_MODE_ID_PARTS[m] for m in (self.grad_mode, self.module_mode) if m in _MODE_ID_PARTS]
        scenario_id = "-".join(parts)
        return scenario_id if self.host_group is None else f"{scenario_id}@{self.host_group}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["source"] = self.source.to_dict() if self.source else None
        data["scenario_id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """A scenario from `to_dict()`'s form after JSON (a worker's spec); keys it does not know are dropped."""
        return from_json(cls, data)


# Keys allowed in `defaults` and `include` entries on top of the axes: Scenario's declared keys.
SETTINGS = tuple(keys(Scenario))


# ---------------------------------------------------------------- the top level of a suite file

_SUITE_NAME = "expected a short name of letters, digits, '_', '.' or '-' (it goes into run ids)"


def _suite_name(value: Any, where: Path_, context: Context) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise Invalid(where, f"{_SUITE_NAME}, got {value!r}")
    return value


def _description(value: Any, where: Path_, context: Context) -> str:
    if not isinstance(value, str):
        raise Invalid(where, f"expected text, got {describe(value)}")
    return value


def _defaults(value: Any, where: Path_, context: Context) -> dict[str, Any]:
    """Axes and settings every scenario starts from; their values are the validator's to check."""
    if value is None:  # `defaults:` left empty
        return {}
    expect_mapping(value, where, AXES + SETTINGS)
    return value


def _matrices(value: Any, where: Path_, context: Context) -> tuple[tuple[Path_, dict[str, list[Any]]], ...]:
    """One matrix, or a list of matrices whose scenarios are joined (e.g. per model family), each
    with its place: mappings of axes to non-empty lists, whose values are the validator's to check."""
    if isinstance(value, list) and not value:
        raise Invalid(where, "is an empty list; give at least one matrix")
    placed = [((*where, i), m) for i, m in enumerate(value)] if isinstance(value, list) else [(where, value)]
    for at, matrix in placed:
        expect_mapping(matrix, at, AXES)
        if not matrix:
            raise Invalid(at, "is empty; give at least one axis, e.g. 'model: [tiny_mlp]'")
        for axis, values in matrix.items():
            if not isinstance(values, list) or not values:
                raise Invalid((*at, axis), f"expected a non-empty list of values, got {describe(values)}")
    return tuple(placed)


def _entries(allowed: tuple[str, ...]) -> Check:
    """`exclude:` or `include:`: a list of mappings whose keys are among `allowed`."""

    def check(value: Any, where: Path_, context: Context) -> tuple[dict[str, Any], ...]:
        if value is None:  # left empty
            return ()
        if not isinstance(value, list):
            raise Invalid(where, f"expected a list of mappings, got {describe(value)}")
        for i, entry in enumerate(value):
            expect_mapping(entry, (*where, i), allowed)
        return tuple(value)

    return check


def _host_groups(value: Any, where: Path_, context: Context) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise Invalid(where, f"expected a non-empty list of host group names, got {describe(value)}")
    for i, group in enumerate(value):
        if not isinstance(group, str) or not _NAME_RE.match(group):
            raise Invalid(
                (*where, i),
                "expected a host group name of letters, digits, '_', '.' or '-' (the Dask "
                f"worker resource its workers offer), got {group!r}",
            )
        if value.index(group) != i:
            raise Invalid((*where, i), f"names host group '{group}' twice")
    return tuple(value)


@dataclass(frozen=True, kw_only=True)
class SuiteDocument:
    """The top level of a suite file as written. The axis values inside `defaults`, `matrix`,
    `exclude` and `include` are the validator's to check (a `model:` value may name a source
    defined earlier in the suite); the settings are read by Scenario's declared keys."""

    name: str = key(_suite_name, default="")  # "": not given, refused at the key as a bad name is
    description: str = key(_description, default="")
    defaults: dict[str, Any] = key(_defaults, default_factory=dict)
    matrix: tuple[tuple[Path_, dict[str, list[Any]]], ...] = key(
        _matrices, required="has no 'matrix'; expected a mapping of axes to lists of values"
    )
    exclude: tuple[dict[str, Any], ...] = key(_entries(AXES), default=())
    include: tuple[dict[str, Any], ...] = key(_entries(AXES + SETTINGS), default=())
    hosts: tuple[str, ...] = key(_host_groups, default=())  # host groups: fleet runs (bench.measure.fleet)

    def __post_init__(self) -> None:
        if not self.name:
            raise Invalid(("name",), f"{_SUITE_NAME}, got None")


TOP_KEYS = tuple(keys(SuiteDocument))


@dataclass(frozen=True)
class Suite:
    path: Path
    name: str
    description: str
    scenarios: tuple[Scenario, ...]
    text: str  # the file as written, kept in every run folder
    hosts: tuple[str, ...] = ()  # host groups: every scenario runs once on each (fleet runs only)


def default_input_shape(model: str | ModelSource) -> tuple[int, ...]:
    """A model name's or a model source's input shape, the one a scenario id leaves out."""
    return model.input_shape if isinstance(model, ModelSource) else models.default_input_shape(model)


def load_suite(path: str | Path, *, max_scenarios: int = DEFAULT_MAX_SCENARIOS) -> Suite:
    """Read, validate and expand a suite file. Raises SuiteError on any problem."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)  # at most this much, whatever the file (a FIFO, /dev/zero)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise SuiteError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(str(path), f"cannot be read: {exc}") from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(
            str(path),
            f"is larger than {MAX_SUITE_BYTES >> 20} MiB, the most a suite file may be; a suite lists "
            "axes that expand to scenarios and needs only a few KiB",
        )
    return parse_suite(text, str(path), max_scenarios=max_scenarios, file_path=path)


def parse_suite(
    text: str,
    source: str = "<suite>",
    *,
    max_scenarios: int = DEFAULT_MAX_SCENARIOS,
    file_path: Path | None = None,
    base_dir: Path | None = None,
) -> Suite:
    """`base_dir`: where the suite's relative model paths start (default: the suite file's folder)."""
    doc, lines, written = _load_yaml(text, source)
    file_path = file_path or Path(source)
    base_dir = (base_dir or file_path.parent).absolute()
    validator = _Validator(source, lines, base_dir, written)
    try:
        return validator.suite(doc, text, max_scenarios, file_path)
    except Invalid as exc:  # a check of the schema (bench.schema): placed on its line here
        raise validator.fail(exc.where, exc.message) from None


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Path_, int], dict[Path_, str]]:
    """Parse YAML safely; remember the line of every key and list item, and the text of every value
    YAML read as something other than a string (0x1 is the number 1, no is false), for messages."""
    try:
        _check_depth(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise SuiteError(source, f"is not valid YAML: {problem}", line=line) from None
    lines: dict[Path_, int] = {}
    written: dict[Path_, str] = {}
    if root is not None:
        _index_lines(root, (), lines, written, [0], source)
    return doc, lines, written


def _check_depth(text: str, source: str) -> None:
    """Refuse a document nested deeper than _MAX_YAML_DEPTH before anything recursive reads it.

    PyYAML's parser is a state machine (no recursion); its composer and constructor recurse."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_YAML_DEPTH:
                raise SuiteError(
                    source,
                    f"nests mappings and lists more than {_MAX_YAML_DEPTH} levels deep; a suite needs a handful",
                    line=event.start_mark.line + 1,
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _index_lines(
    node: yaml.Node, where: Path_, lines: dict[Path_, int], written: dict[Path_, str], count: list[int], source: str
) -> None:
    count[0] += 1
    if count[0] > _MAX_YAML_NODES:
        # Alias chains can make a small file expand to billions of nodes.
        raise SuiteError(source, f"expands to more than {_MAX_YAML_NODES} YAML nodes; refusing to read it")
    lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode) and node.tag != _YAML_STR_TAG:
        written.setdefault(where, node.value)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            name = key_node.value
            lines.setdefault((*where, name), key_node.start_mark.line + 1)
            _index_lines(value_node, (*where, name), lines, written, count, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*where, index), lines, written, count, source)


class _Validator:
    """Checks a parsed document; every failure is a SuiteError with file, line and field."""

    def __init__(self, source: str, lines: dict[Path_, int], base_dir: Path, written: dict[Path_, str]):
        self.source = source
        self.lines = lines
        self.context = Context(base_dir, written)
        self.model_sources: dict[str, ModelSource] = {}  # by name: a name means one source in a suite
        self.max_positions: dict[str, int] = {}  # hf sources: the longest sequence their config allows

    def fail(self, where: Path_, message: str) -> SuiteError:
        line = None
        for depth in range(len(where), -1, -1):
            if where[:depth] in self.lines:
                line = self.lines[where[:depth]]
                break
        field_name = ".".join(str(p) for p in where) or None
        return SuiteError(self.source, message, line=line, field=field_name)

    def suite(self, doc: Any, text: str, max_scenarios: int, file_path: Path) -> Suite:
        if doc is None:
            raise self.fail((), "is empty; expected a mapping with at least 'name' and 'matrix'")
        top: SuiteDocument = read(SuiteDocument, doc, (), self.context)
        base = {k: self.axis_value(k, v, ("defaults", k)) for k, v in top.defaults.items() if k in AXES}
        base_settings = self.settings(top.defaults, ("defaults",), {})
        grids = [(where, self.grid(matrix, where)) for where, matrix in top.matrix]
        for i, rule in enumerate(top.exclude):
            for axis, value in rule.items():
                self.axis_value(axis, value, ("exclude", i, axis))

        points: list[tuple[Path_, dict[str, Any], dict[str, Any]]] = []
        total = sum(math.prod(len(values) for values in axes.values()) for _, axes in grids)
        if total > max_scenarios:
            raise self.fail(
                ("matrix",),
                f"expands to {total} scenarios, more than the limit of {max_scenarios}; "
                "split the suite or raise the limit (bench run --max-scenarios)",
            )
        for where, axes in grids:
            for combo in itertools.product(*axes.values()):
                point = {**base, **dict(zip(axes, combo, strict=True))}
                if not any(_matches(rule, point) for rule in top.exclude):
                    points.append((where, point, base_settings))
        for i, extra in enumerate(top.include):
            point = {**base}
            point.update({k: self.axis_value(k, v, ("include", i, k)) for k, v in extra.items() if k in AXES})
            points.append((("include", i), point, self.settings(extra, ("include", i), base_settings)))
        if not points:
            raise self.fail(("exclude",), "removes every scenario of the matrix; nothing would run")
        if len(points) > max_scenarios:
            raise self.fail((), f"has {len(points)} scenarios, more than the limit of {max_scenarios}")

        scenarios: list[Scenario] = []
        seen: dict[str, Path_] = {}
        for where, point, settings in points:
            scenario = self.scenario(point, settings, where)
            if scenario.id in seen:
                raise self.fail(
                    where,
                    f"gives scenario '{scenario.id}' a second time (first from "
                    f"{'.'.join(map(str, seen[scenario.id]))}); remove the duplicate",
                )
            seen[scenario.id] = where
            scenarios.append(scenario)
        if top.hosts:
            scenarios = [dataclasses.replace(s, host_group=group) for group in top.hosts for s in scenarios]
            if len(scenarios) > max_scenarios:
                raise self.fail(("hosts",), f"gives {len(scenarios)} scenarios, more than the limit of {max_scenarios}")
        return Suite(file_path, top.name, top.description, tuple(scenarios), text, top.hosts)

    def grid(self, matrix: dict[str, list[Any]], where: Path_) -> dict[str, list[Any]]:
        """One matrix's axes (their structure checked by SuiteDocument) and their validated values."""
        return {
            axis: [self.axis_value(axis, v, (*where, axis, i)) for i, v in enumerate(values)]
            for axis, values in matrix.items()
        }

    def settings(self, entry: dict[str, Any], where: Path_, inherited: dict[str, Any]) -> dict[str, Any]:
        """The settings a `defaults:` or `include:` entry gives, typed, over those it inherits."""
        return {**inherited, **read_keys(Scenario, entry, where, self.context, inherited)}

    def axis_value(self, key: str, value: Any, where: Path_) -> Any:
        """An axis value, checked; `model` here (it knows the suite's model sources), the others by _AXIS_CHECKS."""
        if key == "model":
            if isinstance(value, dict):
                return self.model_source(value, where)
            if not isinstance(value, str):
                raise self.fail(where, f"expected a model name or a model source (a mapping), got {describe(value)}")
            if value in self.model_sources:  # a source defined earlier in the suite, by its name
                return self.model_sources[value]
            if not models.is_known(value):
                hint = difflib.get_close_matches(value, [*models.known_models(), *self.model_sources], n=3)
                suggestion = f" Did you mean {', '.join(hint)}?" if hint else ""
                raise self.fail(
                    where,
                    f"unknown model '{value}'; expected a built-in model ({', '.join(models.BUILTIN)}), "
                    f"a torchvision classification model name (see 'bench models'), or a mapping for your own "
                    f"model, e.g. {{name: mine, checkpoint: mine.pth, architecture: resnet18}}.{suggestion}",
                )
            return value
        return _AXIS_CHECKS[key](value, where, self.context)

    def model_source(self, value: dict[str, Any], where: Path_) -> ModelSource:
        """A `model:` mapping (ModelEntry): the user's own model (see bench.models.sources), its files checked."""
        entry: ModelEntry = read(ModelEntry, value, where, self.context)
        inputs = entry.inputs or ()
        if entry.hf is not None:
            try:  # the folder's own files decide the rest (bench.models.hf)
                facts = hf.check_entry(Path(entry.hf), entry.task, inputs, entry.text, bool(entry.random_weights))
            except hf.EntryError as exc:
                raise self.fail((*where, *exc.where), str(exc)) from None
            inputs = facts.inputs
            if facts.max_positions is not None:
                self.max_positions[entry.name] = facts.max_positions
        source = entry.source(inputs, str(self.context.base_dir))
        known = self.model_sources.get(source.name)
        if known is not None and known != source:
            raise self.fail((*where, "name"), f"'{source.name}' names a different model source earlier in the suite")
        if known is None:
            # Refused before anything runs: a missing, empty or changed file, a factory that does
            # not import. Reading the file's contents waits for the run (it needs torch / onnx).
            try:
                if source.kind in sources.FILE_KINDS:
                    sources.check_file(source)
                if source.architecture and sources.is_factory(source.architecture):
                    sources.resolve_factory(source)
            except SourceError as exc:
                raise self.fail((*where, exc.field), str(exc)) from None
            self.model_sources[source.name] = source
        return source

    def capacity_keys(self, block: Path_) -> set[str]:
        """The keys written in the capacity block at `block` (their lines are known)."""
        return {str(path[len(block)]) for path in self.lines if len(path) > len(block) and path[: len(block)] == block}

    def scenario(self, point: dict[str, Any], settings: dict[str, Any], where: Path_) -> Scenario:
        if "model" not in point:
            raise self.fail(where, "has no model; set 'model' in the matrix, in defaults or in this entry")
        source = point["model"] if isinstance(point["model"], ModelSource) else None
        values = {**AXIS_DEFAULTS, **_source_defaults(source), **point}
        values["model"] = source.name if source else point["model"]
        if source is not None and source.inputs:
            values["input_shape"] = self.named_input_shape(source, point, settings, where)
        elif "seq_len" in point:
            raise self.fail(
                where, "seq_len applies to models with inputs: that have a 'seq' dimension (or hf: folders)"
            )
        elif settings.get("capacity") and settings["capacity"].seq_len_mix:
            raise self.fail(
                where,
                f"capacity.request_mix varies seq_len, which applies to models with inputs: that "
                f"have a 'seq' dimension (or hf: folders); {values['model']} takes one tensor",
            )
        if "generate" in settings and (source is None or source.task != "causal-lm"):
            raise self.fail(
                where, f"generate: applies to causal-lm models (task: causal-lm); {values['model']} is not one"
            )
        capacity: CapacityPolicy | None = settings.get("capacity")
        if capacity is not None and (wrong := capacity.check("generate" in settings)):
            # where the capacity block was written: this include entry's, else the defaults'
            block = next((w for w in ((*where, "capacity"), ("defaults", "capacity")) if w in self.lines), where)
            name, message = wrong
            raise self.fail((*block, name) if name in self.capacity_keys(block) else block, message)
        values.setdefault("input_shape", default_input_shape(source or values["model"]))
        scenario = Scenario(source=source, **settings, **values)
        calibration = scenario.calibration or CalibrationSpec()
        if scenario.precision == "int8_static" and (
            reason := check_calibration(calibration, scenario.input_shape, scenario.data, scenario.source)
        ):
            raise self.fail(where, f"scenario '{scenario.id}': {reason}")
        if scenario.data is not None and (reason := check_data_spec(scenario.data, scenario.input_shape)):
            raise self.fail(where, f"scenario '{scenario.id}': {reason}")
        hygiene = (scenario.grad_mode, scenario.module_mode) != (GRAD_MODES[0], MODULE_MODES[0])
        extras = [key for key in ("profile", "capacity", "data") if settings.get(key)]
        if hygiene and extras:
            # Profiles and capacity load the model again in processes of their own, in eval() under inference_mode.
            raise self.fail(
                where,
                f"scenario '{scenario.id}': {' and '.join(extras)} is measured in eval() under "
                "inference_mode only; leave grad_mode and module_mode at their defaults there",
            )
        return scenario

    def named_input_shape(
        self, source: ModelSource, point: dict[str, Any], settings: dict[str, Any], where: Path_
    ) -> tuple[int, ...]:
        """The first named input's shape at the scenario's seq_len: the record's input_shape."""
        if "input_shape" in point:
            raise self.fail(
                where,
                f"input_shape does not apply to {source.name}: its inputs: give the shapes (vary seq_len instead)",
            )
        seq_len = point.get("seq_len")
        if uses_seq(source.inputs) and seq_len is None:
            raise self.fail(where, f"{source.name}'s inputs have a 'seq' dimension: set seq_len (an axis), e.g. [128]")
        if seq_len is not None and not uses_seq(source.inputs):
            raise self.fail(where, f"seq_len applies to inputs with a 'seq' dimension; {source.name}'s have none")
        capacity: CapacityPolicy | None = settings.get("capacity")
        mix = capacity.seq_len_mix if capacity else None
        if mix and not uses_seq(source.inputs):
            raise self.fail(
                where, f"capacity.request_mix varies seq_len; {source.name}'s inputs have no 'seq' dimension"
            )
        limit = self.max_positions.get(source.name)
        longest_mixed = max(mix.choices) if mix else 0
        if limit is not None and longest_mixed > limit:
            raise self.fail(
                where,
                f"capacity.request_mix has seq_len {longest_mixed}, more than {source.name}'s "
                f"maximum positions ({limit}, from its config.json)",
            )
        generate: GeneratePolicy | None = settings.get("generate")
        new = generate.new_tokens if generate else None
        longest = (seq_len or 0) + (new or 0)
        shapes = capacity.request_mix if capacity and generate else None
        if limit is not None and isinstance(shapes, GenerationMix):
            for i, (prompt, out) in enumerate(zip(shapes.prompt_tokens, shapes.new_tokens, strict=True)):
                if prompt + out > limit:
                    raise self.fail(
                        (*where, "capacity", "request_mix", "prompt_tokens", i),
                        f"capacity.request_mix's request shape {i} ({prompt} prompt + {out} new tokens = "
                        f"{prompt + out}) is more than {source.name}'s maximum positions ({limit}, from its "
                        "config.json)",
                    )
        if limit is not None and longest > limit:
            asked = f"seq_len {seq_len}" + (f" plus generate.new_tokens ({new}) is {longest}," if new else " is")
            raise self.fail(
                where, f"{asked} more than {source.name}'s maximum positions ({limit}, from its config.json)"
            )
        return source.inputs[0].sample_shape(seq_len)


def _matches(rule: dict[str, Any], point: dict[str, Any]) -> bool:
    """Whether a point (possibly relying on defaults) has every value an exclude rule names."""

    model = point.get("model")
    source = model if isinstance(model, ModelSource) else None

    def value_of(key: str) -> Any:
        if key in point:
            return point[key].name if key == "model" and source else point[key]
        if key == "input_shape" and model is not None:
            return default_input_shape(model)
        return _source_defaults(source).get(key, AXIS_DEFAULTS.get(key))

    def wanted(key: str, value: Any) -> Any:
        if key == "input_shape":
            return tuple(value)
        return value.name if isinstance(value, ModelSource) else value

    return all(value_of(k) == wanted(k, v) for k, v in rule.items())


def _source_defaults(source: ModelSource | None) -> dict[str, Any]:
    """A compiled file runs as saved: its load mode and precision are the defaults of its scenarios."""
    if source is None or not source.compiled:
        return {}
    return {"load": source.native_load, "precision": source.saved_precision}
