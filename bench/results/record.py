"""The ResultRecord: the contract between the runner, reports, history, compare and plan.

One record per scenario, one JSON object per line of a run's results.jsonl. Units are
in the field names (`_s` seconds, `_bytes` bytes). Fields are added, never renamed.

Rows written by older versions are brought to this version's shape here, and only here:
`ROW_DEFAULTS` is the one table of what a row means when it lacks a field, `UPGRADES` the
explicit upgrade of a row of schema version N-1 to N (asv's `Results.update_to_N`), and
`upgrade_row` / `record_from_row` apply both. Every reader (bench.results.runfolder, for run folders
and the history alike) goes through them; the suite's axis defaults are the same values.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.checks.contention import Contention
from bench.results.stats import LatencyStats
from bench.schema import field_types, from_json

SCHEMA_VERSION = 1
RESULTS_FILE = "results.jsonl"
STATUSES = ("ok", "unsupported", "failed")

# What a row means when it lacks a field: it was written before the field existed, or by hand.
# Version 1 has grown fields without a bump (added, never renamed): a row of any version is filled
# from here. The first eight are required fields of ResultRecord (a row without one is named in the
# report's warnings as one from an older schema); the rest have defaults in ResultRecord that are
# these values, except worker_kind: a row written today without a worker (an unsupported scenario)
# holds null, while rows from before worker kinds were all measured in fresh interpreters.
ROW_DEFAULTS: dict[str, Any] = {
    "model": "unknown",
    "batch_size": None,
    "threads": None,
    "interop_threads": 1,
    "precision": "fp32",
    "load": "eager",
    "runtime": "torch",
    "input_shape": [],
    "variant": "dense",
    "grad_mode": "inference_mode",
    "module_mode": "eval",
    "worker_kind": "fresh",
}


@dataclass(frozen=True)
class RssFigures:
    """Resident set size of the worker, in bytes, at the edges of its phases."""

    before_load: int | None = None  # interpreter + torch imported: the baseline, subtracted from nothing
    after_load: int | None = None
    after_first_inference: int | None = None
    peak: int | None = None  # highest parent-sampled RSS from the start of load to the end of steady state
    peak_anon: int | None = None  # RssAnon at the sampled peak
    peak_file: int | None = None  # RssFile + RssShmem at the sampled peak (mmap'd weights)
    peak_uss: int | None = None  # highest USS (pages no other process shares): sampled, and read at phase ends
    peak_worker_lifetime: int | None = None  # highest sampled RSS including the harness's start and exit
    before_release: int | None = None  # at the end of the scenario, the model still loaded
    after_release: int | None = None  # after deleting the model and gc.collect()
    after_malloc_trim: int | None = None  # then after glibc's malloc_trim(0) (null without glibc)


@dataclass(frozen=True)
class KernelPeaks:
    """The kernel's high-water mark (VmHWM), reset between phases, in bytes."""

    load: int | None = None
    first_inference: int | None = None
    warmup: int | None = None
    steady: int | None = None
    compile: int | None = None  # load: compile, the first call (Dynamo and Inductor compiling)


@dataclass(frozen=True)
class Fidelity:
    """Output agreement with the fp32 eager run of the same model on the same seeded input."""

    max_abs_error: float | None  # on raw outputs
    cosine_similarity: float | None  # on outputs minus the reference's mean output (see bench.checks.fidelity)
    top1_agreement: float | None  # same centering
    inputs: int | None = None  # text tasks: the distinct samples compared
    non_finite_outputs: int = 0  # NaN/inf values in the output; the three figures are then null
    duplicate_inputs: int = 0  # text tasks: samples left out as exact repeats of an earlier one (bench.checks.fidelity)
    note: str | None = None  # why a figure is null (too few distinct samples for nearest-neighbour agreement)
    # The output's spread over the inputs / the reference's: ~0 means the output no longer depends on the
    # input (cosine and top-1 are then noise); null for text tasks and where the reference does not vary
    input_dependence: float | None = None
    metric: str | None = None  # how the figures were computed (bench.checks.fidelity.METRICS); text tasks differ
    cosine_min: float | None = None  # feature-extraction: per-sample cosine of mean-pooled embeddings
    cosine_median: float | None = None  # (cosine_similarity is the same median there)
    nearest_neighbour_agreement: float | None = None  # feature-extraction: same nearest other sample
    kl_divergence_mean: float | None = None  # causal-lm: KL(reference || output) of next-token distributions
    kl_divergence_max: float | None = None
    positions: int | None = None  # causal-lm: the token positions compared


