"""Generation metrics of a causal LM: time to first token, time per output token, tokens per
second, the memory the generated context takes, and the greedy tokens against fp32 eager's
(`generate: {new_tokens: N}` in a suite).

Greedy decoding with the KV cache on the scenario's batch of prompts (prompt length = seq_len).
How a load mode generates is its runtime's `Decoder` (bench.runtimes): transformers' `generate`
(`hf_decode`: eager, mmap; compile with a static cache and a compiled decode step), or bench's
own loop over a model that takes one step at a time (`greedy_decode`: OpenVINO's stateful model,
ONNX Runtime with its past as inputs and outputs). Either way one clock times it (`measure`):
the decoder stamps `time.perf_counter()` as each step's tokens come out (transformers' through a
streamer, `step_clock_class`, which LLM server mode's instances use too); the first stamp is the
prefill plus the first token (TTFT), each later gap is one decoded token (TPOT). Runs after the timed steady
state, untimed by pytest-benchmark.

Fidelity of generation: the tokens of the last timed round against fp32 eager's greedy tokens on
the same prompts (`ReferenceTokens`, made once in the parent): the share of identical tokens,
position by position, and the first position where they differ, per prompt and overall.

For the bandwidth roofline (bench.profile.roofline) it counts what a decode step reads: the
weights in their stored dtype (`Decoder.weight_bytes`) and the KV cache at the median decode
context, and the FLOPs of one such step where the decoder can count them (a torch module); the
parent, which measures the host's bandwidth, turns them into `decode_floor_s` and
`bandwidth_utilization`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from bench.measure.memory import read_status_bytes
from bench.results.stats import LatencyStats
from bench.schema import integer, key

Stamps = list[float]  # time.perf_counter() as each step's tokens came out, appended by a decoder


@dataclass(frozen=True)
class GeneratePolicy:
    """The suite's `generate:` block (causal-lm models)."""

    # generated after each prompt (exactly: end-of-sequence does not stop it)
    new_tokens: int = key(
        integer(1), required="has no new_tokens: how many tokens to generate after the prompt, e.g. 32"
    )
    rounds: int = key(integer(1), default=3)  # timed generations
    warmup_rounds: int = key(integer(0), default=1)  # untimed generations first


@dataclass(frozen=True)
class ReferenceTokens:
    """parent → worker: fp32 eager's greedy tokens on the scenario's prompts (a JSON file beside the
    fidelity reference, read with bench.measure.contract)."""

    prompt_ids: list[list[int]]  # the prompts they were generated from: the worker checks its own are these
    tokens: list[list[int]]  # per prompt, the new tokens


@dataclass(frozen=True)
class Generated:
    """One generation's outcome."""

    tokens: list[list[int]]  # per prompt, the new tokens
    kv_cache_bytes: int | None  # the KV cache's tensors after the last token
    kv_bytes_per_position: int | None = None  # what one position adds to the cache, over the batch
    output: Any = None  # transformers' generate output (its cache): a decode step's FLOPs are counted on it


@dataclass(frozen=True)
class Decoder:
    """How a runtime generates: `decode(stamps_s)` runs one greedy generation of the policy's new tokens and
    appends to `stamps_s` the time each step's tokens came out."""

    method: str  # the record's generation.method
    decode: Callable[[Stamps], Generated]
    compiles: bool = False  # the first call compiles: it runs apart, and its extra time is compile_s
    module: Any = None  # the torch module generating: the roofline counts its weights and a decode step's FLOPs
    weight_bytes: int | None = None  # outside torch, what a decode step reads of weights (None: not known)


