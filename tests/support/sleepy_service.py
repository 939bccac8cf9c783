"""A deterministic, sleep-based service for queueing tests: each call sleeps `ms` (plus `per_sample_ms`
for each sample of its batch) and uses almost no CPU.

A factory model source (`sleepy_service:build`): an instance of it is an M/D/1 server whose
service time is set by the test, not by how busy the host's cores are.
"""

from __future__ import annotations

import time

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