@dataclass(frozen=True)
class GenerationFigures:
    """Greedy generation with the KV cache after the timed run (`generate:`; bench.checks.generation)."""

    prompt_tokens: int  # per prompt: the scenario's seq_len
    new_tokens: int  # generated after each prompt
    batch_size: int  # prompts per generate call
    rounds: int
    ttft_s: LatencyStats | None  # time to first token: prefill and the first token, per round
    tpot_s: LatencyStats | None  # time per output token: every decoded step (2nd token on) of every round
    tokens_per_s: float | None  # batch x new_tokens / the median round's whole generate call
    decode_tokens_per_s: float | None = None  # batch / the median decoded step
    tpot_by_position_s: list[float] = field(default_factory=list)  # median step time per decoded position
    rss_growth_bytes: int | None = None  # VmRSS after a generate call minus before it, the largest (warmup included)
    kv_cache_bytes: int | None = None  # the KV cache's tensors after the last token
    method: str | None = None  # how the runtime generated (transformers generate, or bench's own loop, and its cache)
    compile_s: float | None = None  # compile: the first generate call less a timed one (the decode step compiling)
    token_agreement: float | None = None  # share of generated tokens identical to fp32 eager's on the same prompts
    token_agreement_by_prompt: list[float] = field(default_factory=list)
    first_divergence: int | None = None  # earliest new-token position (0-based) differing from fp32 eager's; null: none
    first_divergence_by_prompt: list[int | None] = field(default_factory=list)
    note: str | None = None  # why not measured
    # the bandwidth roofline (bench.profile.roofline; the worker counts bytes and FLOPs, the parent divides
    # by the environment's memory_bandwidth):
    weight_bytes: int | None = None  # the loaded model's weights in their stored dtype, each storage once
    kv_bytes_per_position: int | None = None  # what one position adds to the KV cache, over the batch
    bytes_per_decode_step: int | None = None  # weight_bytes + kv_bytes_per_position x the median decode context
    flops_per_decode_step: int | None = None  # FlopCounterMode over one decode step at the median context
    decode_floor_s: float | None = None  # bytes_per_decode_step / the host's memory bandwidth
    bandwidth_utilization: float | None = None  # decode_floor_s / the median TPOT (1 = at the bandwidth roof)


@dataclass(frozen=True)
class HygieneFigures:
    """How the model was called and what that changed (grad_mode / module_mode; bench.checks.hygiene)."""

    parameters_requiring_grad: int | None = None  # parameter tensors that required grad while measured
    given_training: bool | None = None  # your factory's or TorchScript file's module came in training mode
    given_parameters_requiring_grad: int | None = None  # ... with this many parameter tensors requiring grad
    autograd_saved_bytes: int | None = None  # grad_mode enabled: what one call's graph saved, model weights aside
    autograd_saved_tensors: int | None = None  # distinct storages behind those bytes
    outputs_repeat: bool | None = None  # two calls on the same fidelity inputs gave identical outputs
    repeat_max_abs_diff: float | None = None  # the largest difference between those two calls
    vs_default: Fidelity | None = None  # outputs against the same model in eval() under inference_mode
    eval_after_train_vs_default: Fidelity | None = None  # train rows: eval() outputs after the train-mode calls


@dataclass(frozen=True)
class ModelSourceInfo:
    """The user's own model a row measured (a suite `model:` mapping; bench.models.sources); null for a model name."""

    kind: str  # checkpoint, safetensors, factory, torchscript, onnx, exported_program, tflite, aoti or hf
    path: str | None = None  # the file or folder (a factory: its module's file)
    bytes: int | None = None  # its size (a folder: all its weight files)
    sha256: str | None = None  # its content hash (a folder: see README)
    architecture: str | None = None  # checkpoint / safetensors: the model name or factory they fill


