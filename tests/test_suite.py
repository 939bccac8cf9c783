"""Suite files: parsing, validation with precise locations, expansion and scenario ids.

Most tests use the built-in models (tiny_mlp, tiny_cnn) so that no torchvision import
happens. The few that name a torchvision model (an unknown-model suggestion, resnet18)
share one cached import of torchvision per session.
"""

from __future__ import annotations

import contextlib
import json
import signal
import textwrap
import time
from pathlib import Path

import pytest

from bench.errors import SuiteError, UserError
from bench.suite.scenarios import (
    DEFAULT_MAX_SCENARIOS,
    DEFAULT_TIMEOUT_S,
    SLOW_FACTOR,
    SLOW_MIN_ROUNDS,
    MeasurePolicy,
    Scenario,
    load_suite,
    parse_suite,
)


def suite_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def parse(text: str, **kwargs):
    return parse_suite(suite_text(text), "s.yaml", **kwargs)


def parse_error(text: str, **kwargs) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        parse(text, **kwargs)
    return info.value


def ids(suite) -> list[str]:
    return [s.id for s in suite.scenarios]


# --------------------------------------------------------------------------- valid suites

VALID = """
name: demo
description: two tiny models
defaults:
  precision: fp32
  measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.5}
matrix:
  model: [tiny_mlp, tiny_cnn]
  batch_size: [1, 4]
  threads: [1, 2]
"""


def test_valid_suite_expands_in_matrix_order_first_key_outermost():
    suite = parse(VALID)
    assert suite.name == "demo"
    assert suite.description == "two tiny models"
    assert ids(suite) == [
        "tiny_mlp-b1-t1-fp32-eager",
        "tiny_mlp-b1-t2-fp32-eager",
        "tiny_mlp-b4-t1-fp32-eager",
        "tiny_mlp-b4-t2-fp32-eager",
        "tiny_cnn-b1-t1-fp32-eager",
        "tiny_cnn-b1-t2-fp32-eager",
        "tiny_cnn-b4-t1-fp32-eager",
        "tiny_cnn-b4-t2-fp32-eager",
    ]
    assert suite.text == suite_text(VALID)


def test_matrix_key_order_decides_nesting():
    suite = parse(
        """
        name: order
        matrix:
          threads: [1, 2]
          model: [tiny_mlp, tiny_cnn]
        """
    )
    assert ids(suite) == [
        "tiny_mlp-b1-t1-fp32-eager",
        "tiny_cnn-b1-t1-fp32-eager",
        "tiny_mlp-b1-t2-fp32-eager",
        "tiny_cnn-b1-t2-fp32-eager",
    ]


def test_defaults_apply_to_every_scenario():
    suite = parse(
        """
        name: defaults
        defaults:
          batch_size: 2
          precision: bf16
          load: mmap
          timeout_s: 60
          seed: 7
          measure: {warmup_rounds: 0, min_rounds: 3, max_rounds: 9, max_time_s: 0.5, rss_interval_s: 0.02}
        matrix:
          model: [tiny_mlp, tiny_cnn]
        """
    )
    expected_measure = MeasurePolicy(warmup_rounds=0, min_rounds=3, max_rounds=9, max_time_s=0.5, rss_interval_s=0.02)
    assert ids(suite) == ["tiny_mlp-b2-t1-bf16-mmap", "tiny_cnn-b2-t1-bf16-mmap"]
    for scenario in suite.scenarios:
        assert scenario.batch_size == 2
        assert scenario.threads == 1
        assert scenario.interop_threads == 1
        assert scenario.timeout_s == 60.0
        assert scenario.seed == 7
        assert scenario.measure == expected_measure
    assert suite.scenarios[0].input_shape == (64,)
    assert suite.scenarios[1].input_shape == (3, 32, 32)


def test_built_in_defaults_when_nothing_is_set():
    (scenario,) = parse("name: bare\nmatrix: {model: [tiny_cnn]}\n").scenarios
    assert scenario == Scenario(
        model="tiny_cnn",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load="eager",
        input_shape=(3, 32, 32),
        measure=MeasurePolicy(),
        timeout_s=DEFAULT_TIMEOUT_S,
        seed=0,
    )


