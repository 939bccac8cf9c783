"""The worker: runs exactly one scenario in its own process, under pytest-benchmark.

The parent starts `python -m pytest bench/measure/harness.py` (bench.measure.child.launch: forked from the
run's zygote, or fresh) with BENCH_WORKER_SPEC pointing at its WorkerSpec (spec.json). The
harness tests drive a WorkerSession with the `benchmark` fixture. Phases are kept apart:
load, first inference, warmup and the steady state each get their own time and their own
kernel memory peak (VmHWM is reset between phases).

Files written into the spec's `out_dir`:
- events.jsonl: one line per phase start (monotonic time, RSS), read live by the parent;
- worker.json: the outcome and every figure measured in here, a WorkerFacts (bench.measure.contract:
  the parent reads it back as that dataclass, and a field it does not know fails the read).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import runtimes
from bench.checks import contention, generation, hygiene
from bench.checks.contention import Contention
from bench.checks.fidelity import FIDELITY_INPUTS, compare_task
from bench.measure import contract
from bench.measure.child import PARENT_PID_ENV
from bench.measure.memory import malloc_trim, max_rss_rusage_bytes, read_status_bytes, reset_peak_rss
from bench.results.record import CompiledRuntime, Fidelity, GenerationFigures, HygieneFigures, PipelineFigures
from bench.suite.scenarios import Scenario

SPEC_ENV = "BENCH_WORKER_SPEC"
# Memory is compared between sampler and kernel from the start of `load` to this event.
WINDOW_END_PHASE = "after_steady"
_UNMEASURED_PHASES = ("startup", WINDOW_END_PHASE, "fidelity", "hygiene", "pipeline", "generation", "release", "done")
WORKER_FACTS = "worker.json"


@dataclass(frozen=True)
class WorkerSpec:
    """parent → worker (spec.json)."""

    scenario: dict[str, Any]  # Scenario.to_dict()
    artifact_path: str
    reference_path: str | None  # the fp32 reference outputs for fidelity; None: no fidelity
    out_dir: str  # where events.jsonl and worker.json go
    generation_path: str | None = None  # generate: the artifact generation loads when not the timed one
    reference_tokens_path: str | None = None  # generate: fp32 eager's greedy tokens (a ReferenceTokens)


@dataclass(frozen=True)
class SelfcheckBlock:
    """One block of `bench selfcheck` (bench.measure.harness): the harness's rounds beside torch's Timer."""

    block: int
    timer_median_s: float
    round_starts_s: list[float]  # time.monotonic() at each harness round's start
    contention: Contention | None


# The load facts runtimes.load_model reports that the parent takes from prepare_artifact instead:
# the conversion's, the same in the artifact and in the loaded model.
_ARTIFACT_FACTS = ("quantized_layers", "quantization", "pruning")


@dataclass
class WorkerFacts:
    """worker → parent: the outcome and every figure measured inside the worker (worker.json).

    Each field is filled by the phase that measures it; a failed worker's file keeps what was
    measured before the failure. Sizes in bytes, times in seconds (time.perf_counter spans;
    `*_starts_s` are time.monotonic, one clock with the parent's)."""

    status: str = "failed"  # ok, failed or unsupported
    phase: str = "startup"  # the phase reached: a failure's phase
    reason: str | None = None  # why failed or unsupported
    traceback: str | None = None
    torch_num_threads: int | None = None  # the pools as set: torch.get_num_threads() after set_num_threads
    torch_num_interop_threads: int | None = None
    clear_refs_works: bool | None = None  # /proc/self/clear_refs resets VmHWM: per-phase kernel peaks hold
    load_s: float | None = None
    compile_s: float | None = None  # load compile: the first call, Dynamo and Inductor compiling
    first_inference_s: float | None = None
    compiled: CompiledRuntime | None = None  # compile, aoti, openvino: what compiled it (cache and graphs included)
    ort_graph_optimization_level: str | None = None  # onnxruntime: the session's level
    fixed_batch: int | None = None  # a user's file with a fixed batch dimension: that batch size
    hygiene: HygieneFigures | None = None  # grad and module modes' facts (bench.checks.hygiene); None: nothing to say
    rss_before_load_bytes: int | None = None
    rss_after_load_bytes: int | None = None
    rss_after_first_inference_bytes: int | None = None
    rss_before_release_bytes: int | None = None
    rss_after_release_bytes: int | None = None
    rss_after_malloc_trim_bytes: int | None = None  # None without glibc's malloc_trim
    peak_rss_rusage_bytes: int | None = None  # getrusage's ru_maxrss: the worker's whole life
    kernel_peaks_bytes: dict[str, int | None] = field(default_factory=dict)  # VmHWM per measured phase
    uss_at_phase_end_bytes: dict[str, int | None] = field(default_factory=dict)
    warmup_times_s: list[float] = field(default_factory=list)
    rounds_limited_by_time: bool | None = None  # fewer than min_rounds would have overrun max_time_s
    rounds: int | None = None  # steady rounds timed
    round_starts_s: list[float] = field(default_factory=list)  # time.monotonic() at each steady round's start
    cpu_utilization: float | None = None  # CPU time of all threads / wall time over the steady state
    contention: Contention | None = None
    os_threads_after_steady: int | None = None  # /proc/self/task after the steady state
    fidelity: Fidelity | None = None
    pipeline: PipelineFigures | None = None
    generation: GenerationFigures | None = None
    model_freed_on_release: bool | None = None  # None: the model takes no weak reference
    selfcheck_blocks: list[SelfcheckBlock] = field(default_factory=list)

    @staticmethod
    def process_facts(facts: dict[str, Any]) -> str | None:
        """The compile cache (cold or warm) from Runtime.set_up_process's facts; an unknown key fails."""
        unknown = sorted(set(facts) - {"compile_cache"})
        if unknown:
            raise contract.ContractError(f"process facts: no WorkerFacts field for {', '.join(unknown)}")
        return facts.get("compile_cache")

    def take_load_facts(self, facts: dict[str, Any], compile_cache: str | None) -> None:
        """What runtimes.load_model says about the loaded model; an unknown key fails (bench.measure.contract)."""
        known = {"compiled", "ort_graph_optimization_level", "fixed_batch", "hygiene", *_ARTIFACT_FACTS}
        unknown = sorted(set(facts) - known)
        if unknown:
            raise contract.ContractError(f"load facts: no WorkerFacts field for {', '.join(unknown)}")
        if facts.get("compiled") is not None:
            self.compiled = contract.build(CompiledRuntime, {**facts["compiled"], "cache": compile_cache})
        self.ort_graph_optimization_level = facts.get("ort_graph_optimization_level")
        self.fixed_batch = facts.get("fixed_batch")
        self.add_hygiene(facts.get("hygiene") or {})

    def add_hygiene(self, facts: dict[str, Any]) -> None:
        if facts:
            known = dataclasses.asdict(self.hygiene) if self.hygiene is not None else {}
            self.hygiene = contract.build(HygieneFigures, {**known, **facts}, "hygiene")


class WorkerSession:
    """One scenario's life inside the worker; writes worker.json when closed."""

    def __init__(self, spec: WorkerSpec, configured_s: float | None = None):
        self.scenario = Scenario.from_dict(spec.scenario)
        self.runtime = runtimes.runtime_for(self.scenario)
        self.artifact_path = Path(spec.artifact_path)
        self.out_dir = Path(spec.out_dir)
        self.reference_path = Path(spec.reference_path) if spec.reference_path else None
        self.generation_path = Path(spec.generation_path) if spec.generation_path else None
        self.reference_tokens_path = Path(spec.reference_tokens_path) if spec.reference_tokens_path else None
        self.facts = WorkerFacts()
        self.compile_cache: str | None = None  # load compile: cold or warm (bench.runtimes.compile)
        self._events = open(self.out_dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._stack = contextlib.ExitStack()
        self.infer: Callable[[Any], Any] | None = None
        self.batch: Any = None
        self.saved_buffers: dict[str, Any] = {}  # module_mode train: the buffers as loaded (bench.checks.hygiene)
        self.block_rounds = 0  # bench selfcheck: steady rounds per block, sized by the first block's warmup
        # The timeline's first marks (bench.results.timeline): pytest ready, then the harness imported and collected.
        if configured_s is not None:
            self._event("configured", configured_s)
        self._event("startup")

    @classmethod
    def from_env(cls, configured_s: float | None = None) -> WorkerSession:
        path = os.environ.get(SPEC_ENV)
        if not path:
            raise RuntimeError(f"{SPEC_ENV} is not set: the harness is started by 'bench run', not by hand")
        return cls(contract.read(WorkerSpec, Path(path)), configured_s)

    def __enter__(self) -> WorkerSession:
        with self.guard():
            import torch

            # Fix the intra- and inter-op pools before any operator runs.
            torch.set_num_threads(self.scenario.threads)
            torch.set_num_interop_threads(self.scenario.interop_threads)
            self.facts.torch_num_threads = torch.get_num_threads()
            self.facts.torch_num_interop_threads = torch.get_num_interop_threads()
            self.facts.clear_refs_works = reset_peak_rss()
            runtimes.import_libraries(self.scenario)
            # before anything loads or compiles (compile: Inductor reads its cache folder on first use)
            facts, cleanup = self.runtime.set_up_process(self.scenario, self.artifact_path)
            self._stack.callback(cleanup)
            self.compile_cache = WorkerFacts.process_facts(facts)
            # Every phase runs in the scenario's grad mode (inference_mode unless the suite asks otherwise).
            self._stack.enter_context(hygiene.grad_context(self.scenario.grad_mode))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.facts.peak_rss_rusage_bytes = max_rss_rusage_bytes()
        self._event("done")
        self._events.close()
        contract.write(self.out_dir / WORKER_FACTS, self.facts)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Record an exception as this scenario's failure reason, then let pytest see it."""
        try:
            yield
        except runtimes.Unsupported as exc:
            self.facts.status, self.facts.reason = "unsupported", str(exc)
            raise
        except BaseException as exc:
            self.facts.status = "failed"
            if self.facts.reason is None:  # the first failure's, not an exit's after it
                self.facts.reason = f"{type(exc).__name__} during {self.facts.phase}: {exc}"
                self.facts.traceback = traceback.format_exc()
            raise

    def _event(self, phase: str, t_s: float | None = None) -> None:
        t_s = time.monotonic() if t_s is None else t_s
        event = {"phase": phase, "t_s": t_s, "rss_bytes": read_status_bytes().get("VmRSS")}
        self._events.write(json.dumps(event) + "\n")
        self._events.flush()

    def _enter(self, phase: str) -> None:
        """Close the current phase (its USS and kernel peak), reset VmHWM, open `phase`.

        The order keeps the parent's sampled window (from the `load` event to the
        `after_steady` event) inside the span the kernel peaks cover, so the two compare fairly.
        """
        current = self.facts.phase
        measured = current not in _UNMEASURED_PHASES
        if measured:  # psutil allocates: read USS while the current phase's peak still counts it
            self.facts.uss_at_phase_end_bytes[current] = psutil.Process().memory_full_info().uss
        if phase == WINDOW_END_PHASE:
            self._event(phase)
        if measured:
            self.facts.kernel_peaks_bytes[current] = read_status_bytes().get("VmHWM")
        reset_peak_rss()
        if phase != WINDOW_END_PHASE:
            self._event(phase)
        self.facts.phase = phase

    def load(self) -> None:
        """File to ready model: `load_s`. The seeded input batch is made first, outside it."""
        self.batch = runtimes.make_batch(self.scenario)
        self._enter("load")
        self.facts.rss_before_load_bytes = read_status_bytes().get("VmRSS")
        started = time.perf_counter()
        self.infer, facts = runtimes.load_model(self.scenario, self.artifact_path)
        self.facts.load_s = time.perf_counter() - started
        self.facts.take_load_facts(facts, self.compile_cache)
        self.saved_buffers, mode_facts = hygiene.prepare(self.scenario, self.infer)
        self.facts.add_hygiene(mode_facts)
        self.facts.rss_after_load_bytes = read_status_bytes().get("VmRSS")

    def compile(self) -> None:
        """torch.compile compiles on the first call: that call alone is `compile_s`, its own phase."""
        if not self.runtime.compiles_on_first_call:
            return
        assert self.infer is not None
        self._enter("compile")
        facts = self.runtime.first_call(self.infer, self.batch)
        self.facts.compile_s = facts["compile_s"]
        known = self.facts.compiled or CompiledRuntime(cache=self.compile_cache)
        self.facts.compiled = dataclasses.replace(known, graphs=facts["graphs"])

    def first_inference(self) -> None:
        assert self.infer is not None
        self._enter("first_inference")
        started = time.perf_counter()
        self.infer(self.batch)
        self.facts.first_inference_s = time.perf_counter() - started
        self.facts.rss_after_first_inference_bytes = read_status_bytes().get("VmRSS")

    def warmup(self) -> int:
        """Run the warmup rounds; returns how many steady rounds fill the time budget."""
        assert self.infer is not None
        self._enter("warmup")
        measure = self.scenario.measure
        times_s: list[float] = []
        for _ in range(measure.warmup_rounds):
            started = time.perf_counter()
            self.infer(self.batch)
            times_s.append(time.perf_counter() - started)
            # A pathologically slow scenario is warm enough: even its fastest call, twice, fills the budget.
            # (Not one slow call: on a busy host one call can stall for a second.)
            if len(times_s) >= 2 and min(times_s) * len(times_s) > measure.max_time_s:
                break
        self.facts.warmup_times_s = times_s
        # Size the steady state from the fastest warm call: a stall only ever adds time, and a stalled
        # median once cut a fast scenario to a handful of rounds. No warmup: the first call is all we know.
        estimate_s = min(times_s) if times_s else self.facts.first_inference_s
        assert estimate_s is not None  # first_inference ran
        rounds, limited = measure.rounds_for(estimate_s)
        self.facts.rounds_limited_by_time = limited
        return rounds

    def steady(self, benchmark: Any, rounds: int, phase: str = "steady") -> list[float]:
        """Time `rounds` single calls with pytest-benchmark; returns each round's start time."""
        assert self.infer is not None
        self._enter(phase)
        round_starts_s: list[float] = []
        batch = self.batch

        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            round_starts_s.append(time.monotonic())  # outside the timed region
            return (batch,), {}

        parent = os.environ.get(PARENT_PID_ENV)
        probe = contention.Probe(int(parent) if parent and parent.isdigit() else None)
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        benchmark.pedantic(self.infer, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
        wall_s = time.perf_counter() - wall_started
        # CPU time of all threads over wall time: ~threads when the pool really runs in parallel.
        self.facts.cpu_utilization = (time.process_time() - cpu_started) / wall_s
        figures = probe.finish(self.scenario.threads)
        self.facts.contention = contract.build(Contention, figures, "contention") if figures else None
        # A forked worker must run the same pools as a fresh one: its OS threads, compared by benchmarks/.
        self.facts.os_threads_after_steady = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc") else None
        self.facts.rounds = rounds
        self._enter(WINDOW_END_PHASE)
        return round_starts_s

    def pipeline(self) -> None:
        """With `data:`: the folder's images through transforms, copy, model and top-k, each stage
        timed apart (bench.checks.pipeline); after the steady state, so it never disturbs the timed figures."""
        spec = self.scenario.data
        if spec is None:
            return
        from bench.checks.pipeline import build_loader, run_pipeline

        self._enter("pipeline")
        fixed = self.facts.fixed_batch is not None
        loader = build_loader(spec, self.scenario.input_shape, self.scenario.batch_size, drop_last=fixed)
        result = run_pipeline(loader, self.infer, lambda batch: runtimes.to_runtime_input(self.scenario, batch))
        if result.images == 0:
            if fixed and len(loader.dataset):
                raise ValueError(
                    f"data.folder {spec.folder} has {len(loader.dataset)} image(s) (after max_images), fewer than "
                    f"the model's fixed batch size {self.scenario.batch_size}: no whole batch to run"
                )
            raise ValueError(f"data.folder {spec.folder} gave no image (expected FOLDER/CLASS/IMAGE files)")
        figures = {**result.figures(), "loader_workers": spec.loader_workers}
        self.facts.pipeline = contract.build(PipelineFigures, figures, "pipeline")

    def fidelity(self) -> None:
        """Outputs on the fidelity inputs against the fp32 eager reference; after timing, untimed."""
        if self.reference_path is None:
            return
        import torch

        assert self.infer is not None
        self._enter("fidelity")
        reference = torch.load(self.reference_path, map_location="cpu", weights_only=True)
        inputs = runtimes.fidelity_batch(self.scenario, reference.shape[0])
        batch = runtimes.to_runtime_input(self.scenario, inputs)
        output = runtimes.run_inputs(self.infer, batch, self.facts.fixed_batch)
        task = self.scenario.source.task if self.scenario.source else None
        named = inputs if isinstance(inputs, dict) else None
        mask = named.get("attention_mask") if named else None
        figures = compare_task(task, output, reference, mask, named)
        self.facts.fidelity = contract.build(Fidelity, figures, "fidelity")

    def generate(self) -> None:
        """With `generate:` (causal-lm): greedy generation with the KV cache, after everything timed, the way
        the runtime generates (its `decoder`); a pair that cannot generate says why in the figures' note."""
        policy = self.scenario.generate
        if policy is None:
            return
        self._enter("generation")
        prompt = runtimes.generation_prompts(self.scenario)
        reason = runtimes.generation_reason(self.scenario)
        try:
            if reason is not None:
                raise runtimes.Unsupported(reason)
            decoder = self.runtime.decoder(self.scenario, self.infer, prompt, self.generation_path)
        except runtimes.Unsupported as exc:
            self.facts.generation = GenerationFigures(
                prompt_tokens=self.scenario.seq_len,
                new_tokens=policy.new_tokens,
                batch_size=self.scenario.batch_size,
                rounds=0,
                ttft_s=None,
                tpot_s=None,
                tokens_per_s=None,
                note=str(exc),
            )
            return
        reference = None
        if self.reference_tokens_path is not None:
            reference = contract.read(generation.ReferenceTokens, self.reference_tokens_path)
        figures = generation.measure(decoder, prompt["input_ids"].tolist(), policy, reference)
        self.facts.generation = contract.build(GenerationFigures, figures, "generation")

    def check_hygiene(self) -> None:
        """Torch rows, after timing: do outputs repeat, and what the grad and module modes changed (checks.hygiene)."""
        if self.runtime.engine != "torch":
            return
        if self.reference_path is None and hygiene.is_default(self.scenario):
            return  # a compiled file of the user's: the fidelity inputs may not fit its fixed shapes
        self._enter("hygiene")
        inputs = runtimes.to_runtime_input(self.scenario, runtimes.fidelity_batch(self.scenario, FIDELITY_INPUTS))
        self.facts.add_hygiene(hygiene.check(self.scenario, self.infer, inputs, self.batch, self.saved_buffers))

    def release(self) -> None:
        """Drop the model, collect garbage, then trim the C heap: RSS after each step (untimed, last).

        What "releasing memory" gives back in a long-lived server: freed objects often stay in
        the allocator's arenas until malloc_trim returns them to the kernel.
        """
        import gc
        import weakref

        self._enter("release")
        self.facts.rss_before_release_bytes = read_status_bytes().get("VmRSS")
        try:
            model = weakref.ref(self.infer)
        except TypeError:  # a callable that takes no weak reference: freed or not, we cannot tell
            model = None
        self.infer = None
        gc.collect()
        self.facts.model_freed_on_release = model() is None if model is not None else None
        self.facts.rss_after_release_bytes = read_status_bytes().get("VmRSS")
        if malloc_trim():
            self.facts.rss_after_malloc_trim_bytes = read_status_bytes().get("VmRSS")

    def run_scenario(self, benchmark: Any) -> None:
        with self.guard():
            self.load()
            self.compile()
            self.first_inference()
            rounds = self.warmup()
            self.facts.round_starts_s = self.steady(benchmark, rounds)
            self.fidelity()
            self.check_hygiene()
            self.generate()
            self.pipeline()
            self.release()
            self.facts.status = "ok"
