"""The generation check's shared parts without a model: bench's greedy loop over a step model, the one
timing loop every runtime's decoder goes through, and the greedy tokens against the reference's."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.checks import generation
from bench.checks.generation import Decoder, Generated, GeneratePolicy, ReferenceTokens


class Counting:
    """A step model whose next token is the last input token + 1 (mod 50); it records what it was fed."""

    def __init__(self) -> None:
        self.resets = 0
        self.calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.cached = 0

    def reset(self) -> None:
        self.resets += 1
        self.cached = 0

    def step(self, input_ids, attention_mask, position_ids):
        self.calls.append((input_ids, attention_mask, position_ids))
        self.cached += input_ids.shape[1]
        logits = np.zeros((input_ids.shape[0], 50), dtype=np.float32)
        logits[np.arange(input_ids.shape[0]), (input_ids[:, -1] + 1) % 50] = 1.0
        return logits

    def kv_cache_bytes(self) -> int:
        return self.cached * 8


def test_greedy_loop_prefills_then_feeds_one_token_per_step_with_the_mask_and_position_grown():
    model = Counting()
    prompt = {"input_ids": np.array([[3, 4, 5], [7, 8, 9]]), "attention_mask": np.array([[0, 1, 1], [1, 1, 1]])}
    stamps: list[float] = []
    out = generation.greedy_decode(model, prompt, 3)(stamps)
    assert out.tokens == [[6, 7, 8], [10, 11, 12]] and len(stamps) == 3 and model.resets == 1
    assert stamps == sorted(stamps)
    first, second, third = model.calls
    assert first[0].shape == (2, 3) and first[2].tolist() == [[0, 0, 1], [0, 1, 2]]  # positions follow the mask
    assert second[0].tolist() == [[6], [10]] and second[1].shape == (2, 4) and second[2].tolist() == [[2], [3]]
    assert third[1].shape == (2, 5) and third[2].tolist() == [[3], [4]]
    assert out.kv_cache_bytes == (3 + 1 + 1) * 8 and out.kv_bytes_per_position == 8  # the last token is never fed
    generation.greedy_decode(model, prompt, 3)([])
    assert model.resets == 2  # every generation starts from an empty cache


def test_agreement_counts_identical_tokens_by_position_and_the_first_divergence_per_prompt():
    figures = generation.agreement([[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 2, 3, 4], [5, 0, 7, 0]])
    assert figures == {
        "token_agreement": 6 / 8,
        "token_agreement_by_prompt": [1.0, 0.5],
        "first_divergence": 1,
        "first_divergence_by_prompt": [None, 1],
    }
    assert generation.agreement([[1]], [[1]])["first_divergence"] is None
    with pytest.raises(ValueError, match="differ in shape"):
        generation.agreement([[1, 2]], [[1]])


def _sleeping_decoder(first_token_s: float, step_s: float, *, compiles: bool = False) -> tuple[Decoder, list[int]]:
    calls: list[int] = []

    def decode(stamps_s: generation.Stamps) -> Generated:
        calls.append(1)
        time.sleep(first_token_s)
        stamps_s.append(time.perf_counter())
        for _ in range(2):
            time.sleep(step_s)
            stamps_s.append(time.perf_counter())
        return Generated([[1, 2, 3]], 64)

    return Decoder("sleeps", decode, compiles=compiles), calls


def test_measure_times_the_first_token_and_each_later_step_with_one_clock():
    decoder, calls = _sleeping_decoder(0.02, 0.005)
    policy = GeneratePolicy(new_tokens=3, rounds=2, warmup_rounds=1)
    figures = generation.measure(decoder, [[9, 9]], policy, ReferenceTokens([[9, 9]], [[1, 2, 4]]))
    assert len(calls) == 3  # one warmup, two timed
    assert figures["ttft_s"]["min"] >= 0.02 and figures["tpot_s"]["min"] >= 0.005
    assert figures["ttft_s"]["rounds"] == 2 and figures["tpot_s"]["rounds"] == 4
    assert len(figures["tpot_by_position_s"]) == 2 and figures["tokens_per_s"] > 0
    assert (figures["method"], figures["kv_cache_bytes"], figures["compile_s"]) == ("sleeps", 64, None)
    assert figures["token_agreement"] == pytest.approx(2 / 3) and figures["first_divergence"] == 2
    # no module and no weight bytes: nothing for the roofline to divide
    assert figures["bytes_per_decode_step"] is None and figures["flops_per_decode_step"] is None


def test_a_compiling_decoder_runs_once_apart_and_other_prompts_than_the_references_fail():
    decoder, calls = _sleeping_decoder(0.0, 0.0, compiles=True)
    policy = GeneratePolicy(new_tokens=3, rounds=1, warmup_rounds=0)
    figures = generation.measure(decoder, [[9]], policy)
    assert len(calls) == 2 and figures["compile_s"] is not None and "token_agreement" not in figures
    with pytest.raises(RuntimeError, match="other prompts"):
        generation.measure(decoder, [[9]], policy, ReferenceTokens([[8]], [[1, 2, 3]]))
    with pytest.raises(RuntimeError, match="produced 3 steps, expected 4"):
        generation.measure(decoder, [[9]], GeneratePolicy(new_tokens=4, rounds=1))
