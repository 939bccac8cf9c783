"""A serving instance: one process pinned to its own cores, running one scenario's model.

The parent (bench.capacity) starts N of these with `python -m bench.instance`, hands each
an InstanceSpec on stdin (scenario, artifact, cores, thread count) and then drives them with
one command per line. Spec, commands and replies are dataclasses of this module, sent with
bench.contract: a field renamed on one side fails the read. Each instance pins itself with
os.sched_setaffinity before torch starts its thread pools, loads the model through
bench.runtimes (so every precision and load mode works here too), warms up and replies
`Ready`; replies go to a separate pipe, so nothing a library prints can garble them.

Commands (their replies in brackets):
- `ClosedLoop` (`ClosedLoopDone`): call the model back to back on a batch of `batch_size`
  from `start_at_s` (time.monotonic, shared by all processes on Linux) for `duration_s`;
  reply with the number of calls and every call's time.
- `Serve` (`Serving` once it reads the request pipe, then `ServeDone`): take requests from
  the shared request pipe (8-byte request numbers, written by bench.loadgen; every instance
  reads the same pipe, so a free instance takes the next request) until a STOP number; write
  each request's start and end time into the step's shared file. A request read after the
  step was cancelled is dropped unserved. With `batching`, a free instance holding a request
  takes more until it has `max_batch` or until `max_delay_s` after the first one's scheduled
  arrival (from the step file), then runs them as one batch: as Triton's dynamic batcher,
  except that each free instance batches for itself rather than one queue batching for all.
- `Exit`.
An instance that fails replies `Failed` with the error, then ends.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import mmap
import os
import select
import struct
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import contract

REQUEST = struct.Struct("<Q")
STOP = 2**64 - 1
# The step file, float64: [cancel flag] then one region of n per request field, in STEP_FIELDS
# order: the instance writes start, end, instance and batch (the size of the batch the request
# ran in); the parent writes scheduled (each arrival's time.monotonic) and seq (with a request
# mix: the index of the request's seq_len) before the first request.
HEADER_SLOTS = 1
STEP_FIELDS = ("started", "ended", "instance", "batch", "scheduled", "seq")
WARMUP_CALLS = 5
R = TypeVar("R")


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
    reply_fd: int
    request_fd: int


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
class Exit:
    pass


@dataclass(frozen=True)
class Ready:
    load_s: float
    torch_num_threads: int
    affinity: list[int]  # os.sched_getaffinity once pinned


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
class Failed:
    error: str


COMMANDS = (ClosedLoop, Serve, Exit)
REPLIES = (Ready, ClosedLoopDone, Serving, ServeDone, Failed)


class InstanceError(Exception):
    """An instance died, timed out or reported an error; the message says which and why."""


def step_file_slots(requests: int) -> int:
    return HEADER_SLOTS + len(STEP_FIELDS) * requests


def step_region(name: str, requests: int) -> slice:
    """Where one request field lies in the step file."""
    start = HEADER_SLOTS + STEP_FIELDS.index(name) * requests
    return slice(start, start + requests)


# --- the instance process -------------------------------------------------------------------


def main() -> None:
    spec = contract.decode(InstanceSpec, json.loads(sys.stdin.readline()), "instance spec")
    # Pin first: OpenMP threads started later inherit the mask.
    os.sched_setaffinity(0, spec.cores)
    replies = os.fdopen(spec.reply_fd, "wb", buffering=0)
    try:
        _serve_commands(spec, replies)
    except BaseException as exc:  # the parent turns this into the layout's note
        replies.write(contract.encode_line(Failed(f"{type(exc).__name__}: {exc}")))
        raise
    # Asked to exit: tearing torch down at interpreter exit takes seconds and serves no one.
    replies.flush()
    os._exit(0)


def _serve_commands(spec: InstanceSpec, replies: Any) -> None:
    import torch

    from bench import runtimes
    from bench.suite import Scenario

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
        ready = Ready(load_s, torch.get_num_threads(), sorted(os.sched_getaffinity(0)))
        replies.write(contract.encode_line(ready))
        for line in sys.stdin:
            command = contract.decode_line(line, COMMANDS, f"instance {spec.index} command")
            if isinstance(command, Exit):
                return
            if isinstance(command, ClosedLoop):
                reply: Any = _closed_loop(infer, batches[command.batch_size, None], command)
            else:
                reply = _serve(infer, batches, scenario.batch_size, command, spec, replies)
            replies.write(contract.encode_line(reply))


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
    infer: Any, batches: dict[Any, Any], per_request: int, command: Serve, spec: InstanceSpec, replies: Any
) -> ServeDone:
    """Serve one step; `batches` holds an input for every multiple of `per_request` (a request's samples) it
    may run, and with a request mix for each of its seq_lens (the step file says each request's)."""
    requests, index, request_fd = command.requests, float(spec.index), spec.request_fd
    batching, mixed = command.batching, command.mixed
    # Every instance of a step reads in the same mode: the pipe's blocking flag is shared by them all.
    os.set_blocking(request_fd, batching is None)
    with open(command.path, "r+b") as f, mmap.mmap(f.fileno(), 8 * step_file_slots(requests)) as shared:
        slots = memoryview(shared).cast("d")
        region = {name: step_region(name, requests).start for name in STEP_FIELDS}
        try:
            replies.write(contract.encode_line(Serving()))
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
                        slots[region["instance"] + number] = index
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


@dataclass
class InstanceProcess:
    """The parent's side of one instance: its process, its command pipe and its reply pipe."""

    index: int
    cores: list[int]
    process: subprocess.Popen
    reply_fd: int
    log_dir: Path
    ready: Ready | None = None
    _buffer: bytes = b""

    @classmethod
    def start(
        cls,
        index: int,
        cores: list[int],
        spec: InstanceSpec,
        request_fd: int,
        env: dict[str, str],
        log_dir: Path,
    ) -> InstanceProcess:
        log_dir.mkdir(parents=True, exist_ok=True)
        reply_read, reply_write = os.pipe()
        try:
            with (
                open(log_dir / f"instance{index}.stdout.log", "wb") as out,
                open(log_dir / f"instance{index}.stderr.log", "wb") as err,
            ):
                process = subprocess.Popen(
                    [sys.executable, "-m", "bench.instance"],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    env=env,
                    pass_fds=(reply_write, request_fd),
                )
        except BaseException:
            os.close(reply_read)
            raise
        finally:
            os.close(reply_write)
        handle = cls(index, cores, process, reply_read, log_dir)
        mine = dataclasses.replace(spec, index=index, cores=cores, reply_fd=reply_write, request_fd=request_fd)
        handle.send_spec(mine)
        return handle

    def send_spec(self, spec: InstanceSpec) -> None:
        self._write(contract.encode(spec).replace("\n", "").encode() + b"\n")

    def send(self, command: ClosedLoop | Serve | Exit) -> None:
        self._write(contract.encode_line(command))

    def _write(self, line: bytes) -> None:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise InstanceError(self._died(f"could not be sent a command ({exc})")) from None

    def receive(self, expected: type[R], timeout_s: float) -> R:
        """The next reply, an `expected`; InstanceError if it reports an error, dies, says nothing for timeout_s
        or answers out of turn."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.reply_fd], [], [], left)[0]:
                raise InstanceError(f"instance {self.index} said nothing for {timeout_s:.0f} s")
            chunk = os.read(self.reply_fd, 1 << 20)
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
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        from bench.worker import describe_exit

        status = describe_exit(code) if code is not None else "still running"
        tail = _tail(self.log_dir / f"instance{self.index}.stderr.log")
        return f"instance {self.index} {what} ({status})" + (f"; last output:\n{tail}" if tail else "")

    def close(self, graceful: bool = True) -> None:
        """Ask it to exit (kill it if it does not within a few seconds), or kill it at once."""
        if graceful and self.process.poll() is None:
            with contextlib.suppress(InstanceError, OSError, subprocess.TimeoutExpired):
                self.send(Exit())
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.reply_fd)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    main()