@dataclass(frozen=True)
class CompiledRuntime:
    """How a compile, aoti, openvino or executorch row's model was compiled (bench.runtimes)."""

    compiler: str | None = None  # inductor, aot_inductor, openvino or executorch_xnnpack
    version: str | None = None  # torch's, OpenVINO's or ExecuTorch's
    mode: str | None = None  # compile: torch.compile's mode
    dynamic: bool | None = None  # compile: dynamic shapes
    freezing: bool | None = None  # compile: Inductor's inference freezing
    cache: str | None = None  # compile: cold or warm, whether Inductor's cache held this model before
    graphs: int | None = None  # compile: graphs Dynamo compiled on the first call (>1: graph breaks)
    inference_precision: str | None = None  # openvino: the precision the compiled model reports it runs in
    performance_hint: str | None = None  # openvino
    num_threads: int | None = None  # openvino: INFERENCE_NUM_THREADS; executorch: its thread pool
    num_streams: int | None = None  # openvino


@dataclass(frozen=True)
class PruningFacts:
    """What a pruned variant did to the fp32 model (`variant`; bench.models.pruning)."""

    pruned_layers: int | None = None  # layers pruned (shrunk-channels: layers that lost output channels)
    weight_sparsity: float | None = None  # share of zero weights in Linear/Conv layers afterwards
    parameters_before: int | None = None
    parameters_after: int | None = None  # fewer only when channels were removed for real


@dataclass(frozen=True)
class QuantizationFacts:
    """How an int8_static, int8_weight_only or int4_weight_only row's model was quantized (bench.runtimes)."""

    method: str | None = None  # pt2e_x86_inductor, ort_qdq_static, nncf_ptq, int8_weight_only, int4_weight_only
    library: str | None = None  # the package that quantized it: torchao, onnxruntime or nncf
    library_version: str | None = None
    layers_by_kind: dict[str, int] = field(default_factory=dict)  # quantized layers: conv, linear
    per_channel: bool | None = None  # weights scaled per output channel
    reduce_range: bool | None = None  # ONNX Runtime: 7-bit weights (x86 without VNNI)
    group_sizes: dict[str, int] | None = None  # int4: layers by group size (input features per scale)
    unquantized_linear: int | None = None  # int4: Linear layers the int4 kernel cannot take, left in fp32
    calibration_source: str | None = None  # int8_static: random, data or text (bench.suite.calibration)
    calibration_samples: int | None = None
    calibration_note: str | None = None  # random calibration: why fidelity and accuracy mean little


@dataclass(frozen=True)
class PipelineFigures:
    """The input pipeline run after the timed steady state (`data:`; bench.checks.pipeline)."""

    images: int | None = None
    batches: int | None = None
    stage_median_s: dict[str, float] = field(default_factory=dict)  # per batch: load_preprocess, copy, ...
    stage_total_s: dict[str, float] = field(default_factory=dict)  # over every batch
    end_to_end_images_per_s: float | None = None  # images / the sum of every stage's time
    top1_accuracy: float | None = None  # against the folder's labels (its class sub-folders)
    top5_accuracy: float | None = None
    classes: int | None = None  # the model's outputs; top-5 of fewer than ~10 classes says little
    loader_workers: int | None = None


@dataclass(frozen=True)
class ProfileFigures:
    """The operator profile, run after the timed run in its own process (`profile: true`; bench.profile.profiler)."""

    status: str | None = None  # ok, unsupported or failed: a profile never fails the row
    note: str | None = None  # why not ok
    runtime: str | None = None
    iterations: int | None = None  # profiled calls
    median_latency_s: float | None = None  # median call under the profiler (not the timed figure)
    profiler_overhead: float | None = None  # torch: that median / the median warmup call without the profiler
    self_cpu_median_per_iter_s: float | None = None  # self time on the calling thread, median per call
    explained_ratio: float | None = None  # calling thread's self time / wall, median per call (~1)
    ops_only_ratio: float | None = None  # the same without time outside operators (Python, dispatch)
    top_op: str | None = None
    top_op_pct: float | None = None
    flops: int | None = None  # per call, fp32 model, FlopCounterMode (see bench.profile.profiler.FLOPS_NOTE)
    achieved_gflops: float | None = None  # flops / the timed median latency
    peak_gflops: float | None = None  # this CPU's matmul peak at the row's threads and dtype
    percent_of_peak: float | None = None
    # torch's live CPU allocations in the profiling process (profile/<scenario>/memory.csv), peak per phase:
    allocated_load_bytes: int | None = None
    allocated_first_inference_bytes: int | None = None
    allocated_steady_bytes: int | None = None  # over the profiled calls
    allocated_per_call_bytes: int | None = None  # median over profiled calls of a call's peak above its start
    # the roofline (bench.profile.roofline): where the call sits against the bandwidth and FLOP roofs
    bytes_per_call: int | None = None  # at least moved per call: the loaded weights + the inputs + the outputs
    arithmetic_intensity: float | None = None  # flops / bytes_per_call (FLOP per byte)
    memory_floor_s: float | None = None  # bytes_per_call / the host's memory bandwidth
    bound: str | None = None  # memory (intensity under peak_gflops / bandwidth) or compute