def test_matrix_overrides_defaults():
    suite = parse(
        """
        name: override
        defaults: {threads: 4, model: tiny_cnn}
        matrix:
          threads: [2]
        """
    )
    assert ids(suite) == ["tiny_cnn-b1-t2-fp32-eager"]


def test_exclude_removes_matching_points():
    suite = parse(
        VALID
        + """
exclude:
  - {model: tiny_cnn, batch_size: 4}
  - {threads: 2, batch_size: 1}
"""
    )
    assert ids(suite) == [
        "tiny_mlp-b1-t1-fp32-eager",
        "tiny_mlp-b4-t1-fp32-eager",
        "tiny_mlp-b4-t2-fp32-eager",
        "tiny_cnn-b1-t1-fp32-eager",
    ]


def test_exclude_on_an_axis_left_at_its_default_matches():
    suite = parse(
        """
        name: ex
        matrix:
          model: [tiny_mlp]
          threads: [1, 2]
        exclude:
          - {interop_threads: 1, threads: 2}
        """
    )
    assert ids(suite) == ["tiny_mlp-b1-t1-fp32-eager"]


def test_exclude_on_default_input_shape_matches():
    suite = parse(
        """
        name: ex
        matrix:
          model: [tiny_mlp, tiny_cnn]
        exclude:
          - {input_shape: [3, 32, 32]}
        """
    )
    assert ids(suite) == ["tiny_mlp-b1-t1-fp32-eager"]


def test_include_adds_scenarios_with_their_own_measure_settings():
    suite = parse(
        VALID
        + """
include:
  - model: tiny_mlp
    batch_size: 16
    timeout_s: 30
    measure: {min_rounds: 50, max_time_s: 2}
  - {model: tiny_cnn, interop_threads: 2}
"""
    )
    assert len(suite.scenarios) == 10
    first_include, second_include = suite.scenarios[-2:]
    assert first_include.id == "tiny_mlp-b16-t1-fp32-eager"
    # Settings in the entry are merged over the defaults' measure block.
    assert first_include.measure == MeasurePolicy(warmup_rounds=1, min_rounds=50, max_time_s=2.0)
    assert first_include.timeout_s == 30.0
    assert second_include.id == "tiny_cnn-b1-t1-fp32-eager-i2"
    assert second_include.measure == MeasurePolicy(warmup_rounds=1, min_rounds=3, max_time_s=0.5)
    assert second_include.timeout_s == DEFAULT_TIMEOUT_S
    # Matrix scenarios keep the defaults.
    assert suite.scenarios[0].measure == MeasurePolicy(warmup_rounds=1, min_rounds=3, max_time_s=0.5)


def test_include_alone_can_rescue_an_emptied_matrix():
    suite = parse(
        """
        name: inc
        matrix:
          model: [tiny_mlp]
        exclude:
          - {model: tiny_mlp}
        include:
          - {model: tiny_cnn, threads: 3}
        """
    )
    assert ids(suite) == ["tiny_cnn-b1-t3-fp32-eager"]


# --------------------------------------------------------------------------- scenario ids


def make_scenario(**overrides) -> Scenario:
    values = dict(
        model="tiny_cnn",
        batch_size=8,
        threads=2,
        interop_threads=1,
        precision="fp32",
        load="eager",
        input_shape=(3, 32, 32),
    )
    values.update(overrides)
    return Scenario(**values)


def test_scenario_id_torchvision_model_default_shape():
    # default_input_shape of a torchvision name needs no torchvision import.
    assert make_scenario(model="resnet18", input_shape=(3, 224, 224)).id == "resnet18-b8-t2-fp32-eager"


def test_scenario_id_adds_non_default_interop_threads_and_input_shape():
    assert make_scenario(model="resnet18", input_shape=(3, 224, 224), interop_threads=2).id == (
        "resnet18-b8-t2-fp32-eager-i2"
    )
    assert make_scenario(model="resnet18", input_shape=(3, 64, 64)).id == "resnet18-b8-t2-fp32-eager-s3x64x64"
    assert make_scenario(interop_threads=2, input_shape=(3, 64, 64), precision="int8_dynamic", load="mmap").id == (
        "tiny_cnn-b8-t2-int8_dynamic-mmap-i2-s3x64x64"
    )


