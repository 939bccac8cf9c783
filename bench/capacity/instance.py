"""A serving instance: one process pinned to its own cores, running one scenario's model.

The parent (bench.capacity.host) starts N of these with bench.measure.child.launch (`python -m
bench.capacity.instance SPEC SOCKET`, forked from the run's zygote when there is one), each with an
InstanceSpec file (scenario, artifact, index, cores). An instance connects to the parent's
Unix socket SOCKET (an abstract name: no file, no path length limit), receives the shared
request pipe over it (SCM_RIGHTS: a forked instance is the zygote's child, not the parent's,
so it cannot inherit the pipe) and then takes one command per line on that socket and replies
on it; nothing a library prints can garble them. Spec, commands and replies are dataclasses
of this module, sent with bench.measure.contract: a field renamed on one side fails the read. Each
instance pins itself with os.sched_setaffinity before torch starts its thread pools, loads
the model through bench.runtimes (so every precision and load mode works here too), warms up
and replies `Ready`.

Commands (their replies in brackets):
- `ClosedLoop` (`ClosedLoopDone`): call the model back to back on a batch of `batch_size`
  from `start_at_s` (time.monotonic, shared by all processes on Linux) for `duration_s`;
  reply with the number of calls and every call's time.
- `Serve` (`Serving` once it reads the request pipe, then `ServeDone`): take requests from
  the shared request pipe (8-byte request numbers, written by bench.capacity.loadgen; every instance
  reads the same pipe, so a free instance takes the next request) until a STOP number; write
  each request's start and end time into the step's shared file. A request read after the
  step was cancelled is dropped unserved. With `batching`, a free instance holding a request
  takes more until it has `max_batch` or until `max_delay_s` after the first one's scheduled
  arrival (from the step file), then runs them as one batch: as Triton's dynamic batcher,
  except that each free instance batches for itself rather than one queue batching for all.
- `ServeGenerate` (`Serving`, then `GenerateDone`): LLM server mode (a generate: scenario, bench.capacity.llm):
  as `Serve`, but each request is a generation of one of the InstanceSpec's request shapes (the
  step file's `seq` says which); the requests taken together (with `batching`, as above; else one)
  run as one generate() call: static batching, padded to the longest prompt, generating the
  longest output. Each request's first token time and its own last token time go into the step
  file (`first`, `ended`); the reply says the largest batch and the largest KV cache's bytes.
- `Exit`.
An instance that fails replies `Failed` with the error, then ends.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import math
import mmap
import os
import secrets
import select
import socket
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench.checks.generation import cache_bytes, greedy_options, step_clock_class
from bench.measure import contract
from bench.measure.child import Child, ChildFiles, describe_exit, die_with_parent, launch

if TYPE_CHECKING:
    from bench.measure.zygote import ZygoteWorkers

REQUEST = struct.Struct("<Q")
STOP = 2**64 - 1
# The step file, float64: [cancel flag] then one region of n per request field, in STEP_FIELDS
# order: the instance writes start, end, instance and batch (the size of the batch the request
# ran in); the parent writes scheduled (each arrival's time.monotonic) and seq (with a request
# mix: the index of the request's seq_len; LLM server mode: of its request shape) before the first request.
# LLM server mode's instance also writes `first`: the time of the request's first token.
HEADER_SLOTS = 1
STEP_FIELDS = ("started", "ended", "instance", "batch", "scheduled", "seq", "first")
WARMUP_CALLS = 5
# LLM server mode times each request shape alone this many times (the median sets the search's start): one
# round of tiny_gpt2 on a contended 2-core host took 4x the worker's median per-token time.
PROBE_ROUNDS = 3
R = TypeVar("R")


@dataclass(frozen=True)
class GenerationSetup:
    """LLM server mode's request shapes (prompt_tokens[i], new_tokens[i]) and the most requests per generate()."""

    prompt_tokens: list[int]
    new_tokens: list[int]
    max_batch: int


@dataclass(frozen=True)
class InstanceSpec:
    """parent → instance, once, before any command."""

    scenario: dict[str, Any]  # Scenario.to_dict(), threads = this width
    artifact_path: str
    batch_sizes: list[int]  # the closed loops' (the scenario's own comes on top)
    serve_batch_sizes: list[int]  # server mode's: multiples of the scenario's batch, up to batching.max_batch
    mix_seq_lens: list[int]  # a request mix's seq_lens ([] without one)
    index: int
    cores: list[int]  # the CPUs it pins itself to
    generation: GenerationSetup | None = None  # LLM server mode: prompts to prepare, shapes to time alone


