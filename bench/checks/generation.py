"""Generation metrics of a causal LM: time to first token, time per output token, tokens per
second, and the memory the generated context takes (`generate: {new_tokens: N}` in a suite).

Greedy decoding with the KV cache on, through transformers' `generate` on the scenario's
batch of prompts (prompt length = seq_len). A streamer stamps each step as its tokens come
out: the first stamp is the prefill plus the first token (TTFT), each later gap is one
decoded token (TPOT). Runs after the timed steady state, untimed by pytest-benchmark.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.measure.memory import read_status_bytes
from bench.results.stats import LatencyStats
from bench.schema import integer, key


@dataclass(frozen=True)
class GeneratePolicy:
    """The suite's `generate:` block (causal-lm models)."""

    # generated after each prompt (exactly: end-of-sequence does not stop it)
    new_tokens: int = key(
        integer(1), required="has no new_tokens: how many tokens to generate after the prompt, e.g. 32"
    )
    rounds: int = key(integer(1), default=3)  # timed generations
    warmup_rounds: int = key(integer(0), default=1)  # untimed generations first


def _streamer_class() -> type:
    from transformers.generation.streamers import BaseStreamer

    class StepClock(BaseStreamer):
        """Stamps every put(): the first is the prompt, each later one a step's new tokens."""

        def __init__(self) -> None:
            self.stamps_s: list[float] = []

        def put(self, value: Any) -> None:
            self.stamps_s.append(time.perf_counter())

        def end(self) -> None:
            pass

    return StepClock


def cache_bytes(cache: Any) -> int:
    """Bytes of every tensor held by a KV cache (transformers' Cache objects or legacy tuples)."""
    import torch

    seen: set[int] = set()

    def walk(value: Any, depth: int) -> int:
        if isinstance(value, torch.Tensor):
            if id(value) in seen:
                return 0
            seen.add(id(value))
            return value.numel() * value.element_size()
        if depth > 4:
            return 0
        if isinstance(value, (list, tuple)):
            return sum(walk(v, depth + 1) for v in value)
        if isinstance(value, dict):
            return sum(walk(v, depth + 1) for v in value.values())
        if hasattr(value, "__dict__") and not isinstance(value, type):
            return sum(walk(v, depth + 1) for v in vars(value).values())
        return 0

    return walk(cache, 0)


def measure(model: Any, batch: dict[str, Any], policy: GeneratePolicy) -> dict[str, Any]:
    """Generate `policy.new_tokens` after the batch's prompts, `rounds` times; the record's `generation`."""
    clock_class = _streamer_class()
    prompt = {name: batch[name] for name in ("input_ids", "attention_mask") if name in batch}
    options = dict(
        max_new_tokens=policy.new_tokens,
        min_new_tokens=policy.new_tokens,
        do_sample=False,
        use_cache=True,
        num_beams=1,
        return_dict_in_generate=True,
    )
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:  # without one generate warns on every call; padding never happens at a fixed length
        options["pad_token_id"] = getattr(model.generation_config, "eos_token_id", None) or 0
    # RSS growth counts the warmup calls too: later calls reuse what the allocator kept from the first
    growth: list[int] = []
    for _ in range(policy.warmup_rounds):
        rss_before = read_status_bytes().get("VmRSS") or 0
        model.generate(**prompt, **options)
        growth.append((read_status_bytes().get("VmRSS") or 0) - rss_before)
    ttft_s: list[float] = []
    steps_s: list[list[float]] = []
    totals_s: list[float] = []
    kv_bytes = 0
    for _ in range(policy.rounds):
        clock = clock_class()
        rss_before = read_status_bytes().get("VmRSS") or 0
        started = time.perf_counter()
        out = model.generate(**prompt, streamer=clock, **options)
        ended = time.perf_counter()
        growth.append((read_status_bytes().get("VmRSS") or 0) - rss_before)
        stamps = clock.stamps_s[1:]  # the first put() is the prompt itself
        if len(stamps) != policy.new_tokens:
            raise RuntimeError(f"generate produced {len(stamps)} steps, expected {policy.new_tokens}")
        ttft_s.append(stamps[0] - started)
        steps_s.append([b - a for a, b in zip(stamps, stamps[1:], strict=False)])
        totals_s.append(ended - started)
        kv_bytes = cache_bytes(out.past_key_values)
        del out
    batch_size = int(prompt["input_ids"].shape[0])
    every_step = [t for steps in steps_s for t in steps]
    return {
        "prompt_tokens": int(prompt["input_ids"].shape[1]),
        "new_tokens": policy.new_tokens,
        "batch_size": batch_size,
        "rounds": policy.rounds,
        "ttft_s": dataclasses.asdict(LatencyStats.from_times(ttft_s)),
        "tpot_s": dataclasses.asdict(LatencyStats.from_times(every_step)) if every_step else None,
        "tokens_per_s": batch_size * policy.new_tokens / statistics.median(totals_s),
        "decode_tokens_per_s": batch_size / statistics.median(every_step) if every_step else None,
        # per decoded position (2nd token onwards): the median over rounds, for the latency-by-position figure
        "tpot_by_position_s": [statistics.median(column) for column in zip(*steps_s, strict=True)],
        "rss_growth_bytes": max(growth),
        "kv_cache_bytes": kv_bytes,
    }