def test_scenario_id_ignores_settings():
    plain = make_scenario()
    tuned = make_scenario(measure=MeasurePolicy(min_rounds=1), timeout_s=5.0, seed=3)
    assert plain.id == tuned.id == "tiny_cnn-b8-t2-fp32-eager"


def test_scenario_ids_are_the_same_in_any_suite():
    a = parse("name: a\nmatrix: {model: [tiny_mlp], threads: [2], input_shape: [[64], [128]]}\n")
    b = parse(
        """
        name: b
        defaults: {seed: 3, measure: {min_rounds: 5}}
        matrix:
          model: [tiny_cnn, tiny_mlp]
          threads: [4]
        include:
          - {model: tiny_mlp, threads: 2, input_shape: [128]}
          - {model: tiny_mlp, threads: 2}
        """
    )
    assert ids(a) == ["tiny_mlp-b1-t2-fp32-eager", "tiny_mlp-b1-t2-fp32-eager-s128"]
    assert set(ids(a)) <= set(ids(b))


def test_scenario_explicit_default_shape_gets_no_suffix():
    (scenario,) = parse("name: s\nmatrix: {model: [tiny_mlp], input_shape: [[64]]}\n").scenarios
    assert scenario.input_shape == (64,)
    assert scenario.id == "tiny_mlp-b1-t1-fp32-eager"


def test_resnet18_suite_parses():
    suite = parse(
        """
        name: rn
        matrix:
          model: [resnet18]
          batch_size: [8]
          threads: [2]
          input_shape: [[3, 224, 224], [3, 64, 64]]
        """
    )
    assert ids(suite) == ["resnet18-b8-t2-fp32-eager", "resnet18-b8-t2-fp32-eager-s3x64x64"]


def test_scenario_dict_round_trip():
    scenario = make_scenario(
        interop_threads=2,
        input_shape=(3, 64, 64),
        measure=MeasurePolicy(warmup_rounds=2, min_rounds=4, max_rounds=8, max_time_s=1.5, rss_interval_s=0.05),
        timeout_s=12.0,
        seed=9,
    )
    data = scenario.to_dict()
    assert data["scenario_id"] == scenario.id
    assert data["input_shape"] == [3, 64, 64]
    assert data["measure"]["min_rounds"] == 4
    assert Scenario.from_dict(data) == scenario
    # And through JSON, as the worker's spec.json carries it.
    again = Scenario.from_dict(json.loads(json.dumps(data)))
    assert again == scenario
    assert isinstance(again.input_shape, tuple)
    assert isinstance(again.measure, MeasurePolicy)


def test_scenario_from_dict_ignores_unknown_keys_and_defaults_settings():
    scenario = Scenario.from_dict(
        {
            "model": "tiny_mlp",
            "batch_size": 1,
            "threads": 1,
            "interop_threads": 1,
            "precision": "fp32",
            "load": "eager",
            "input_shape": [64],
            "scenario_id": "whatever",
            "from_the_future": True,
        }
    )
    assert scenario == make_scenario(model="tiny_mlp", batch_size=1, threads=1, input_shape=(64,))


@pytest.mark.parametrize(
    ("latency_s", "expected"),
    [
        (0.4, (30, False)),  # 12 rounds wanted, raised to min_rounds (12 s <= 3 x 5 s budget)
        (0.5, (30, False)),  # exactly SLOW_FACTOR x the budget: still min_rounds
        (0.1, (50, False)),  # 50 rounds fill max_time_s
        (0.01, (500, False)),
        (1e-4, (1000, False)),  # 50_000 wanted, capped at max_rounds
        (0.0, (1000, False)),  # no division by zero
        (-1.0, (1000, False)),
        (1.0, (15, True)),  # min_rounds would take 30 s: cut to what fits in 3 x 5 s, flagged
        (1e9, (SLOW_MIN_ROUNDS, True)),  # never fewer than SLOW_MIN_ROUNDS
    ],
)
def test_rounds_for_clamps_to_min_and_max_rounds(latency_s, expected):
    assert SLOW_FACTOR == 3
    policy = MeasurePolicy(min_rounds=30, max_rounds=1000, max_time_s=5.0)
    assert policy.rounds_for(latency_s) == expected


# --------------------------------------------------------------------------- bad input


