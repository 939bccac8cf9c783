"""The suite's schema: every key of a suite block declared once, on its dataclass, and one reader.

A block of a suite (`measure:`, `capacity:`, `data:`, …) is a frozen dataclass whose fields
carry their check in the field's metadata: `key(check, default=…)`, or `key(check,
required="…")` for a key the block cannot do without. A check turns the YAML value into the
field's typed value, or raises `Invalid` naming where in the document the value is and what
was expected. The dataclass's `__post_init__` holds the rules across fields: it raises
ValueError for one the reader reports at the block (min_rounds above max_rounds), or `Invalid`
whose `where` is relative to the block for one that concerns a key (a `model:` entry's
`trust_pickle` that does not apply to its kind of source). An optional key whose presence
matters to such a rule defaults to None: None is "not given".

`read(cls, value, where, context, inherited)` is the one reader: it refuses what is not a
mapping and unknown keys (with a "did you mean"), runs each given key's check in the order
written, lays the given keys over an inherited block (a `defaults:` block under an `include:`
entry's) and names a missing required key. `from_json(cls, data)` is the way back from a
dataclass's `asdict` form after a trip through JSON (a worker's spec, a results.jsonl row): by
the type hints, tuples and nested dataclasses are rebuilt and keys it does not know are dropped.

Nothing here knows a file or a line: bench.suite.scenarios turns `Invalid.where` into both from the
YAML line table it keeps. This module imports nothing of bench, so the modules that declare
blocks (bench.checks.pipeline, bench.checks.generation, bench.suite.calibration) stay free of the suite's.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Where = tuple[Any, ...]  # a location inside the YAML document, e.g. ("matrix", "threads", 1)
Check = Callable[[Any, Where, "Context"], Any]
CHECK = "suite_check"  # the field metadata keys
REQUIRED = "suite_required"
MERGE = "suite_merge"
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b|b)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class Invalid(ValueError):
    """A value of the suite that its schema refuses; `where` is its place in the document."""

    def __init__(self, where: Where, message: str):
        super().__init__(message)
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Context:
    """What checks need beyond the value: where the suite's relative paths start, and what was
    written where YAML read a value as another type than a string (`0x1` is the number 1, `no` false)."""

    base_dir: Path
    written: Mapping[Where, str] = dataclasses.field(default_factory=dict)

    def path(self, text: str) -> str:
        """A suite's path, absolute: `~` expanded, relative paths from the suite's folder."""
        path = Path(os.path.expanduser(text))
        return str(path if path.is_absolute() else (self.base_dir / path).absolute())

    def got(self, value: Any, where: Where) -> str:
        """`got <value>`, with what was written when YAML read it as another type (`0x1` as the number 1)."""
        text = self.written.get(where)
        if text is None or text.lower() == str(value).lower():
            return f"got {value!r}"
        return f"got {value!r}: YAML reads {text} as {describe(value)}; to give {text} as written, quote it: '{text}'"


def key(check: Check, *, required: str | None = None, merge: bool = False, **field_args: Any) -> Any:
    """A dataclass field that is a key of a suite block. `required`: the message when it is missing
    (at the block). `merge`: a nested block given again lays its keys over the inherited one."""
    return dataclasses.field(metadata={CHECK: check, REQUIRED: required, MERGE: merge}, **field_args)


@functools.cache
def keys(cls: type) -> Mapping[str, dataclasses.Field[Any]]:
    """The fields of `cls` that are suite keys, in declaration order (read once per class)."""
    return types.MappingProxyType({f.name: f for f in dataclasses.fields(cls) if CHECK in f.metadata})


def describe(value: Any) -> str:
    """A value as a message shows what was found: its type, and itself when it is short."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def expect_mapping(value: Any, where: Where, allowed: tuple[str, ...]) -> None:
    """Refuse a value that is not a mapping, and the first key not in `allowed` (with a suggestion)."""
    if not isinstance(value, dict):
        raise Invalid(where, f"expected a mapping, got {describe(value)}")
    for name in value:
        if name not in allowed:
            hint = difflib.get_close_matches(str(name), allowed, n=1)
            suggestion = f"did you mean '{hint[0]}'? " if hint else ""
            raise Invalid((*where, name), f"unknown key '{name}'; {suggestion}allowed here: {', '.join(allowed)}")