@dataclass(frozen=True)
class FleetPlacement:
    """Where a fleet run measured the row (bench.measure.fleet); absent in local runs."""

    worker: str | None = None  # the Dask worker's address
    host: str | None = None  # its host name
    started_unix_s: float | None = None  # the scenario's start and end on that host's clock
    ended_unix_s: float | None = None
    lost_attempts: list[dict[str, Any]] = field(default_factory=list)  # [{worker, reason}] before this one


@dataclass(frozen=True)
class InstanceRun:
    """One instance's share of a closed-loop or offline run (bench.capacity.host)."""

    instance: int
    cores: list[int]  # the CPUs it was pinned to (os.sched_setaffinity)
    calls: int
    samples_per_s: float  # calls x batch / its own wall time
    latency_s: LatencyStats | None  # per call
    cpu_s: float | None = None  # the instance's process CPU time over the run


@dataclass(frozen=True)
class ClosedLoopFigures:
    """Every instance calling back to back, all started together, for a fixed duration."""

    batch_size: int
    duration_s: float
    samples_per_s: float  # aggregate: the instances' throughputs summed
    requests_per_s: float  # aggregate calls per second
    latency_s: LatencyStats | None  # every instance's calls pooled
    instances: list[InstanceRun] = field(default_factory=list)


@dataclass(frozen=True)
class ServerStep:
    """One step of server mode: Poisson arrivals at a fixed offered rate (bench.capacity.loadgen)."""

    rate_per_s: float  # offered
    requests: int  # scheduled
    completed: int  # finished before the drain deadline
    duration_s: float  # from the step's start to its last scheduled arrival
    achieved_per_s: float  # completed / duration_s
    latency_p50_s: float | None  # from each request's scheduled arrival to the end of its inference
    latency_p90_s: float | None
    latency_p99_s: float | None
    latency_max_s: float | None
    p99_lower_bound: bool  # the p99 fell on an unfinished request: the true p99 is at least this
    wait_p99_s: float | None  # scheduled arrival -> an instance took the request (queueing + dispatch)
    service_p99_s: float | None  # the inference alone
    send_lag_p99_s: float | None  # how late the generator sent requests (counted in the latency)
    loadgen_cpu_s: float  # CPU time of the generator's thread during the step
    loadgen_cpu_fraction: float  # loadgen_cpu_s / step wall time: the share of a core it took
    instances_cpu_s: float | None  # the serving instances' CPU time during the step
    valid: bool  # long enough and enough requests for its p99 to mean something
    passed: bool  # valid and p99 within the SLO
    reasons: list[str] = field(default_factory=list)  # why invalid or failed
    seed: int = 0
    p50_lower_bound: bool = False  # as p99_lower_bound, for the p50
    p90_lower_bound: bool = False
    # The p99 verdict (bench.capacity.verdict): requests over the SLO (unfinished ones included), the
    # bounds on the true over-SLO share at `confidence`, and pass / fail / inconclusive with why.
    over_slo: int | None = None
    over_slo_upper_bound: float | None = None
    over_slo_lower_bound: float | None = None
    confidence: float | None = None
    verdict: str | None = None
    verdict_reason: str | None = None
    confirmation: bool = False  # the longer step that re-ran the search's answer
    loadgen_cores: list[int] | None = None  # where the generator was pinned (cores no instance had); None: unpinned
    # Dynamic batching only: element i counts the batches of i + 1 requests that ran (served requests).
    batch_size_counts: list[int] | None = None
    # A request mix only (capacity.request_mix), per seq_len of ServerFigures.mix_seq_lens: requests sent,
    # and their p99 latency from scheduled arrival (an unfinished request counts as ending at the drain's end).
    mix_requests: list[int] | None = None
    mix_latency_p99_s: list[float | None] | None = None
    # LLM server mode only (a generate: scenario): TTFT, TPOT, goodput, tokens/s, KV memory. Its latency_*
    # fields are then each request's scheduled arrival to its last token, and over_slo counts the requests
    # that missed either SLO (bench.capacity.llm).
    generation: GenerationStepFigures | None = None