def test_yaml_syntax_error_reports_line():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp]
          threads: [1]
          batch_size: [1, 2]: x
        """
    )
    assert err.line == 5
    assert err.field is None
    assert "not valid YAML" in err.message
    assert "mapping values are not allowed" in err.message
    assert "s.yaml, line 5" in str(err)


def test_yaml_tab_indentation_reports_line():
    err = parse_error("name: demo\nmatrix:\n  model: [tiny_mlp]\n\tthreads: [1]\n")
    assert err.line == 4
    assert "not valid YAML" in err.message


def test_suite_error_is_a_user_error_with_exit_code_2():
    err = parse_error("name: demo\nmatrx: {model: [tiny_mlp]}\n")
    assert isinstance(err, UserError)
    assert err.exit_code == 2
    assert err.path == "s.yaml"


def test_unknown_top_level_key_suggests_the_right_one():
    err = parse_error(
        """
        name: demo
        description: x
        matrx:
          model: [tiny_mlp]
        """
    )
    assert err.line == 3
    assert err.field == "matrx"
    assert "unknown key 'matrx'" in err.message
    assert "did you mean 'matrix'?" in err.message
    assert "s.yaml, line 3, field 'matrx'" in str(err)


def test_unknown_key_without_close_match_lists_allowed_keys():
    err = parse_error("name: demo\nzzzzzz: 1\nmatrix: {model: [tiny_mlp]}\n")
    assert err.line == 2
    assert err.field == "zzzzzz"
    assert "did you mean" not in err.message
    assert "allowed here: name, description, defaults, matrix, exclude, include" in err.message


@pytest.mark.parametrize(
    ("text", "line", "field", "fragment"),
    [
        (
            """
            name: demo
            defaults:
              precision: fp32
              precison: bf16
            matrix:
              model: [tiny_mlp]
            """,
            4,
            "defaults.precison",
            "did you mean 'precision'?",
        ),
        (
            """
            name: demo
            matrix:
              model: [tiny_mlp]
              thread: [1, 2]
            """,
            4,
            "matrix.thread",
            "did you mean 'threads'?",
        ),
        (
            # measure is a setting, not an axis: not allowed in the matrix
            """
            name: demo
            matrix:
              model: [tiny_mlp]
              measure: [1]
            """,
            4,
            "matrix.measure",
            "unknown key 'measure'",
        ),
        (
            """
            name: demo
            defaults:
              measure:
                warmup_rounds: 1
                min_round: 3
            matrix:
              model: [tiny_mlp]
            """,
            5,
            "defaults.measure.min_round",
            "did you mean 'min_rounds'?",
        ),
        (
            """
            name: demo
            matrix:
              model: [tiny_mlp]
            include:
              - model: tiny_cnn
                measure: {max_time: 2}
            """,
            6,
            "include.0.measure.max_time",
            "did you mean 'max_time_s'?",
        ),
        (
            """
            name: demo
            matrix:
              model: [tiny_mlp, tiny_cnn]
            exclude:
              - {modle: tiny_cnn}
            """,
            5,
            "exclude.0.modle",
            "did you mean 'model'?",
        ),
    ],
    ids=["defaults", "matrix", "matrix-setting", "measure", "include-measure", "exclude"],
)
def test_unknown_nested_key(text, line, field, fragment):
    err = parse_error(text)
    assert err.line == line
    assert err.field == field
    assert fragment in err.message


@pytest.mark.parametrize(
    ("defaults_line", "field", "fragment"),
    [
        ("batch_size: eight", "defaults.batch_size", "expected an integer >= 1, got 'eight'"),
        ("threads: 0", "defaults.threads", "expected an integer >= 1, got 0"),
        ("batch_size: true", "defaults.batch_size", "expected an integer >= 1, got True"),
        ("batch_size: 2.0", "defaults.batch_size", "expected an integer >= 1, got 2.0"),
        ("interop_threads: -1", "defaults.interop_threads", "expected an integer >= 1, got -1"),
        ("input_shape: [3, -1]", "defaults.input_shape", "expected a list of positive integers"),
        ("input_shape: [3, true]", "defaults.input_shape", "expected a list of positive integers"),
        ("input_shape: []", "defaults.input_shape", "expected a list of positive integers"),
        ("input_shape: 64", "defaults.input_shape", "expected a list of positive integers"),
        ("precision: fp64", "defaults.precision", "int8_static, int8_weight_only, int4_weight_only, got 'fp64'"),
        (
            "precision: no",
            "defaults.precision",
            "got False: YAML reads no as bool False; to give no as written, quote it: 'no'",
        ),
        (
            "load: pickle",
            "defaults.load",
            "expected one of eager, mmap, torchscript, export, onnxruntime, litert, compile, aoti, openvino, "
            "executorch, got 'pickle'",
        ),
        ("model: 5", "defaults.model", "expected a model name or a model source (a mapping), got int 5"),
        ("timeout_s: 0", "defaults.timeout_s", "expected a finite number of seconds > 0, got 0"),
        ("timeout_s: true", "defaults.timeout_s", "expected a finite number of seconds > 0, got True"),
        ("seed: -1", "defaults.seed", "expected an integer >= 0, got -1"),
        ("measure: {min_rounds: 0}", "defaults.measure.min_rounds", "expected an integer >= 1, got 0"),
        ("measure: {warmup_rounds: -1}", "defaults.measure.warmup_rounds", "expected an integer >= 0, got -1"),
        ("measure: {rss_interval_s: 0}", "defaults.measure.rss_interval_s", "expected a finite number of seconds > 0"),
        ("measure: {min_rounds: 10, max_rounds: 5}", "defaults.measure", "min_rounds is larger than max_rounds"),
        ("measure: 5", "defaults.measure", "expected a mapping, got int 5"),
    ],
)
def test_wrong_types_in_defaults(defaults_line, field, fragment):
    text = f"name: demo\nmatrix:\n  model: [tiny_mlp]\ndefaults:\n  {defaults_line}\n"
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "s.yaml")
    err = info.value
    assert err.line == 5
    assert err.field == field
    assert fragment in err.message


def test_wrong_type_in_matrix_list_points_at_the_item_line():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp]
          threads:
            - 1
            - 0
        """
    )
    assert err.line == 6
    assert err.field == "matrix.threads.1"
    assert "expected an integer >= 1, got 0" in err.message