@dataclass(frozen=True)
class ClosedLoop:
    start_at_s: float  # time.monotonic() at which every instance of the step starts
    duration_s: float
    batch_size: int


@dataclass(frozen=True)
class Batching:
    max_batch: int  # requests per batch, at most
    max_delay_s: float  # after the first request's scheduled arrival


@dataclass(frozen=True)
class Serve:
    requests: int  # the step's requests: the step file's size
    mixed: bool  # a request mix: the step file says each request's seq_len
    path: str  # the step file
    batching: Batching | None


@dataclass(frozen=True)
class ServeGenerate:
    requests: int  # the step's requests: the step file's size
    path: str  # the step file; its `seq` region says each request's shape
    batching: Batching | None  # None: one request per generate() call


@dataclass(frozen=True)
class Exit:
    pass


@dataclass(frozen=True)
class GenerationProbe:
    """One request of a shape generated alone, after the warmup: what it costs at rest."""

    ttft_s: float  # the call's start to its first token
    tpot_s: float | None  # mean time per token after the first (None: one new token)
    total_s: float


@dataclass(frozen=True)
class Ready:
    load_s: float
    torch_num_threads: int
    affinity: list[int]  # os.sched_getaffinity once pinned
    probes: list[GenerationProbe] = field(default_factory=list)  # LLM server mode: one per request shape


@dataclass(frozen=True)
class ClosedLoopDone:
    calls: int
    wall_s: float
    cpu_s: float  # the process's CPU time over the loop
    times_b64: str  # every call's time.monotonic() span, float64 little-endian, base64


@dataclass(frozen=True)
class Serving:
    pass


@dataclass(frozen=True)
class ServeDone:
    served: int
    cpu_s: float


@dataclass(frozen=True)
class GenerateDone:
    served: int
    cpu_s: float
    largest_batch: int  # the most requests one generate() call held (0: none served)
    kv_cache_bytes: int | None  # the largest KV cache of any of its generate() calls, after the call's last token


@dataclass(frozen=True)
class Failed:
    error: str


COMMANDS = (ClosedLoop, Serve, ServeGenerate, Exit)
REPLIES = (Ready, ClosedLoopDone, Serving, ServeDone, GenerateDone, Failed)


class InstanceError(Exception):
    """An instance died, timed out or reported an error; the message says which and why."""


def step_file_slots(requests: int) -> int:
    return HEADER_SLOTS + len(STEP_FIELDS) * requests


def step_region(name: str, requests: int) -> slice:
    """Where one request field lies in the step file."""
    start = HEADER_SLOTS + STEP_FIELDS.index(name) * requests
    return slice(start, start + requests)


# --- the instance process -------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """`SPEC SOCKET`: serve until asked to exit (or until the parent goes)."""
    die_with_parent()
    spec = contract.read(InstanceSpec, Path(argv[0]))
    # Pin first: OpenMP threads started later inherit the mask.
    os.sched_setaffinity(0, spec.cores)
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.connect("\0" + argv[1])
    _, fds, _, _ = socket.recv_fds(channel, 1, 1)
    if len(fds) != 1:
        raise RuntimeError(f"instance {spec.index}: the parent sent {len(fds)} file descriptors, expected the pipe")
    try:
        _serve_commands(spec, channel, fds[0])
    except BaseException as exc:  # the parent turns this into the layout's note
        with contextlib.suppress(OSError):
            channel.sendall(contract.encode_line(Failed(f"{type(exc).__name__}: {exc}")))
        raise
    # Asked to exit: tearing torch down at interpreter exit takes seconds and serves no one.
    os._exit(0)


