"""Server mode beyond one request per call: dynamic batching (how an instance forms a batch, what a step
records) and request mixes of several seq_lens; and their suite blocks."""

from __future__ import annotations

import json
import os
import shutil
import time
from array import array
from pathlib import Path

import numpy as np
import pytest

from bench import runtimes
from bench.capacity.host import InstanceGroup, batch_size_counts, request_choices, server_step
from bench.capacity.instance import REQUEST, STOP, _take_batch
from bench.capacity.loadgen import StepLimits
from bench.schema import from_json
from bench.suite.scenarios import BatchingPolicy, CapacityPolicy, SeqLenMix, SuiteError, load_suite, parse_suite

pytestmark = pytest.mark.serial  # batching waits are timed


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def send(write_fd: int, *numbers: int) -> None:
    for number in numbers:
        os.write(write_fd, REQUEST.pack(number))


def scheduled(at_s: float, requests: int = 16) -> array:
    return array("d", [at_s] * requests)


def test_queued_requests_past_their_delay_go_at_once_up_to_max_batch(pipe):
    read_fd, write_fd = pipe
    send(write_fd, 0, 1, 2, 3, 4)
    long_ago = scheduled(time.monotonic() - 10)
    assert _take_batch(read_fd, long_ago, 0, max_batch=3, max_delay_s=0.005) == ([0, 1, 2], False)
    assert _take_batch(read_fd, long_ago, 0, max_batch=3, max_delay_s=0.005) == ([3, 4], False)


def test_a_lone_request_waits_for_company_until_the_delay_after_its_arrival(pipe):
    read_fd, write_fd = pipe
    send(write_fd, 7)
    started = time.monotonic()
    numbers, stopped = _take_batch(read_fd, scheduled(started), 0, max_batch=8, max_delay_s=0.05)
    assert (numbers, stopped) == ([7], False)
    assert time.monotonic() - started >= 0.05 - 1e-3  # it waited the delay (a lower bound: never flaky)


def test_a_stop_ends_the_batch_and_is_taken_alone(pipe):
    read_fd, write_fd = pipe
    send(write_fd, 1, STOP, STOP)
    assert _take_batch(read_fd, scheduled(time.monotonic() + 60), 0, max_batch=8, max_delay_s=60) == ([1], True)
    assert os.read(read_fd, 64) == REQUEST.pack(STOP)  # the other instance's STOP is still there


def testbatch_size_counts_count_batches_not_requests():
    # requests 0-3 in one batch of 4, 4-5 in a batch of 2, 6 alone, 7 never served
    sizes = np.array([4, 4, 4, 4, 2, 2, 1, 0], dtype=float)
    assert batch_size_counts(sizes) == [1, 1, 0, 1]
    assert batch_size_counts(np.zeros(3)) == []


def test_a_batching_block_is_parsed_and_survives_the_trip_to_a_worker():
    text = (
        "name: cap\ndefaults:\n  capacity: {slo_p99_ms: 50, batching: {max_batch: 8, max_delay_ms: 5}}\n"
        "matrix: {model: [tiny_mlp]}\n"
    )
    (scenario,) = parse_suite(text, "cap.yaml").scenarios
    assert scenario.capacity.batching == BatchingPolicy(max_batch=8, max_delay_ms=5.0)
    assert from_json(CapacityPolicy, json.loads(json.dumps(scenario.to_dict()["capacity"]))) == scenario.capacity


@pytest.mark.parametrize(
    ("block", "field", "expected"),
    [
        ("{max_batch: 1, max_delay_ms: 5}", "defaults.capacity.batching.max_batch", "integer >= 2"),
        ("{max_batch: 8, max_delay_ms: 0}", "defaults.capacity.batching.max_delay_ms", "milliseconds > 0"),
        ("{max_batch: 8}", "defaults.capacity.batching", "has no 'max_delay_ms'"),
        ("{max_batch: 8, max_delay: 5}", "defaults.capacity.batching.max_delay", "did you mean 'max_delay_ms'"),
        ("8", "defaults.capacity.batching", "expected a mapping"),
    ],
)
def test_a_bad_batching_block_is_refused_with_its_field(block, field, expected):
    text = f"name: cap\ndefaults:\n  capacity: {{slo_p99_ms: 5, batching: {block}}}\nmatrix: {{model: [tiny_mlp]}}\n"
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "cap.yaml")
    assert info.value.field == field and expected in info.value.message, info.value.message