def test_wrong_type_in_flow_list():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp]
          batch_size: [1, "eight"]
        """
    )
    assert err.line == 4
    assert err.field == "matrix.batch_size.1"
    assert "got 'eight'" in err.message


def test_bad_precision_in_matrix():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp]
          precision: [fp32, int8]
        """
    )
    assert err.line == 4
    assert err.field == "matrix.precision.1"
    expected = "fp32, int8_dynamic, fp16, bf16, int8_static, int8_weight_only, int4_weight_only"
    assert f"expected one of {expected}, got 'int8'" in err.message


def test_unknown_model_suggests_close_name():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp, resnet81]
        """
    )
    assert err.line == 3
    assert err.field == "matrix.model.1"
    assert "unknown model 'resnet81'" in err.message
    assert "Did you mean resnet18" in err.message
    assert "tiny_mlp, tiny_cnn" in err.message


def test_unknown_builtin_model_suggests_builtin():
    err = parse_error("name: demo\nmatrix:\n  model: [tiny_mpl]\n")
    assert err.field == "matrix.model.0"
    assert "Did you mean tiny_mlp" in err.message


def test_empty_matrix():
    err = parse_error("name: demo\nmatrix: {}\n")
    assert err.line == 2
    assert err.field == "matrix"
    assert "is empty" in err.message


def test_null_matrix():
    err = parse_error("name: demo\nmatrix:\n")
    assert err.line == 2
    assert err.field == "matrix"
    assert "expected a mapping, got nothing" in err.message


def test_missing_matrix():
    err = parse_error("name: demo\ndefaults: {model: tiny_mlp}\n")
    assert err.line == 1
    assert err.field is None
    assert "has no 'matrix'" in err.message


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("2", "got int 2"), ("[]", "got a list"), ("", "got nothing"), ("{a: 1}", "got a mapping")],
)
def test_matrix_value_not_a_non_empty_list(value, fragment):
    err = parse_error(f"name: demo\nmatrix:\n  model: [tiny_mlp]\n  threads: {value}\n")
    assert err.line == 4
    assert err.field == "matrix.threads"
    assert "expected a non-empty list of values" in err.message
    assert fragment in err.message


def test_missing_name():
    err = parse_error(
        """
        description: no name
        matrix:
          model: [tiny_mlp]
        """
    )
    assert err.line == 1  # no 'name' key: the document's first line
    assert err.field == "name"
    assert "expected a short name" in err.message
    assert "got None" in err.message


@pytest.mark.parametrize("name", ["'my suite'", "'-leading'", "'a/b'", "42", "''"])
def test_bad_name(name):
    err = parse_error(f"description: x\nname: {name}\nmatrix: {{model: [tiny_mlp]}}\n")
    assert err.line == 2
    assert err.field == "name"
    assert "expected a short name" in err.message


def test_missing_model_anywhere():
    err = parse_error("name: demo\nmatrix:\n  threads: [1, 2]\n")
    assert err.line == 2
    assert err.field == "matrix"
    assert "has no model" in err.message


def test_exclude_that_removes_everything():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp, tiny_cnn]
          threads: [1, 2]
        exclude:
          - {threads: 1}
          - {threads: 2}
        """
    )
    assert err.line == 5
    assert err.field == "exclude"
    assert "removes every scenario" in err.message


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("defaults: []\n", "defaults", "expected a mapping, got a list"),
        ("exclude: {}\n", "exclude", "expected a list of mappings, got a mapping"),
        ("include: 0\n", "include", "expected a list of mappings, got int 0"),
        ("hosts: ''\n", "hosts", "expected a non-empty list of host group names"),
    ],
)
def test_an_empty_value_of_the_wrong_kind_is_refused_at_the_top_level(text, field, fragment):
    err = parse_error(f"name: demo\nmatrix: {{model: [tiny_mlp]}}\n{text}")
    assert (err.line, err.field) == (3, field)
    assert fragment in err.message


