"""The suite schema (bench.schema): each block's keys declared once on its dataclass, one reader."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import bench
from bench.checks.generation import GeneratePolicy
from bench.checks.pipeline import DataSpec
from bench.errors import SuiteError
from bench.models import sources
from bench.schema import Context, Invalid, block, from_json, integer, key, keys, read
from bench.suite.calibration import CalibrationSpec
from bench.suite.scenarios import (
    _KINDS_OF_KEY,
    SETTINGS,
    TOP_KEYS,
    BatchingPolicy,
    CapacityPolicy,
    CompilePolicy,
    MeasurePolicy,
    ModelEntry,
    Scenario,
    SeqLenMix,
    SuiteDocument,
    parse_suite,
)

BLOCKS = (
    MeasurePolicy,
    CapacityPolicy,
    BatchingPolicy,
    CompilePolicy,
    GeneratePolicy,
    CalibrationSpec,
    DataSpec,
    ModelEntry,
    SuiteDocument,
)


@pytest.mark.parametrize("cls", BLOCKS, ids=lambda cls: cls.__name__)
def test_every_field_of_a_suite_block_is_a_declared_key(cls):
    # a field added without its check would be refused in every suite as an unknown key
    assert list(keys(cls)) == [f.name for f in dataclasses.fields(cls)]


def test_a_model_entry_has_one_key_per_kind_of_source_and_its_kind_rules_name_its_keys():
    # a kind added to bench.models.sources without its key here could never be written in a suite
    assert [name for name in keys(ModelEntry) if name in sources.KINDS] == list(sources.KINDS)
    assert set(_KINDS_OF_KEY) < set(keys(ModelEntry)) - set(sources.KINDS)
    assert all(set(kinds) <= set(sources.KINDS) for kinds in _KINDS_OF_KEY.values())


def test_the_top_level_keys_are_the_suite_documents_declared_keys():
    assert TOP_KEYS == ("name", "description", "defaults", "matrix", "exclude", "include", "hosts")


def test_the_settings_are_the_scenarios_declared_keys():
    assert set(SETTINGS) == {
        "measure",
        "timeout_s",
        "max_rss_bytes",
        "seed",
        "profile",
        "capacity",
        "data",
        "generate",
        "compile",
        "calibration",
    }
    assert set(keys(Scenario)) == set(SETTINGS)


@dataclasses.dataclass(frozen=True)
class _Inner:
    size: int = key(integer(1), required="has no 'size': how big, e.g. 2")
    count: int = key(integer(0), default=0)


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner | None = key(block(_Inner), merge=True, default=None)
    other: _Inner | None = key(block(_Inner), default=None)
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.inner and self.other and self.inner.size < self.other.size:
            raise ValueError("inner.size is smaller than other.size")
        if self.inner and self.other and self.other.count > 10 * self.inner.size:
            raise Invalid(("other", "count"), "is more than ten times inner.size")


def test_the_reader_merges_replaces_requires_and_places_every_error(tmp_path: Path):
    context = Context(tmp_path)
    base = read(_Outer, {"inner": {"size": 3, "count": 1}, "other": {"size": 2, "count": 5}}, ("top",), context)
    again = read(_Outer, {"inner": {"count": 2}, "other": {"size": 1}}, ("inc",), context, base)
    assert again.inner == _Inner(3, 2)  # merged over the inherited block
    assert again.other == _Inner(1, 0)  # replaced
    cases = [
        ({"inner": {"count": 1}}, ("x", "inner"), "has no 'size': how big"),
        ({"inner": {"size": 0}}, ("x", "inner", "size"), "expected an integer >= 1, got 0"),
        ({"inner": {"sise": 2}}, ("x", "inner", "sise"), "unknown key 'sise'; did you mean 'size'?"),
        ({"inner": [2]}, ("x", "inner"), "expected a mapping, got a list"),
        ({"inner": {"size": 1}, "other": {"size": 2}}, ("x",), "inner.size is smaller than other.size"),
        ({"inner": {"size": 1}, "other": {"size": 1, "count": 11}}, ("x", "other", "count"), "is more than ten"),
        ({"shape": [1]}, ("x", "shape"), "unknown key 'shape'"),  # a field without a check is not a suite key
    ]
    for value, where, message in cases:
        with pytest.raises(Invalid) as info:
            read(_Outer, value, ("x",), context)
        assert (info.value.where, message in info.value.message) == (where, True), info.value.message


def test_from_json_rebuilds_tuples_and_nested_blocks_and_drops_unknown_keys():
    policy = CapacityPolicy(
        slo_p99_ms=5.0,
        layouts=("2x1", "auto"),
        batching=BatchingPolicy(4, 2.0),
        request_mix=SeqLenMix((8, 64), (3.0, 1.0)),
    )
    data = json.loads(json.dumps({**dataclasses.asdict(policy), "from_a_newer_bench": 1}))
    again = from_json(CapacityPolicy, data)
    assert again == policy and isinstance(again.layouts, tuple) and isinstance(again.request_mix.choices, tuple)
    assert from_json(DataSpec, {"folder": "/x", "mean": [0.5, 0.5, 0.5]}).mean == (0.5, 0.5, 0.5)


def test_a_data_block_without_a_folder_names_the_block(tmp_path: Path):
    text = "name: d\ndefaults:\n  data: {resize: 32}\nmatrix: {model: [tiny_cnn]}\n"
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "d.yaml", base_dir=tmp_path)
    assert (info.value.line, info.value.field) == (3, "defaults.data")
    assert info.value.message.startswith("has no 'folder': the path of an image folder")


def test_an_include_replaces_the_generate_block_and_merges_the_calibration_block(tmp_path: Path):
    text = (
        "name: g\ndefaults:\n  calibration: {samples: 8}\n  compile: {mode: max-autotune-no-cudagraphs}\n"
        "matrix: {model: [tiny_cnn]}\n"
        "include:\n  - {model: tiny_cnn, batch_size: 2, calibration: {source: random}, compile: {cache: warm}}\n"
    )
    plain, included = parse_suite(text, "g.yaml", base_dir=tmp_path).scenarios
    assert plain.calibration == CalibrationSpec(samples=8)
    assert included.calibration == CalibrationSpec(source="random", samples=8)
    assert included.compile == CompilePolicy(mode="max-autotune-no-cudagraphs", cache="warm")


def test_the_schemas_names_are_imported_from_bench_schema_never_through_a_module_that_uses_them():
    # bench.results.record imports from_json for its own rows; bench.measure.runner took it from there
    root = Path(bench.__file__).parent.parent
    imports: dict[str, list[ast.ImportFrom]] = {}  # module name: its `from ... import ...` statements
    for path in sorted([*root.glob("bench/**/*.py"), *root.glob("tests/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        imports[module] = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    from_schema = {
        module: {alias.name for node in nodes if node.module == "bench.schema" for alias in node.names}
        for module, nodes in imports.items()
    }
    through = [
        f"{module}: from {node.module} import {alias.name}"
        for module, nodes in imports.items()
        for node in nodes
        for alias in node.names
        if alias.name in from_schema.get(node.module or "", ())
    ]
    assert through == []
