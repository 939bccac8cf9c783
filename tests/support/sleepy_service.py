"""A deterministic, sleep-based service for queueing tests: each call sleeps `ms` (plus `per_sample_ms`
for each sample of its batch) and uses almost no CPU.

A factory model source (`sleepy_service:build`): an instance of it is an M/D/1 server whose
service time is set by the test, not by how busy the host's cores are. `build_lm` is a causal LM of the same
kind for LLM server mode: a known prefill cost and per-token cost, streamed as generate() streams.
"""

from __future__ import annotations

import time
import types

import torch


class Sleepy(torch.nn.Module):
    def __init__(self, ms: float, per_sample_ms: float):
        super().__init__()
        self.seconds = ms / 1e3
        self.per_sample_s = per_sample_ms / 1e3
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds + self.per_sample_s * x.shape[0])
        return self.linear(x)


def build(ms: float = 20.0, per_sample_ms: float = 0.0) -> Sleepy:
    return Sleepy(ms, per_sample_ms)


class SleepyText(torch.nn.Module):
    """A text model's shape of cost: each call sleeps `ms_per_token` for every token of its (padded) batch row."""

    def __init__(self, ms_per_token: float):
        super().__init__()
        self.per_token_s = ms_per_token / 1e3
        self.embedding = torch.nn.Embedding(100, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        time.sleep(self.per_token_s * input_ids.shape[1])
        return self.embedding(input_ids).mean(dim=1)


def build_text(ms_per_token: float = 0.25) -> SleepyText:
    return SleepyText(ms_per_token)


class SleepyLM(torch.nn.Module):
    """A causal LM's shape of cost with a known price: generate() sleeps `prefill_ms` before the first token
    and `token_ms` before each later one, whatever the batch (static batching's cost: one decode step serves
    the whole batch), and streams each step as transformers' generate() does (the prompt first)."""

    def __init__(self, prefill_ms: float, token_ms: float, vocab: int = 100):
        super().__init__()
        self.prefill_s, self.token_s = prefill_ms / 1e3, token_ms / 1e3
        self.embedding = torch.nn.Embedding(vocab, 4)
        self.generation_config = types.SimpleNamespace(pad_token_id=0, eos_token_id=0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        time.sleep(self.prefill_s)
        return self.embedding(input_ids)

    def generate(self, input_ids: torch.Tensor, streamer=None, max_new_tokens: int = 1, **options) -> object:
        if streamer is not None:
            streamer.put(input_ids)
        tokens = input_ids
        for step in range(max_new_tokens):
            time.sleep(self.prefill_s if step == 0 else self.token_s)
            tokens = torch.cat([tokens, tokens[:, -1:]], dim=1)
            if streamer is not None:
                streamer.put(tokens[:, -1:])
        # a KV cache's size: 2 tensors (key, value) of 4 floats per position
        cache = (torch.zeros(2, tokens.shape[0], tokens.shape[1], 4),)
        return types.SimpleNamespace(sequences=tokens, past_key_values=cache)


def build_lm(prefill_ms: float = 10.0, token_ms: float = 2.0) -> SleepyLM:
    return SleepyLM(prefill_ms, token_ms)