def read_keys(
    cls: type, value: Mapping[str, Any], where: Where, context: Context, inherited: Mapping[str, Any]
) -> dict[str, Any]:
    """The typed value of each key of `value` that `cls` declares, in the order written; other keys
    are left to the caller. A merging nested block is read over `inherited`'s."""
    declared = keys(cls)
    out: dict[str, Any] = {}
    for name, raw in value.items():
        spec = declared.get(name)
        if spec is None:
            continue
        check, at = spec.metadata[CHECK], (*where, name)
        if spec.metadata[MERGE]:
            out[name] = check(raw, at, context, inherited.get(name))
        else:
            out[name] = check(raw, at, context)
    return out


def read(cls: type, value: Any, where: Where, context: Context, inherited: Any = None) -> Any:
    """A block of the suite as an instance of `cls`, laid over `inherited` (an instance) if given."""
    declared = keys(cls)
    expect_mapping(value, where, tuple(declared))
    base = {} if inherited is None else {name: getattr(inherited, name) for name in declared}
    given = {**base, **read_keys(cls, value, where, context, base)}
    for name, spec in declared.items():
        if name not in given and spec.metadata[REQUIRED]:
            raise Invalid(where, spec.metadata[REQUIRED])
    try:
        return cls(**given)
    except Invalid as exc:  # a rule across fields that names a key of the block
        raise Invalid((*where, *exc.where), exc.message) from None
    except ValueError as exc:  # a rule across fields, from the class's __post_init__
        raise Invalid(where, str(exc)) from None


def block(cls: type) -> Callable[..., Any]:
    """The check of a nested block: `key(block(Policy))`, or `key(block(Policy), merge=True)`."""

    def check(value: Any, where: Where, context: Context, inherited: Any = None) -> Any:
        return read(cls, value, where, context, inherited)

    return check


def integer(minimum: int) -> Check:
    def check(value: Any, where: Where, context: Context) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise Invalid(where, f"expected an integer >= {minimum}, got {value!r}")
        return value

    return check


def positive(expected: str) -> Check:
    """A finite number > 0, as a float; `expected` says what it is, e.g. "milliseconds > 0, e.g. 5"."""

    def check(value: Any, where: Where, context: Context) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
            raise Invalid(where, f"expected {expected}, got {value!r}")
        return float(value)

    return check


seconds = positive("a finite number of seconds > 0")


def fraction(value: Any, where: Where, context: Context) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
        raise Invalid(where, f"expected a fraction between 0 and 1 (e.g. 0.1 for 10 %), got {value!r}")
    return float(value)


def flag(value: Any, where: Where, context: Context) -> bool:
    if not isinstance(value, bool):
        raise Invalid(where, f"expected true or false, got {describe(value)}")
    return value


def choice(allowed: tuple[str, ...]) -> Check:
    def check(value: Any, where: Where, context: Context) -> str:
        if value not in allowed:
            raise Invalid(where, f"expected one of {', '.join(allowed)}, {context.got(value, where)}")
        return value

    return check


def byte_size(value: Any, where: Where, context: Context) -> int:
    """Bytes as an integer or a string such as '2 GiB' or '512MB'."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE_RE.match(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise Invalid(where, f"expected a size in bytes, e.g. 2147483648 or '2 GiB', got {value!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def from_json(hint: Any, value: Any) -> Any:
    """A JSON value as type `hint`, e.g. a dataclass from its `asdict` form after a trip through JSON:
    nested dataclasses (keys they do not know dropped, missing ones at their defaults), tuples,
    lists and dict values rebuilt by the type hints, optionals, a union of dataclasses (the first
    whose fields hold every key); anything else as it is."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(inner) == 1:
            return from_json(inner[0], value)
        fits = [
            arg
            for arg in inner
            if isinstance(arg, type) and dataclasses.is_dataclass(arg) and isinstance(value, Mapping)
            if set(value) <= set(field_types(arg))
        ]
        return from_json(fits[0], value) if fits else value
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return origin(from_json(args[0], item) for item in value)
        return tuple(from_json(arg, item) for arg, item in zip(args, value, strict=True))
    if origin is dict and isinstance(value, Mapping):
        value_hint = typing.get_args(hint)[1]
        return {key: from_json(value_hint, item) for key, item in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        hints = field_types(hint)
        return hint(**{name: from_json(hints[name], item) for name, item in value.items() if name in hints})
    return value


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's fields and their types, read once (typing.get_type_hints evaluates the annotations)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in names}
