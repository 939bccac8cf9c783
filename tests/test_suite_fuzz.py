"""Property-based: any YAML document is either a valid suite or a SuiteError with a message."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.errors import SuiteError
from bench.suite.scenarios import AXES, SETTINGS, TOP_KEYS, parse_suite

# Model-source keys too, so that `model:` mappings (bench.models.sources) are fuzzed as well.
SOURCE_KEYS = ["checkpoint", "onnx", "factory", "architecture", "kwargs", "sha256", "trust_pickle", "saved_precision"]
KEYS = st.sampled_from(
    [*TOP_KEYS, *AXES, *SETTINGS, *SOURCE_KEYS, "warmup_rounds", "min_rounds", "max_time_s", "bogus", "<<"]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["tiny_mlp", "tiny_cnn", "fp32", "bf16", "eager", "mmap", "x", "", "tiny_mlp/../x", "m:f", "a" * 64, "x\0y"]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=25,
)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=6)


def _check(text: str) -> None:
    try:
        suite = parse_suite(text, "fuzz.yaml", max_scenarios=50)
    except SuiteError as exc:
        assert str(exc).startswith("fuzz.yaml") and exc.message
    else:
        assert suite.scenarios and all(s.id for s in suite.scenarios)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_mapping_is_a_suite_or_a_suite_error(document):
    _check(yaml.safe_dump(document))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_suite_or_a_suite_error(text):
    _check(text)
