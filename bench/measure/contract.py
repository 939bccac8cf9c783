"""Typed messages across a process boundary: one dataclass per message, JSON on the wire.

A child process (the timed worker, a serving instance, a profile) and its parent agree on
a dataclass, never on string keys. `encode` writes every field of a message, nested
dataclasses as JSON objects. `decode` reads a JSON value back as that dataclass and raises
ContractError when a field is unknown, missing, or of another type than declared: a field
renamed on one side fails the first test that crosses the boundary, instead of arriving as
a null in every row.

Stored rows are another matter: bench.schema.from_json reads those leniently (a row written
by an older bench lacks newer fields). Both sides of a process boundary are the same code, so
here any difference is a bug.

`build` is for the child's own side, where a library hands over a plain dict (fidelity,
generation, contention figures): it makes the dataclass, refuses an unknown key as
`decode` does, and lets a field that the dict leaves out take its default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from bench.schema import field_types

T = TypeVar("T")


class ContractError(ValueError):
    """A message that does not match its dataclass; the text names where, which field and what was expected."""


def encode(message: Any) -> str:
    """One message as JSON, every field written (None as null)."""
    return json.dumps(dataclasses.asdict(message), indent=1)


def write(path: Path, message: Any) -> None:
    path.write_text(encode(message), encoding="utf-8")


def read(cls: type[T], path: Path) -> T:
    """The message in `path`, as `cls`; ContractError when it does not match."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ContractError(f"{path}: not JSON ({exc})") from exc
    return decode(cls, value, str(path))


def encode_line(message: Any) -> bytes:
    """One message of a stream (commands and replies over a pipe): its class name and fields, one line."""
    return (json.dumps({"message": type(message).__name__, "fields": dataclasses.asdict(message)}) + "\n").encode()


def decode_line(line: bytes | str, classes: tuple[type, ...], where: str = "message") -> Any:
    """A line from encode_line as whichever of `classes` it names; ContractError for any other."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ContractError(f"{where}: not JSON ({exc}): {line[:120]!r}") from exc
    if not isinstance(value, dict) or set(value) != {"message", "fields"}:
        raise ContractError(f"{where}: expected {{message, fields}}, got {_kind(value)}")
    by_name = {cls.__name__: cls for cls in classes}
    if value["message"] not in by_name:
        raise ContractError(f"{where}: unknown message {value['message']!r} (expected {', '.join(by_name)})")
    return decode(by_name[value["message"]], value["fields"], f"{where} {value['message']}")


def decode(cls: type[T], value: Any, where: str = "message") -> T:
    """A JSON value as `cls`: every field present, none unknown, each of its declared type."""
    return _convert(cls, value, where, complete=True)


def build(cls: type[T], value: dict[str, Any], where: str = "message") -> T:
    """`cls` from a dict that may leave defaulted fields out; an unknown key still fails."""
    return _convert(cls, value, where, complete=False)


def _convert(hint: Any, value: Any, where: str, complete: bool) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        problems = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, where, complete)
            except ContractError as exc:
                problems.append(str(exc))
        raise ContractError(problems[0] if len(problems) == 1 else f"{where}: expected {hint}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ContractError(f"{where}: expected a list, got {_kind(value)}")
        return [_convert(args[0], item, f"{where}[{i}]", complete) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise ContractError(f"{where}: expected an object, got {_kind(value)}")
        return {key: _convert(args[1], item, f"{where}.{key}", complete) for key, item in value.items()}
    if dataclasses.is_dataclass(hint):
        return _dataclass(hint, value, where, complete)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ContractError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {_kind(value)}")


def _dataclass(cls: Any, value: Any, where: str, complete: bool) -> Any:
    if dataclasses.is_dataclass(value) and isinstance(value, cls):
        return value  # already built (a child's own figures)
    if not isinstance(value, dict):
        raise ContractError(f"{where}: expected a {cls.__name__} object, got {_kind(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        names = ", ".join(fields)
        raise ContractError(f"{where}: unknown field(s) {', '.join(unknown)} for {cls.__name__} (its fields: {names})")
    required = [name for name, f in fields.items() if complete or _no_default(f)]
    missing = [name for name in required if name not in value]
    if missing:
        raise ContractError(f"{where}: {cls.__name__} is missing field(s) {', '.join(missing)}")
    hints = field_types(cls)
    return cls(**{name: _convert(hints[name], item, f"{where}.{name}", complete) for name, item in value.items()})


def _no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"[:120]