@dataclass(frozen=True)
class GenerationStepFigures:
    """One LLM server step's generation figures (bench.capacity.llm). A request's TTFT runs from its scheduled
    arrival to its first token (queueing included); its TPOT is the mean time per output token after the
    first ((last token - first token) / (new tokens - 1)); a request with one output token has no TPOT."""

    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    over_ttft: int  # requests whose TTFT missed slo_ttft (or that had no first token by the drain's end)
    over_tpot: int  # requests whose TPOT missed slo_tpot (or that did not finish)
    goodput_per_s: float  # requests that met both SLOs / the step's span (first arrival to last token)
    output_tokens_per_s: float  # output tokens of the finished requests / the same span
    output_tokens: int  # of the finished requests
    largest_batch: int | None  # the most requests one generate call held in this step
    # the largest KV cache of the step's generate() calls after their last token (the largest batch of the
    # longest prompt and output it held sets it), over the instances
    kv_cache_bytes: int | None
    rss_bytes: int | None  # the largest instance's RSS after the step
    mix_requests: list[int] | None = None  # requests sent per request shape of GenerationServerFigures


@dataclass(frozen=True)
class StallFloor:
    """Server mode's low-load step: the share of requests over the SLO when queueing cannot explain it.

    Measured after a search that answered no rate or a low one (bench.capacity.stalls): what the host's own
    stalls (scheduling delays, a noisy neighbour) put over the SLO at a load where requests hardly ever queue.
    """

    rate_per_s: float  # offered, at a low utilisation
    requests: int
    over_slo: int
    over_slo_share: float  # over_slo / requests
    over_slo_lower_bound: float  # one-sided Clopper-Pearson bounds on the true share at `confidence`
    over_slo_upper_bound: float
    limits_rate: bool  # the stalls alone come near the 1 % a p99 allows: the host, not queueing, sets the rate
    note: str | None  # e.g. "this host's stalls put 1.2 % of requests over the 40 ms SLO at any rate"
    utilisation: float | None = None  # rate_per_s / the closed-loop requests/s of the same instances
    queueing_share: float | None = None  # the M/D/1 share over the SLO at that utilisation (bench.capacity.queueing)
    confidence: float | None = None  # of the bounds
    step: ServerStep | None = None  # the step it rests on (its p99, waits, generator cost)


@dataclass(frozen=True)
class ServerFigures:
    """Server mode's search for the highest rate whose p99 meets the SLO."""

    slo_p99_s: float
    max_rate_per_s: float | None  # highest passing offered rate; None: no rate met the SLO
    stop_reason: str
    min_duration_s: float
    min_requests: int
    steps: list[ServerStep] = field(default_factory=list)
    low_load_step: ServerStep | None = None  # at a tenth of max_rate_per_s (or the least a valid step allows)
    verdict_rule: str | None = None  # how a step passed (bench.capacity.verdict.RULE); None: recorded before verdicts
    confirmed: bool = False  # max_rate_per_s passed a confirming step (records without verdicts: never)
    batching_max_batch: int | None = None  # dynamic batching (capacity.batching); None: one request per call
    batching_max_delay_s: float | None = None
    mix_seq_lens: list[int] | None = None  # a request mix (capacity.request_mix): the seq_lens drawn ...
    mix_weights: list[float] | None = None  # ... with these relative weights; None: every request the scenario's
    # The host's stall floor (one request per call only); None: not measured (the search's answer is where
    # queueing puts it, a search not run, batched searches, rows from before it)
    stall_floor: StallFloor | None = None