def _serve_commands(spec: InstanceSpec, channel: socket.socket, request_fd: int) -> None:
    import torch

    from bench import runtimes
    from bench.suite.scenarios import Scenario

    scenario = Scenario.from_dict(spec.scenario)
    torch.set_num_threads(scenario.threads)
    torch.set_num_interop_threads(scenario.interop_threads)
    runtimes.import_libraries(scenario)
    with torch.inference_mode():
        started = time.perf_counter()
        infer, _ = runtimes.load_model(scenario, Path(spec.artifact_path))
        load_s = time.perf_counter() - started
        # Keyed by (samples, index into the request mix's seq_lens, or None: the scenario's own seq_len).
        sizes = {scenario.batch_size, *spec.batch_sizes, *spec.serve_batch_sizes}
        batches = {(size, None): runtimes.make_batch(scenario, batch_size=size) for size in sizes}
        for seq, seq_len in enumerate(spec.mix_seq_lens):
            mixed = dataclasses.replace(scenario, seq_len=seq_len)
            for size in spec.serve_batch_sizes:
                batches[size, seq] = runtimes.make_batch(mixed, batch_size=size)
        for batch in batches.values():
            for _ in range(WARMUP_CALLS):
                infer(batch)
        generator = None
        if spec.generation is not None:
            module = getattr(infer, "module", None)
            if not runtimes.runtime_for(scenario).generates or not hasattr(module, "generate"):
                raise RuntimeError(
                    f"LLM server mode runs the transformers module's generate() (load {runtimes.generating_loads()}); "
                    f"a {scenario.load} artifact has one forward call only"
                )
            generator = Generator(module, scenario, spec.generation)
        probes = generator.probes() if generator else []
        ready = Ready(load_s, torch.get_num_threads(), sorted(os.sched_getaffinity(0)), probes)
        channel.sendall(contract.encode_line(ready))
        for line in channel.makefile("rb"):
            command = contract.decode_line(line, COMMANDS, f"instance {spec.index} command")
            if isinstance(command, Exit):
                return
            if isinstance(command, ClosedLoop):
                reply: Any = _closed_loop(infer, batches[command.batch_size, None], command)
            elif isinstance(command, ServeGenerate):
                if generator is None:
                    raise RuntimeError("asked to serve generations without a GenerationSetup")
                reply = generator.serve(command, spec.index, request_fd, channel)
            else:
                reply = _serve(infer, batches, scenario.batch_size, command, spec.index, request_fd, channel)
            channel.sendall(contract.encode_line(reply))


