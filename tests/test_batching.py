"""Dynamic batching in server mode: how an instance forms a batch, what a step records, and the suite block."""

from __future__ import annotations

import os
import time
from array import array

import numpy as np
import pytest

from bench.capacity import _batch_size_counts
from bench.instance import REQUEST, STOP, _take_batch
from bench.suite import BatchingPolicy, CapacityPolicy, SuiteError, parse_suite


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


def test_batch_size_counts_count_batches_not_requests():
    # requests 0-3 in one batch of 4, 4-5 in a batch of 2, 6 alone, 7 never served
    sizes = np.array([4, 4, 4, 4, 2, 2, 1, 0], dtype=float)
    assert _batch_size_counts(sizes) == [1, 1, 0, 1]
    assert _batch_size_counts(np.zeros(3)) == []


def test_a_batching_block_is_parsed_and_survives_the_trip_to_a_worker():
    text = (
        "name: cap\ndefaults:\n  capacity: {slo_p99_ms: 50, batching: {max_batch: 8, max_delay_ms: 5}}\n"
        "matrix: {model: [tiny_mlp]}\n"
    )
    (scenario,) = parse_suite(text, "cap.yaml").scenarios
    assert scenario.capacity.batching == BatchingPolicy(max_batch=8, max_delay_ms=5.0)
    assert CapacityPolicy.from_dict(scenario.to_dict()["capacity"]) == scenario.capacity


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