@dataclass(frozen=True)
class GenerationServerFigures:
    """LLM server mode (a generate: scenario's `capacity:`, bench.capacity.llm): the highest request rate at which
    p99 TTFT <= slo_ttft_s and p99 TPOT <= slo_tpot_s both hold, by the p99 verdict on requests missing either."""

    slo_ttft_s: float
    slo_tpot_s: float
    max_rate_per_s: float | None  # the highest confirmed rate; None: none
    stop_reason: str
    min_duration_s: float
    min_requests: int
    max_batch: int  # requests per generate() call at most (static batching; 1: none)
    max_delay_s: float | None  # how long a free instance waits for company after the first request's arrival
    prompt_tokens: list[int]  # the request shapes (the mix; without one, the scenario's seq_len and new_tokens) ...
    new_tokens: list[int]
    weights: list[float]  # ... drawn with these relative weights
    probe_ttft_s: list[float | None] = field(default_factory=list)  # per shape: one request alone, at rest
    probe_tpot_s: list[float | None] = field(default_factory=list)
    steps: list[ServerStep] = field(default_factory=list)  # each with its `generation` figures
    verdict_rule: str | None = None
    confirmed: bool = False


@dataclass(frozen=True)
class InstanceMemory:
    """One instance's memory after serving (psutil memory_full_info; VmHWM from /proc)."""

    instance: int
    rss_bytes: int | None
    uss_bytes: int | None  # pages no other process shares
    pss_bytes: int | None  # shared pages split among the processes sharing them
    peak_rss_kernel_bytes: int | None  # VmHWM over the instance's life (offline's big batches included)


@dataclass(frozen=True)
class LayoutFigures:
    """One layout: `instances` processes with `threads_per_instance` threads on disjoint cores."""

    layout: str  # e.g. "2x1": 2 instances x 1 thread
    instances: int
    threads_per_instance: int
    requested: bool  # listed in the suite (or by `auto`); false: a point of the instance-count sweep
    status: str  # ok, failed or skipped
    note: str | None = None
    cores: list[list[int]] = field(default_factory=list)
    closed_loop: ClosedLoopFigures | None = None  # batch_size = the scenario's; 1 instance: SingleStream
    offline: ClosedLoopFigures | None = None  # large batches: max throughput
    server: ServerFigures | None = None
    memory: list[InstanceMemory] = field(default_factory=list)
    batched_server: ServerFigures | None = None  # the same search with dynamic batching (capacity.batching)
    generation_server: GenerationServerFigures | None = (
        None  # a generate: scenario's LLM server mode (instead of server)
    )


@dataclass(frozen=True)
class CapacityFigures:
    """Capacity measurement of a scenario (`capacity:` in a suite; bench.capacity.host)."""

    status: str  # ok or failed: capacity never fails the row
    note: str | None
    slo_p99_s: float | None  # None: a generate: scenario (its layouts' generation_server has its SLOs)
    usable_cores: int
    best_layout: str | None  # the requested layout with the highest rate at the SLO
    layouts: list[LayoutFigures] = field(default_factory=list)
    percentile_rule: str | None = None
    duration_s: float | None = None
    memory_total_bytes: int | None = None  # the measuring machine's memory: a fleet plan's host per host group


@dataclass(frozen=True)
class Timeline:
    """Where a scenario's wall time went, in seconds (bench.results.timeline); null: the phase did not run."""

    wall_s: float  # the row's whole time in the runner, profile and capacity included
    overhead_s: float  # wall_s minus the timed steady state (warmup counts as overhead)
    artifact_s: float | None = None  # preparing, or finding in the cache, the artifact and fp32 reference
    process_start_s: float | None = None  # spawn or fork to pytest configured in the worker
    imports_s: float | None = None  # then to the start of load: harness import, collection, libraries, threads
    load_s: float | None = None  # phases from the worker's events, start to next start
    compile_s: float | None = None
    first_inference_s: float | None = None
    warmup_s: float | None = None
    steady_s: float | None = None  # the timed rounds: the measurement itself
    fidelity_s: float | None = None
    hygiene_s: float | None = None
    generation_s: float | None = None
    pipeline_s: float | None = None
    release_s: float | None = None
    teardown_s: float | None = None  # the worker's last event to its exit seen by the runner
    profile_s: float | None = None  # profile: true, its separate run
    capacity_s: float | None = None  # capacity:, its instance processes
    other_s: float | None = None  # what none of the above covers (the runner's own work between them)
    bandwidth_s: float | None = (
        None  # a generation row: its decode floor, with the bandwidth measured if the run had none yet
    )