class Generator:
    """LLM server mode's side of an instance: a prompt batch for every (requests, prompt length) it may run,
    warmed up; generate() calls on them, each token stamped."""

    def __init__(self, module: Any, scenario: Any, setup: GenerationSetup):
        from bench import runtimes

        self.module, self.setup = module, setup
        self.prompts: dict[tuple[int, int], dict[str, Any]] = {}
        for length in sorted(set(setup.prompt_tokens)):
            shaped = dataclasses.replace(scenario, seq_len=length)
            for size in range(1, setup.max_batch + 1):
                batch = runtimes.make_batch(shaped, batch_size=size)
                self.prompts[size, length] = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
        for prompt in self.prompts.values():  # warmup: the first calls of a shape allocate its buffers
            self.generate(prompt, 2)

    def generate(self, prompt: dict[str, Any], new_tokens: int) -> tuple[float, list[float], Any]:
        """One greedy generate(): its start and each token's time (time.monotonic), and its output."""
        clock = step_clock_class()()
        offset = time.monotonic() - time.perf_counter()  # the clock stamps perf_counter
        started = time.monotonic()
        out = self.module.generate(**prompt, streamer=clock, **greedy_options(self.module, new_tokens))
        stamps = [stamp + offset for stamp in clock.stamps_s[1:]]  # the first put() is the prompt itself
        if len(stamps) != new_tokens:
            raise RuntimeError(f"generate produced {len(stamps)} steps, expected {new_tokens}")
        return started, stamps, out

    def probes(self) -> list[GenerationProbe]:
        """Each request shape generated alone PROBE_ROUNDS times: the median round (by its whole time)."""
        out = []
        for prompt_tokens, new_tokens in zip(self.setup.prompt_tokens, self.setup.new_tokens, strict=True):
            rounds = []
            for _ in range(PROBE_ROUNDS):
                started, stamps, _ = self.generate(self.prompts[1, prompt_tokens], new_tokens)
                tpot = (stamps[-1] - stamps[0]) / (new_tokens - 1) if new_tokens > 1 else None
                rounds.append(GenerationProbe(stamps[0] - started, tpot, stamps[-1] - started))
            out.append(sorted(rounds, key=lambda probe: probe.total_s)[PROBE_ROUNDS // 2])
        return out

    def serve(self, command: ServeGenerate, index: int, request_fd: int, channel: socket.socket) -> GenerateDone:
        """As _serve, one generate() per batch of requests: padded to the longest prompt, the longest output."""
        requests, batching = command.requests, command.batching
        prompt_tokens, new_tokens = self.setup.prompt_tokens, self.setup.new_tokens
        os.set_blocking(request_fd, batching is None)
        with open(command.path, "r+b") as f, mmap.mmap(f.fileno(), 8 * step_file_slots(requests)) as shared:
            slots = memoryview(shared).cast("d")
            region = {name: step_region(name, requests).start for name in STEP_FIELDS}
            try:
                channel.sendall(contract.encode_line(Serving()))
                served = largest = 0
                kv_bytes = None
                cpu_started = time.process_time()
                while True:
                    if batching is None:
                        numbers, stopped = _take_one(request_fd)
                    else:
                        numbers, stopped = _take_batch(
                            request_fd, slots, region["scheduled"], batching.max_batch, batching.max_delay_s
                        )
                    if slots[0] != 0.0:  # cancelled: drop the backlog unserved
                        numbers = []
                    if numbers:
                        shapes = [int(slots[region["seq"] + n]) for n in numbers]
                        longest_prompt = max(prompt_tokens[s] for s in shapes)
                        started, stamps, out = self.generate(
                            self.prompts[len(numbers), longest_prompt], max(new_tokens[s] for s in shapes)
                        )
                        for number, shape in zip(numbers, shapes, strict=True):
                            slots[region["started"] + number] = started
                            slots[region["first"] + number] = stamps[0]
                            slots[region["ended"] + number] = stamps[new_tokens[shape] - 1]  # its own last token
                            slots[region["instance"] + number] = float(index)
                            slots[region["batch"] + number] = len(numbers)
                        largest = max(largest, len(numbers))
                        kv_bytes = max(kv_bytes or 0, cache_bytes(getattr(out, "past_key_values", None)))
                        del out
                        served += len(numbers)
                    if stopped:
                        break
                return GenerateDone(served, time.process_time() - cpu_started, largest, kv_bytes)
            finally:
                slots.release()


def _closed_loop(infer: Any, batch: Any, command: ClosedLoop) -> ClosedLoopDone:
    start_at = command.start_at_s
    end_at = start_at + command.duration_s
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    started = time.monotonic()
    times = array("d")
    cpu_started = time.process_time()
    while True:
        t0 = time.monotonic()
        infer(batch)
        t1 = time.monotonic()
        times.append(t1 - t0)
        if t1 >= end_at:
            break
    times_b64 = base64.b64encode(times.tobytes()).decode("ascii")
    return ClosedLoopDone(len(times), t1 - started, time.process_time() - cpu_started, times_b64)


def _serve(
    infer: Any,
    batches: dict[Any, Any],
    per_request: int,
    command: Serve,
    index: int,
    request_fd: int,
    channel: socket.socket,
) -> ServeDone:
    """Serve one step; `batches` holds an input for every multiple of `per_request` (a request's samples) it
    may run, and with a request mix for each of its seq_lens (the step file says each request's)."""
    requests, batching, mixed = command.requests, command.batching, command.mixed
    # Every instance of a step reads in the same mode: the pipe's blocking flag is shared by them all.
    os.set_blocking(request_fd, batching is None)
    with open(command.path, "r+b") as f, mmap.mmap(f.fileno(), 8 * step_file_slots(requests)) as shared:
        slots = memoryview(shared).cast("d")
        region = {name: step_region(name, requests).start for name in STEP_FIELDS}
        try:
            channel.sendall(contract.encode_line(Serving()))
            served = 0
            cpu_started = time.process_time()
            while True:
                if batching is None:
                    numbers, stopped = _take_one(request_fd)
                else:
                    numbers, stopped = _take_batch(
                        request_fd, slots, region["scheduled"], batching.max_batch, batching.max_delay_s
                    )
                if slots[0] != 0.0:  # cancelled: drop the backlog unserved
                    numbers = []
                if numbers:
                    # a batch of mixed lengths pads to its longest (the mix's seq_lens are sorted)
                    seq = int(max(slots[region["seq"] + n] for n in numbers)) if mixed else None
                    t0 = time.monotonic()
                    infer(batches[per_request * len(numbers), seq])
                    t1 = time.monotonic()
                    for number in numbers:
                        slots[region["started"] + number] = t0
                        slots[region["ended"] + number] = t1
                        slots[region["instance"] + number] = float(index)
                        slots[region["batch"] + number] = len(numbers)
                    served += len(numbers)
                if stopped:
                    break
            return ServeDone(served, time.process_time() - cpu_started)
        finally:
            slots.release()


def _read_request(request_fd: int) -> int:
    data = os.read(request_fd, REQUEST.size)
    if len(data) != REQUEST.size:
        raise RuntimeError(f"the request pipe gave {len(data)} bytes, expected {REQUEST.size}")
    return REQUEST.unpack(data)[0]


def _take_one(request_fd: int) -> tuple[list[int], bool]:
    number = _read_request(request_fd)
    return ([], True) if number == STOP else ([number], False)


def _take_batch(
    request_fd: int, slots: Any, scheduled_at: int, max_batch: int, max_delay_s: float
) -> tuple[list[int], bool]:
    """Up to max_batch request numbers from the (non-blocking) pipe, and whether a STOP came.

    Waits without limit for the first request, then until max_delay_s after its scheduled
    arrival for the rest; a request that waited longer than that goes with what is queued.
    Reads one number at a time: a read of several could take another instance's STOP.
    """
    numbers: list[int] = []
    poller = select.poll()
    poller.register(request_fd, select.POLLIN)
    deadline = math.inf  # until the first request comes
    while len(numbers) < max_batch:
        left_s = deadline - time.monotonic()
        if not poller.poll(None if left_s == math.inf else max(0, math.ceil(left_s * 1e3))):
            if time.monotonic() >= deadline:
                break
            continue
        try:
            number = _read_request(request_fd)
        except BlockingIOError:  # another instance took it
            continue
        if number == STOP:
            return numbers, True
        if not numbers:
            deadline = slots[scheduled_at + number] + max_delay_s
        numbers.append(number)
    return numbers, False


# --- the parent's handle --------------------------------------------------------------------


class InstanceProcess:
    """The parent's side of one instance: its child process and the socket its commands and replies go through."""

    def __init__(self, spec: InstanceSpec, child: Child, listener: socket.socket):
        self.index, self.cores = spec.index, spec.cores
        self.child = child
        self.ready: Ready | None = None
        self._listener = listener
        self._channel: socket.socket | None = None
        self._buffer = b""

    @classmethod
    def start(
        cls, spec: InstanceSpec, env: dict[str, str], log_dir: Path, workers: ZygoteWorkers | None = None
    ) -> InstanceProcess:
        """Start it (forked from `workers`' zygote when there is one); `connect` then hands it the request pipe."""
        files = ChildFiles.in_folder(log_dir, f"instance{spec.index}.")
        contract.write(files.spec, spec)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            name = f"bench-instance-{os.getpid()}-{spec.index}-{secrets.token_hex(8)}"
            listener.bind("\0" + name)
            listener.listen(1)
            child = launch("bench.capacity.instance", [str(files.spec), name], env, files, workers)
        except BaseException:
            listener.close()
            raise
        return cls(spec, child, listener)

    def connect(self, request_fd: int, timeout_s: float) -> None:
        """Wait for the instance to connect, then send it the request pipe's read end."""
        deadline = time.monotonic() + timeout_s
        while not select.select([self._listener], [], [], 0.1)[0]:
            if self.child.poll() is not None:
                raise InstanceError(self._died("ended before it connected"))
            if time.monotonic() > deadline:
                raise InstanceError(f"instance {self.index} did not connect within {timeout_s:.0f} s")
        self._channel, _ = self._listener.accept()
        self._listener.close()
        socket.send_fds(self._channel, [b"p"], [request_fd])

    def send(self, command: ClosedLoop | Serve | ServeGenerate | Exit) -> None:
        try:
            assert self._channel is not None, "connect first"
            self._channel.sendall(contract.encode_line(command))
        except OSError as exc:
            raise InstanceError(self._died(f"could not be sent a command ({exc})")) from None

    def receive(self, expected: type[R], timeout_s: float) -> R:
        """The next reply, an `expected`; InstanceError if it reports an error, dies, says nothing for timeout_s
        or answers out of turn."""
        assert self._channel is not None, "connect first"
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._channel], [], [], left)[0]:
                raise InstanceError(f"instance {self.index} said nothing for {timeout_s:.0f} s")
            chunk = self._channel.recv(1 << 20)
            if not chunk:
                raise InstanceError(self._died("ended"))
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply = contract.decode_line(line, REPLIES, f"instance {self.index} reply")
        if isinstance(reply, Failed):
            raise InstanceError(f"instance {self.index} failed: {reply.error}")
        if not isinstance(reply, expected):
            raise InstanceError(f"instance {self.index} answered {reply} where a {expected.__name__} was due")
        return reply

    def _died(self, what: str) -> str:
        code = self.child.wait(5.0)
        status = describe_exit(code) if code is not None else "still running"
        tail = self.child.tail()
        return f"instance {self.index} {what} ({status})" + (f"; last output:\n{tail}" if tail else "")

    def close(self, graceful: bool = True) -> None:
        """Ask it to exit (kill it if it does not within a few seconds), or kill it at once."""
        if graceful and self._channel is not None and self.child.poll() is None:
            with contextlib.suppress(InstanceError, OSError):
                self.send(Exit())
                self.child.wait(5.0)
        self.child.end()
        for end in (self._channel, self._listener):
            if end is not None:
                end.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