def test_top_level_keys_left_empty_are_taken_as_not_given():
    suite = parse("name: demo\ndescription: d\ndefaults:\nmatrix: {model: [tiny_mlp]}\nexclude:\ninclude:\nhosts:\n")
    assert [s.id for s in suite.scenarios] == ["tiny_mlp-b1-t1-fp32-eager"] and suite.hosts == ()


def test_exclude_not_a_list():
    err = parse_error("name: demo\nmatrix: {model: [tiny_mlp]}\nexclude: {model: tiny_mlp}\n")
    assert err.line == 3
    assert err.field == "exclude"
    assert "expected a list of mappings, got a mapping" in err.message


def test_exclude_with_bad_value_is_validated():
    err = parse_error("name: demo\nmatrix: {model: [tiny_mlp]}\nexclude:\n  - {threads: zero}\n")
    assert err.line == 4
    assert err.field == "exclude.0.threads"
    assert "expected an integer >= 1, got 'zero'" in err.message


def test_duplicate_scenario_via_include():
    err = parse_error(
        """
        name: demo
        matrix:
          model: [tiny_mlp]
          threads: [1, 2]
        include:
          - {model: tiny_cnn}
          - {model: tiny_mlp, threads: 2, measure: {min_rounds: 3}}
        """
    )
    assert err.line == 7
    assert err.field == "include.1"
    assert "gives scenario 'tiny_mlp-b1-t2-fp32-eager' a second time" in err.message
    assert "first from matrix" in err.message


def test_duplicate_scenario_in_matrix_values():
    err = parse_error("name: demo\nmatrix:\n  model: [tiny_mlp]\n  threads: [2, 2]\n")
    assert err.field == "matrix"
    assert err.line == 2
    assert "'tiny_mlp-b1-t2-fp32-eager' a second time" in err.message


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging when parsing does not stop (an unbounded expansion)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"still parsing after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_billion_laughs_is_refused_quickly():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "\n".join(lines) + "\nname: bomb\nmatrix: {model: [tiny_mlp]}\n"
    started = time.perf_counter()
    with pytest.raises(SuiteError) as info, deadline(10.0):
        parse_suite(text, "bomb.yaml")
    elapsed = time.perf_counter() - started
    assert elapsed < 3.0
    assert "YAML nodes" in info.value.message
    assert "refusing" in info.value.message
    assert info.value.path == "bomb.yaml"


def test_aliases_in_a_normal_suite_are_fine():
    suite = parse(
        """
        name: alias
        matrix:
          model: &models [tiny_mlp, tiny_cnn]
        include:
          - {model: tiny_mlp, threads: 2}
        """
    )
    assert len(suite.scenarios) == 3


