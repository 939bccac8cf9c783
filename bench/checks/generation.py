"""Generation metrics of a causal LM: time to first token, time per output token, tokens per
second, and the memory the generated context takes (`generate: {new_tokens: N}` in a suite).

Greedy decoding with the KV cache on, through transformers' `generate` on the scenario's
batch of prompts (prompt length = seq_len). A streamer stamps each step as its tokens come
out: the first stamp is the prefill plus the first token (TTFT), each later gap is one
decoded token (TPOT). Runs after the timed steady state, untimed by pytest-benchmark.

For the bandwidth roofline (bench.profile.roofline) it counts what a decode step reads: the
loaded weights in their stored dtype and the KV cache at the median decode context, and the FLOPs
of one such step; the parent, which measures the host's bandwidth, turns them into
`decode_floor_s` and `bandwidth_utilization`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Iterator
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


def step_clock_class() -> type:
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


def tensors(value: Any) -> Iterator[Any]:
    """Every torch tensor held by `value` (tensors, lists, tuples, dicts, objects' attributes, 4 levels
    deep), each storage once; a tensor subclass that flattens (torchao's quantized weights) as its inner
    tensors, whose bytes are what it stores."""
    import torch

    seen: set[tuple[int, int]] = set()

    def walk(value: Any, depth: int) -> Iterator[Any]:
        if isinstance(value, torch.Tensor):
            if type(value) not in (torch.Tensor, torch.nn.Parameter) and hasattr(value, "__tensor_flatten__"):
                names, _ = value.__tensor_flatten__()
                for name in names:
                    yield from walk(getattr(value, name), depth)
                return
            key = (value.data_ptr(), value.numel() * value.element_size())
            if key in seen and key[0] != 0:
                return
            seen.add(key)
            yield value
            return
        if depth > 4:
            return
        if isinstance(value, (list, tuple)):
            children = value
        elif isinstance(value, dict):
            children = value.values()
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            children = vars(value).values()
        else:
            return
        for child in children:
            yield from walk(child, depth + 1)

    yield from walk(value, 0)


def tensor_bytes(value: Any) -> int:
    """Bytes of every tensor `value` holds, each storage once (a tied weight, a shared KV tensor)."""
    return sum(t.numel() * t.element_size() for t in tensors(value))


def cache_bytes(cache: Any) -> int:
    """Bytes of every tensor held by a KV cache (transformers' Cache objects or legacy tuples)."""
    return tensor_bytes(cache)


def weight_bytes(module: Any) -> int:
    """The module's weights as loaded, in the dtype they are stored in: its state_dict's tensors,
    each storage once (GPT-2's lm_head is its token embedding), packed and quantized ones included."""
    return tensor_bytes(module.state_dict(keep_vars=True))


def kv_bytes_per_position(cache: Any) -> int:
    """Bytes one sequence position adds to the cache, over the whole batch: each 4-d key or value
    tensor (batch, heads, positions, head size) divided by its positions (a static cache's capacity)."""
    return sum(t.numel() // t.shape[-2] * t.element_size() for t in tensors(cache) if t.dim() == 4 and t.shape[-2])


def median_context(prompt_tokens: int, new_tokens: int) -> float:
    """The median context a timed decode step reads: step k (2..new_tokens) attends over prompt + k - 1
    cached positions, so the median is prompt + new_tokens / 2."""
    return prompt_tokens + new_tokens / 2


def decode_step_flops(model: Any, out: Any, context: int) -> int | None:
    """FLOPs of one decode step at `context` positions (FlopCounterMode): the last generate call's cache
    cut to `context`, then one more token. None where the cache cannot be cut or the call fails."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cache = out.past_key_values
    if not hasattr(cache, "crop") or not hasattr(cache, "get_seq_length"):
        return None
    try:
        extra = cache.get_seq_length() - context
        if extra > 0:
            cache.crop(-extra)  # transformers 5: a negative count of positions to drop from the end
        token = out.sequences[:, context : context + 1]
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(input_ids=token, past_key_values=cache, use_cache=True)
    except Exception:  # a figure for the roofline figure only: the row's generation figures stand without it
        return None
    return int(counter.get_total_flops())


def greedy_options(model: Any, new_tokens: int) -> dict[str, Any]:
    """generate()'s keywords for exactly `new_tokens` greedy tokens with the KV cache (also LLM server mode's)."""
    options: dict[str, Any] = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=True,
        num_beams=1,
        return_dict_in_generate=True,
    )
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:  # without one generate warns on every call; padding never happens at a fixed length
        options["pad_token_id"] = getattr(model.generation_config, "eos_token_id", None) or 0
    return options


def measure(model: Any, batch: dict[str, Any], policy: GeneratePolicy) -> dict[str, Any]:
    """Generate `policy.new_tokens` after the batch's prompts, `rounds` times; the record's `generation`."""
    clock_class = step_clock_class()
    prompt = {name: batch[name] for name in ("input_ids", "attention_mask") if name in batch}
    options = greedy_options(model, policy.new_tokens)
    # RSS growth counts the warmup calls too: later calls reuse what the allocator kept from the first
    growth: list[int] = []
    for _ in range(policy.warmup_rounds):
        rss_before = read_status_bytes().get("VmRSS") or 0
        model.generate(**prompt, **options)
        growth.append((read_status_bytes().get("VmRSS") or 0) - rss_before)
    ttft_s: list[float] = []
    steps_s: list[list[float]] = []
    totals_s: list[float] = []
    kv_bytes = per_position = 0
    step_flops = None
    context = median_context(int(prompt["input_ids"].shape[1]), policy.new_tokens)
    for round_ in range(policy.rounds):
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
        per_position = kv_bytes_per_position(out.past_key_values)
        if round_ == policy.rounds - 1 and policy.new_tokens > 1:  # after the last timed round: it cuts the cache
            step_flops = decode_step_flops(model, out, int(context))
        del out
    batch_size = int(prompt["input_ids"].shape[0])
    every_step = [t for steps in steps_s for t in steps]
    weights = weight_bytes(model)
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
        # the bandwidth roofline (decode_floor_s and bandwidth_utilization: the parent, which has the bandwidth)
        "weight_bytes": weights,
        "kv_bytes_per_position": per_position,
        "bytes_per_decode_step": weights + round(per_position * context) if every_step else None,
        "flops_per_decode_step": step_flops,
    }