class StepModel(Protocol):
    """A causal LM bench's own loop drives one step at a time (numpy in and out)."""

    def reset(self) -> None:
        """Forget the KV cache: the next step is a new prompt."""

    def step(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
        """Run the new tokens on top of the cache: the next-token logits, [batch, vocab]."""

    def kv_cache_bytes(self) -> int:
        """The cache's bytes now."""


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


def hf_decode(module: Any, prompt: dict[str, Any], new_tokens: int, **options: Any) -> Callable[[Stamps], Generated]:
    """One transformers `generate` call: greedy, exactly `new_tokens`, its streamer stamping each step."""
    prompt = {name: prompt[name] for name in ("input_ids", "attention_mask") if name in prompt}
    settings = {**greedy_options(module, new_tokens), **options}
    prompt_tokens = int(prompt["input_ids"].shape[1])

    def decode(stamps_s: Stamps) -> Generated:
        clock = step_clock_class()()
        out = module.generate(**prompt, streamer=clock, **settings)
        stamps_s.extend(clock.stamps_s[1:])  # the first put() is the prompt itself
        cache = out.past_key_values
        tokens = out.sequences[:, prompt_tokens:].tolist()
        return Generated(tokens, cache_bytes(cache), kv_bytes_per_position(cache), out)

    return decode


def greedy_decode(model: StepModel, prompt: dict[str, Any], new_tokens: int) -> Callable[[Stamps], Generated]:
    """bench's own greedy loop: the prompts in one step (prefill), then one token per step, each fed back
    with the mask grown by one and the next position; the cache reset before each generation. Positions
    follow the mask as transformers' generate counts them (cumulative sum less one)."""
    import numpy as np

    input_ids = np.asarray(prompt["input_ids"], dtype=np.int64)
    mask = np.asarray(prompt.get("attention_mask", np.ones_like(input_ids)), dtype=np.int64)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    grow = np.ones((input_ids.shape[0], 1), dtype=np.int64)

    def decode(stamps_s: Stamps) -> Generated:
        model.reset()
        ids, attention, position = input_ids, mask, positions
        tokens = []
        for _ in range(new_tokens):
            following = model.step(ids, attention, position).argmax(axis=-1).astype(np.int64)[:, None]
            stamps_s.append(time.perf_counter())
            tokens.append(following)
            ids, attention, position = following, np.concatenate([attention, grow], axis=1), position[:, -1:] + 1
        cached = model.kv_cache_bytes()  # the prompts and every new token but the last, which is never fed
        return Generated(
            np.concatenate(tokens, axis=1).tolist(), cached, cached // (input_ids.shape[1] + new_tokens - 1)
        )

    return decode


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


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> dict[str, Any]:
    """Generated tokens against the reference's, prompt by prompt and position by position: the share
    identical and the first position (0-based) that differs (None: none did)."""
    if len(tokens) != len(reference) or any(len(a) != len(b) for a, b in zip(tokens, reference, strict=True)):
        raise ValueError("the generated tokens and the reference tokens differ in shape")
    shares: list[float] = []
    firsts: list[int | None] = []
    for generated, expected in zip(tokens, reference, strict=True):
        same = [a == b for a, b in zip(generated, expected, strict=True)]
        shares.append(sum(same) / len(same))
        firsts.append(same.index(False) if False in same else None)
    diverged = [first for first in firsts if first is not None]
    total = sum(len(row) for row in tokens)
    return {
        "token_agreement": sum(share * len(row) for share, row in zip(shares, tokens, strict=True)) / total,
        "token_agreement_by_prompt": shares,
        "first_divergence": min(diverged) if diverged else None,
        "first_divergence_by_prompt": firsts,
    }


def measure(
    decoder: Decoder,
    prompt_ids: list[list[int]],
    policy: GeneratePolicy,
    reference: ReferenceTokens | None = None,
) -> dict[str, Any]:
    """Generate `policy.new_tokens` after the prompts, `rounds` times; the record's `generation`."""
    # RSS growth counts the warmup calls too: later calls reuse what the allocator kept from the first
    growth: list[int] = []

    def timed() -> tuple[list[float], float, Generated]:
        stamps_s: list[float] = []
        rss_before = read_status_bytes().get("VmRSS") or 0
        started = time.perf_counter()
        generated = decoder.decode(stamps_s)
        ended = time.perf_counter()
        growth.append((read_status_bytes().get("VmRSS") or 0) - rss_before)
        if len(stamps_s) != policy.new_tokens:
            raise RuntimeError(f"{decoder.method} produced {len(stamps_s)} steps, expected {policy.new_tokens}")
        return [started, *stamps_s], ended - started, generated

    first_s = timed()[1] if decoder.compiles else None
    for _ in range(policy.warmup_rounds):
        timed()
    ttft_s: list[float] = []
    steps_s: list[list[float]] = []
    totals_s: list[float] = []
    for _ in range(policy.rounds):
        stamps, total_s, generated = timed()
        ttft_s.append(stamps[1] - stamps[0])
        steps_s.append([b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)])
        totals_s.append(total_s)
    batch_size = len(prompt_ids)
    every_step = [t for steps in steps_s for t in steps]
    context = median_context(len(prompt_ids[0]), policy.new_tokens)
    weights = weight_bytes(decoder.module) if decoder.module is not None else decoder.weight_bytes
    per_position = generated.kv_bytes_per_position
    step_flops = None
    if decoder.module is not None and generated.output is not None and policy.new_tokens > 1:
        step_flops = decode_step_flops(decoder.module, generated.output, int(context))  # cuts the last round's cache
    counted = every_step and weights is not None and per_position is not None
    figures: dict[str, Any] = {
        "prompt_tokens": len(prompt_ids[0]),
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
        "kv_cache_bytes": generated.kv_cache_bytes,
        "method": decoder.method,
        # what the first call took beyond a timed one: tracing and compiling the decode step
        "compile_s": first_s - statistics.median(totals_s) if first_s is not None else None,
        # the bandwidth roofline (decode_floor_s and bandwidth_utilization: the parent, which has the bandwidth)
        "weight_bytes": weights,
        "kv_bytes_per_position": per_position,
        "bytes_per_decode_step": weights + round(per_position * context) if counted else None,
        "flops_per_decode_step": step_flops,
    }
    if reference is not None:
        if reference.prompt_ids != prompt_ids:
            raise RuntimeError("the reference tokens were generated from other prompts than this worker's")
        figures.update(agreement(generated.tokens, reference.tokens))
    return figures