SLEEPY_SERVICE = Path(__file__).parent / "support" / "sleepy_service.py"
MIX_SUITE = """\
name: mix
defaults:
  measure: {warmup_rounds: 1, min_rounds: 5, max_time_s: 0.1}
  capacity:
    slo_p99_ms: 500
    layouts: [1x1]
    batching: {max_batch: 4, max_delay_ms: 20}
    request_mix: {seq_len: {choices: [64, 8], weights: [1, 3]}}
matrix:
  model:
    - name: sleepy_text
      factory: "sleepy_service:build_text"
      kwargs: {ms_per_token: 0.25}
      inputs: [{name: input_ids, shape: [seq], dtype: int64, range: [0, 100]}]
  seq_len: [8]
"""


def test_a_request_mix_is_parsed_shortest_first_and_refused_where_it_cannot_apply(tmp_path):
    shutil.copy(SLEEPY_SERVICE, tmp_path / "sleepy_service.py")  # the factory's module, in the suite's folder
    (scenario,) = parse_suite(MIX_SUITE, str(tmp_path / "mix.yaml")).scenarios
    assert scenario.capacity.request_mix == SeqLenMix(choices=(8, 64), weights=(3.0, 1.0))
    assert from_json(CapacityPolicy, json.loads(json.dumps(scenario.to_dict()["capacity"]))) == scenario.capacity
    assert scenario.capacity.request_mix.label == "seq_len 8 (75%), 64 (25%)"
    builtin = (
        "name: m\ndefaults:\n  capacity: {slo_p99_ms: 5, request_mix: {seq_len: {choices: [8]}}}\n"
        "matrix: {model: [tiny_mlp]}\n"
    )
    with pytest.raises(SuiteError, match="request_mix varies seq_len.*tiny_mlp takes one tensor"):
        parse_suite(builtin, "m.yaml")
    for mix, field, expected in [
        ("{seq_len: {choices: [8, 8]}}", "seq_len.choices", "twice"),
        ("{seq_len: {choices: [8, 16], weights: [1]}}", "seq_len.weights", "one weight per choice"),
        ("{seq_len: {choices: [8], weights: [0]}}", "seq_len.weights.0", "weight > 0"),
        ("{seq_len: {choices: []}}", "seq_len", "non-empty list"),
        ("{tokens: [8]}", "tokens", "allowed here: seq_len"),
    ]:
        text = MIX_SUITE.replace("{seq_len: {choices: [64, 8], weights: [1, 3]}}", mix)
        with pytest.raises(SuiteError) as info:
            parse_suite(text, str(tmp_path / "mix.yaml"))
        assert info.value.field == f"defaults.capacity.request_mix.{field}" and expected in info.value.message


def test_request_choices_follow_the_weights_and_the_seed():
    mix = SeqLenMix(choices=(8, 64), weights=(3.0, 1.0))
    drawn = request_choices(mix.weights, 4000, seed=5)
    assert set(np.unique(drawn)) == {0.0, 1.0}
    assert abs((drawn == 1).mean() - 0.25) < 0.03  # 4000 draws: the binomial sd is 0.007
    assert np.array_equal(drawn, request_choices(mix.weights, 4000, seed=5))
    assert not np.array_equal(drawn, request_choices(mix.weights, 4000, seed=6))


@pytest.mark.slow
def test_mixed_lengths_are_served_at_their_own_length_and_a_batch_pads_to_its_longest(tmp_path):
    shutil.copy(SLEEPY_SERVICE, tmp_path / "sleepy_service.py")
    (tmp_path / "mix.yaml").write_text(MIX_SUITE, encoding="utf-8")
    (scenario,) = load_suite(tmp_path / "mix.yaml").scenarios
    policy = scenario.capacity
    artifact = runtimes.prepare_artifact(scenario, tmp_path / "cache")
    with InstanceGroup(scenario, artifact.path, [[0]], tmp_path / "logs", [scenario.batch_size], policy) as group:
        step, raw = server_step(group, 1, 40.0, 3, StepLimits(1.0, 100, 4.0), 0.5, policy.batching, policy.request_mix)
    served = ~np.isnan(raw["ended"])
    service_s = (raw["ended"] - raw["started"])[served]
    seq, batch = raw["seq"][served], raw["batch"][served]
    assert step.mix_requests == [int((raw["seq"] == i).sum()) for i in (0, 1)] and min(step.mix_requests) > 0
    assert all(p is not None for p in step.mix_latency_p99_s)
    # Sleeps are lower bounds whatever the host does: 64 tokens take at least 16 ms, and a batch that
    # holds a long request pads every request in it to 64 tokens.
    long_s = 64 * 0.25e-3
    assert (service_s[seq == 1] >= long_s * 0.99).all()
    ended = raw["ended"][served]
    padded = np.isin(ended, ended[seq == 1])  # requests that ran in a batch with a long one
    assert (service_s[padded] >= long_s * 0.99).all() and padded.sum() >= (seq == 1).sum()
    assert sum(step.batch_size_counts) > 0 and batch.max() <= 4