@dataclass(frozen=True)
class ResultRecord:
    run_id: str
    scenario_id: str
    suite: str
    model: str
    batch_size: int
    threads: int
    interop_threads: int
    precision: str
    load: str
    runtime: str
    input_shape: list[int]
    status: str
    reason: str | None = None
    artifact_bytes: int | None = None
    artifact_sha256: str | None = None
    load_s: float | None = None
    first_inference_s: float | None = None
    latency_s: LatencyStats | None = None
    throughput_samples_per_s: float | None = None
    rss_bytes: RssFigures = field(default_factory=RssFigures)
    peak_rss_kernel_bytes: int | None = None  # max of the per-phase VmHWM readings
    peak_rss_kernel_phase_bytes: KernelPeaks = field(default_factory=KernelPeaks)
    peak_rss_rusage_bytes: int | None = None  # ru_maxrss: lifetime peak, never reset
    torch_num_threads: int | None = None  # what torch.get_num_threads() said in the worker
    torch_num_interop_threads: int | None = None
    cpu_utilization: float | None = None  # worker CPU time / wall time in steady state
    fidelity: Fidelity | None = None
    artifact_format: str | None = None  # state_dict, torchscript, exported_program, onnx or tflite
    artifact_prepare_s: float | None = None  # 0.0 when taken from the cache
    artifact_cached: bool | None = None
    quantized_layers: int | None = None  # int8 and int4 precisions: layers replaced with (or run as) quantized versions
    # ONNX Runtime int8_dynamic: weights quantized to 7 bits (x86 without VNNI; bench.runtimes.formats.ort_reduce_range)
    ort_reduce_range: bool | None = None
    ort_graph_optimization_level: str | None = None  # onnxruntime rows: the session's optimisation level
    rounds_limited_by_time: bool | None = None  # fewer than min_rounds: the precision is pathologically slow
    percentile_rule: str | None = None
    rss_samples: int | None = None
    rss_interval_s: float | None = None
    rss_steady_interval_s: float | None = None  # the sampling interval while the steady state is timed
    rss_sampler_cpu_s: float | None = None  # CPU time the parent's sampler thread used: its cost
    environment_fingerprint: str | None = None
    started_at: str | None = None
    duration_s: float | None = None
    git_sha: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # run-folder-relative paths of raw outputs
    profile: ProfileFigures | None = None  # only with `profile: true`
    host_group: str | None = None  # fleet runs with `hosts:`: the host group that measured the row
    fleet: FleetPlacement | None = None  # fleet runs: the worker, host and times of the measurement
    model_source: ModelSourceInfo | None = None  # the user's model file or factory, when `model` names one
    variant: str = ROW_DEFAULTS["variant"]  # dense, or how the model was pruned (bench.models.pruning)
    pruning: PruningFacts | None = None
    pipeline: PipelineFigures | None = None  # only with `data:`
    model_freed_on_release: bool | None = None  # a weak reference to the model died after del + gc.collect()
    capacity: CapacityFigures | None = None  # only with a `capacity:` block
    grad_mode: str = ROW_DEFAULTS["grad_mode"]  # inference_mode, no_grad or enabled (bench.checks.hygiene)
    module_mode: str = ROW_DEFAULTS["module_mode"]  # eval or train
    hygiene: HygieneFigures | None = None  # torch rows: what the grad and module modes changed
    contention: Contention | None = None  # others' CPU use and steal over the timed steady state (ok rows)
    seq_len: int | None = None  # models with named inputs: the `seq` dimension (bench.suite.inputs)
    named_inputs: list[dict[str, Any]] | None = None  # their names, per-sample shapes and dtypes
    task: str | None = None  # feature-extraction, text-classification or causal-lm: decides fidelity
    generation: GenerationFigures | None = None  # only with `generate:`
    compile_s: float | None = None  # load: compile, its first call (Dynamo + Inductor), apart from load_s
    compiled: CompiledRuntime | None = None  # load: compile, aoti or openvino
    worker_kind: str | None = None  # fork (from the run's zygote, bench.measure.zygote) or fresh (a new interpreter)
    worker_os_threads: int | None = None  # the worker's OS threads at the end of its steady state
    timeline: Timeline | None = None  # where the row's wall time went
    quantization: QuantizationFacts | None = None  # int8_static and the weight-only precisions
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a '{self.status}' record needs a reason")

    @property
    def contended(self) -> bool:
        """Measured while other processes or the hypervisor took the CPU (bench.checks.contention)."""
        return self.contention is not None and self.contention.verdict == "contended"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRecord:
        """Build a record from JSON; keys from newer schemas are ignored, missing optional ones default."""
        return from_json(cls, data)


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds (`X` or `X | None`), else None."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = inner[0] if len(inner) == 1 else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