def test_matrix_larger_than_max_scenarios_is_refused():
    started = time.perf_counter()
    err = parse_error(
        """
        name: big
        matrix:
          model: [tiny_mlp, tiny_cnn]
          batch_size: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
          threads: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        """,
        max_scenarios=100,
    )
    assert time.perf_counter() - started < 2.0
    assert err.line == 2
    assert err.field == "matrix"
    assert "expands to 200 scenarios, more than the limit of 100" in err.message


def test_default_max_scenarios_refuses_a_huge_matrix_without_expanding_it():
    values = "[" + ", ".join(str(i) for i in range(1, 101)) + "]"
    started = time.perf_counter()
    err = parse_error(
        f"name: huge\nmatrix:\n  model: [tiny_mlp]\n  batch_size: {values}\n  threads: {values}\n"
        f"  interop_threads: {values}\n"
    )
    assert time.perf_counter() - started < 2.0
    assert err.field == "matrix"
    assert f"expands to 1000000 scenarios, more than the limit of {DEFAULT_MAX_SCENARIOS}" in err.message


def test_matrix_at_the_limit_is_accepted_and_include_over_it_refused():
    text = "name: edge\nmatrix:\n  model: [tiny_mlp, tiny_cnn]\n  threads: [1, 2, 3, 4, 5]\n"
    assert len(parse_suite(text, "s.yaml", max_scenarios=10).scenarios) == 10
    with pytest.raises(SuiteError) as info:
        parse_suite(text + "include:\n  - {model: tiny_mlp, threads: 6}\n", "s.yaml", max_scenarios=10)
    assert "has 11 scenarios, more than the limit of 10" in info.value.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text):
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "empty.yaml")
    err = info.value
    assert err.line is None
    assert err.field is None
    assert "is empty" in err.message
    assert str(err).startswith("empty.yaml: ")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "str 'just text'")])
def test_document_not_a_mapping(text, kind):
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "s.yaml")
    assert info.value.line == 1
    assert f"expected a mapping, got {kind}" in info.value.message


# --------------------------------------------------------------------------- load_suite


def test_load_suite_reads_file(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text(suite_text(VALID), encoding="utf-8")
    suite = load_suite(path)
    assert suite.path == path
    assert suite.text == suite_text(VALID)
    assert len(suite.scenarios) == 8
    assert load_suite(str(path)).scenarios == suite.scenarios


def test_load_suite_errors_name_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: demo\nmatrix:\n  model: [tiny_mlp]\n  thread: [1]\n", encoding="utf-8")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert info.value.path == str(path)
    assert info.value.line == 4
    assert str(info.value).startswith(f"{path}, line 4, field 'matrix.thread': ")


def test_load_suite_passes_max_scenarios(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(VALID), encoding="utf-8")
    with pytest.raises(SuiteError, match="more than the limit of 4"):
        load_suite(path, max_scenarios=4)


def test_load_suite_missing_file(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert info.value.path == str(path)
    assert info.value.line is None
    assert "no such file" in info.value.message


def test_load_suite_not_utf8(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: d\xe9mo\n".encode("latin-1"))
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert "cannot be read" in info.value.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2 GiB", 2 * 2**30), ("512MB", 512 * 10**6), ("1.5 kib", 1536), (4096, 4096), ("100 B", 100)],
)
def test_max_rss_bytes_accepts_sizes_with_units(value, expected):
    text = f"name: s\ndefaults: {{max_rss_bytes: {value!r}}}\nmatrix: {{model: [tiny_mlp]}}\n"
    (scenario,) = parse_suite(text, "s.yaml").scenarios
    assert scenario.max_rss_bytes == expected


@pytest.mark.parametrize("value", ["'lots'", "0", "-5", "'2 parsecs'", "true", "'0 GiB'"])
def test_max_rss_bytes_rejects_what_is_not_a_size(value):
    text = f"name: s\ndefaults: {{max_rss_bytes: {value}}}\nmatrix: {{model: [tiny_mlp]}}\n"
    with pytest.raises(SuiteError) as caught:
        parse_suite(text, "s.yaml")
    assert caught.value.field == "defaults.max_rss_bytes" and caught.value.line == 2
    assert "expected a size in bytes" in caught.value.message