# The record's fields that are dataclasses of their own, and their classes: read from the type hints.
NESTED_FIELDS: dict[str, type] = {
    name: cls for name, hint in field_types(ResultRecord).items() if (cls := _dataclass_of(hint)) is not None
}
# The fields every row must have; ROW_DEFAULTS holds what an older row without one meant.
REQUIRED_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(ResultRecord)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def _update_to_1(row: dict[str, Any]) -> None:
    """A row without schema_version (from before rows were versioned, or made by hand): it had no status,
    so one is inferred: ok where it has latencies."""
    row.setdefault("status", "ok" if row.get("latency_s") else "failed")


# UPGRADES[n] brings a row of schema version n-1 to version n, in place; applied in order.
UPGRADES: dict[int, Callable[[dict[str, Any]], None]] = {1: _update_to_1}


def upgrade_row(row: Mapping[str, Any], identity: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `row` in this version's shape, and the required fields it lacked (status included).

    `identity`: the run_id and suite of the run it belongs to (its run.json, or the history), for a
    row without them. Fields are filled from ROW_DEFAULTS; a row from a newer version keeps its
    extra keys (ResultRecord.from_dict ignores them)."""
    data = dict(row)
    version = data.get("schema_version")
    version = version if isinstance(version, int) and not isinstance(version, bool) else 0
    lacking = [key for key in REQUIRED_FIELDS if key not in data and key != "scenario_id"]
    for number in range(version + 1, SCHEMA_VERSION + 1):
        UPGRADES[number](data)
    if version < SCHEMA_VERSION:
        data["schema_version"] = SCHEMA_VERSION
    for key, value in (*identity.items(), *ROW_DEFAULTS.items()):
        if key not in data:
            data[key] = copy.deepcopy(value)
    if data.get("status") != "ok" and not data.get("reason"):
        data["reason"] = "(no reason recorded)"
    return data, [key for key in lacking if key in data]


def record_from_row(row: Mapping[str, Any]) -> tuple[ResultRecord, list[str]]:
    """A row upgraded by upgrade_row as a ResultRecord, and the nested figures an older schema lacked
    (`latency_s.p99`). Nested figures are cleaned: a required one an older schema lacked is None, a number
    that is not finite is None, a value of the wrong kind is dropped. Raises TypeError or ValueError for a
    row that is still no record (e.g. an unknown status)."""
    data = dict(row)
    filled: list[str] = []
    for key, cls in NESTED_FIELDS.items():
        value = data.get(key)
        if isinstance(value, dict):
            fields = dataclasses.fields(cls)
            required = [f.name for f in fields if f.default is dataclasses.MISSING]
            missing = [n for n in required if n not in value]
            if missing and cls in (LatencyStats, Fidelity):
                filled.extend(f"{key}.{n}" for n in missing)
            # Required fields an older schema lacked become None; optional ones keep their defaults.
            data[key] = {
                f.name: _clean(value.get(f.name), str(f.type))
                for f in fields
                if f.name in value or f.default is dataclasses.MISSING
            }
        elif value is not None and key in data:
            data[key] = None  # an unexpected shape: drop it rather than the row
    if not isinstance(data.get("files"), dict):
        data["files"] = {}
    return ResultRecord.from_dict(data), filled


def _clean(value: Any, kind: str) -> Any:
    """A finite number, or a string where the field is one (`kind`: its annotation); else None.

    Lists and mappings (capacity layouts, fleet attempts) pass as they are: from_dict types them."""
    if isinstance(value, bool | list | dict) or value is None:
        return value
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    return value if isinstance(value, str) and "str" in kind else None


def append_record(path: Path, record: ResultRecord) -> None:
    """Append one line and make it durable before the next scenario starts."""
    data = memoryview((record.to_json() + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as exc:  # e.g. a full disk: no half line stays behind for readers to trip on
            os.ftruncate(fd, end)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        os.close(fd)
