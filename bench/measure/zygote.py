"""The zygote: one process per run that imports the heavy libraries once and forks every child from it.

A fresh child (`python -m pytest bench/measure/harness.py`, `python -m bench.capacity.instance`, `python -m
bench.profile.profiler`) pays a new interpreter, `import torch` and the rest before its first call:
seconds each. The zygote pays them once. It imports torch, torchvision, onnxruntime, numpy,
pytest, pytest-benchmark and bench's child modules, runs no operator (so no OpenMP or
inter-op pool exists when it forks), then serves requests: each forks one child that takes
its environment, redirects its output like a fresh child (bench.measure.child) and calls the same
`main(argv)` that `python -m MODULE` would. The child sets its thread pools with
torch.set_num_threads (the worker, an instance and a profile each do), since libgomp read
OMP_NUM_THREADS once, in the zygote, when it was loaded. Several children may run at once
(a capacity measurement's instances).

Protocol: one message per line (bench.measure.contract) on the zygote's stdin and on its stdout.
First the zygote says `ZygoteReady`; to a `Fork` it answers `Forked` at once and `Exited`
once that child has ended (returncode negative: killed by that signal, as subprocess reports
it), whatever else happened in between. A child is reaped only when the runner sends `Reap`
for it (after it has read its exit status) or at the end of input, so until then its pid
cannot be reused, and killing it by pid is safe.

Memory: a child starts with the zygote's pages, shared copy-on-write; its RSS counts them
as a fresh worker's RSS counts its own imports, but they are every preloaded library (a
fresh worker imports only what its scenario needs), and its USS leaves them out (they are
shared with the zygote). VmHWM is reset per phase inside the child, so per-phase peaks hold.
Fork copies the page tables of anonymous memory only; file-backed pages (the libraries' code)
are mapped again as the child touches them, so a child's RSS at start is below the zygote's.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import importlib
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.measure import contract
from bench.measure.child import ZYGOTE_PID_ENV, describe_exit, die_with_parent
from bench.measure.memory import read_status_bytes

# What a fresh child imports before its first call. bench.measure.harness is left out (it reads its
# environment when imported) and so is bench.measure.harness_plugin (pytest would warn it cannot rewrite it):
# each worker imports those two anew, as a fresh worker does.
PRELOADED = (
    "numpy",
    "torch",
    "torchvision",
    "onnxruntime",
    "pytest",
    "pytest_benchmark.plugin",
    "bench.measure.worker",
    "bench.capacity.instance",
    "bench.profile.profiler",
)
READY_TIMEOUT_S = 120.0


def fork_available() -> bool:
    """The zygote needs os.fork, pidfds and /proc (Linux); elsewhere children start fresh."""
    return hasattr(os, "fork") and hasattr(os, "pidfd_open") and sys.platform.startswith("linux")


@dataclass(frozen=True)
class Fork:
    """runner → zygote: fork a child that runs `MODULE.main(argv)`."""

    module: str
    argv: list[str]
    env: dict[str, str]
    stdout: str
    stderr: str
    cwd: str


@dataclass(frozen=True)
class Reap:
    """runner → zygote: the runner has the child's exit status; its pid may go."""

    pid: int


@dataclass(frozen=True)
class ZygoteReady:
    pid: int
    rss_bytes: int | None
    threads: int
    t_s: float  # time.monotonic() when ready: one clock for every process, the runner's too


@dataclass(frozen=True)
class Forked:
    pid: int


@dataclass(frozen=True)
class Exited:
    pid: int
    returncode: int


REQUESTS = (Fork, Reap)
ANSWERS = (ZygoteReady, Forked, Exited)


class ZygoteDied(RuntimeError):
    """The zygote process ended or stopped answering."""


class ForkedWorker:
    """A child forked by the zygote; `poll`, `wait`, `kill` and `returncode` as subprocess.Popen's."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        self.zygote_died = False  # the zygote ended while this child ran: its PDEATHSIG killed the child

    def poll(self) -> int | None:
        return self.wait(timeout_s=0.0)

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Its exit status; None if it still runs after `timeout_s` (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.returncode is None:
            if self.pid in self.zygote.exits:
                self.returncode = self.zygote.exits.pop(self.pid)
                self.zygote.reap(self.pid)
            elif self.zygote.died:
                self.zygote_died = True
                self.returncode = -signal.SIGKILL
            elif not self.zygote.read_answer(None if deadline is None else max(deadline - time.monotonic(), 0.0)):
                return None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:  # not yet reaped by the zygote: the pid is still this child's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


@dataclass(frozen=True)
class ZygoteFacts:
    """What the zygote reported when ready: recorded in run.json."""

    pid: int
    ready_s: float  # from starting it to ready: its interpreter start and imports, paid once per run
    rss_bytes: int | None  # its RSS when ready: every forked worker starts with these pages (shared)
    threads: int  # its OS threads when ready: no OpenMP or inter-op pool (they would not survive a fork)


class Zygote:
    """The runner's side: start the zygote process, ask it for workers, close it."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.started_s = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.measure.zygote"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=False,
            )
        self._buffer = b""
        self.facts: ZygoteFacts | None = None  # once ready (the imports run while the runner prepares artifacts)
        self.exits: dict[int, int] = {}  # children's exit statuses, read but not yet taken by their ForkedWorker
        self.died = False  # its output ended
        self._ready: ZygoteReady | None = None
        self._forked: list[int] = []  # Forked answers not yet taken by start()

    def wait_ready(self) -> ZygoteFacts:
        if self.facts is None:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while self._ready is None and not self.died:
                if not self.read_answer(max(deadline - time.monotonic(), 0.0)):
                    raise ZygoteDied(self._why(f"not ready after {READY_TIMEOUT_S:g} s"))
            if self._ready is None:
                raise ZygoteDied(self._why("it ended before it was ready"))
            # The zygote's own mark: the runner reads the answer only when its first child is due.
            ready = self._ready
            self.facts = ZygoteFacts(ready.pid, ready.t_s - self.started_s, ready.rss_bytes, ready.threads)
        return self.facts

    def start(self, module: str, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> ForkedWorker:
        """Fork a child running `module.main(argv)` in `env`, its output in the two files."""
        self.wait_ready()
        self._send(Fork(module, argv, env, str(stdout), str(stderr), os.getcwd()))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._forked:
            if self.died or not self.read_answer(max(deadline - time.monotonic(), 0.0)):
                raise ZygoteDied(self._why("no answer to a fork request"))
        return ForkedWorker(self, self._forked.pop(0))

    def reap(self, pid: int) -> None:
        with contextlib.suppress(ZygoteDied):  # a zygote that died reaps nothing: its children went with it
            self._send(Reap(pid))

    def _send(self, request: Fork | Reap) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(contract.encode_line(request))
            self.process.stdin.flush()
        except OSError as exc:
            raise ZygoteDied(self._why(f"{type(exc).__name__}: {exc}")) from exc

    def read_answer(self, timeout_s: float | None) -> bool:
        """Read one answer into `exits`, `_forked` or `_ready`; False if none came within `timeout_s`.
        At the end of its output `died` is set (and True returned: something happened)."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 65536)
            if not chunk:
                self.died = True
                return True
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = contract.decode_line(line, ANSWERS, "zygote answer")
        if isinstance(answer, ZygoteReady):
            self._ready = answer
        elif isinstance(answer, Forked):
            self._forked.append(answer.pid)
        else:
            self.exits[answer.pid] = answer.returncode
        return True

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self, wait_s: float = 5.0) -> None:
        """End of input: the zygote reaps its last child and exits; killed if it does not within `wait_s`."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _why(self, detail: object) -> str:
        state = "running" if self.process.poll() is None else describe_exit(self.process.returncode)
        tail = self.log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        return f"zygote (pid {self.process.pid}, {state}): {detail}" + (
            f"; its log {self.log_path} ends:\n" + "\n".join(tail) if tail else ""
        )


class ZygoteWorkers:
    """A run's zygote, started again once if it dies; after that (or if it cannot start) None: fresh children.

    `announce` says each change on the console, and `kind` is what the next child will be."""

    def __init__(self, env: dict[str, str], log_path: Path, announce: Callable[[str], None], restarts: int = 1):
        self.env, self.log_path, self.announce = env, log_path, announce
        self.restarts_left = restarts
        self.zygote: Zygote | None = Zygote(env, log_path)
        self.facts: list[ZygoteFacts] = []

    @property
    def kind(self) -> str:
        return "fork" if self.zygote is not None else "fresh"

    def start(
        self, module: str, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path
    ) -> ForkedWorker | None:
        """A child forked from the zygote; None once the zygote is gone for good (start a fresh one)."""
        while self.zygote is not None:
            try:
                if self.zygote.facts is None:
                    self.facts.append(self.zygote.wait_ready())
                return self.zygote.start(module, argv, env, stdout, stderr)
            except ZygoteDied as exc:
                self._replace(str(exc))
        return None

    def worker_ended(self, worker: ForkedWorker) -> None:
        """After a child whose zygote died with it: the next child gets a new zygote (or starts fresh)."""
        if worker.zygote_died and self.zygote is worker.zygote:
            self._replace(f"while worker {worker.pid} ran")

    def _replace(self, why: str) -> None:
        """Start a new zygote while restarts last; after that the run goes on with fresh workers."""
        assert self.zygote is not None
        self.zygote.close()
        if self.restarts_left > 0:
            self.restarts_left -= 1
            self.announce(f"bench: the zygote died ({why}); starting a new one")
            self.zygote = Zygote(self.env, self.log_path)
        else:
            self.announce(f"bench: the zygote died ({why}); the remaining scenarios start fresh workers")
            self.zygote = None

    def close(self) -> None:
        if self.zygote is not None:
            # One asked for no worker yet may still be importing, and would read the end of its input only
            # after that (seconds): with no child to reap, it is killed at once.
            self.zygote.close(wait_s=5.0 if self.zygote.facts is not None else 0.0)
            self.zygote = None


# ---- the zygote process (python -m bench.measure.zygote) ----


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    # The runner's Ctrl-C reaches the whole process group: the runner ends the zygote itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()  # the zygote dies with `bench run`
    for name in PRELOADED:
        importlib.import_module(name)
    # The imported objects move to a generation the collector never scans: a child's gc.collect() then
    # neither walks them (a fresh worker walks only what it imported) nor writes to their pages, which
    # would copy them out of the zygote one by one.
    gc.freeze()

    def say(answer: ZygoteReady | Forked | Exited) -> None:
        answers.write(contract.encode_line(answer))
        answers.flush()

    threads = len(os.listdir("/proc/self/task"))
    say(ZygoteReady(os.getpid(), read_status_bytes().get("VmRSS"), threads, time.monotonic()))
    running: dict[int, int] = {}  # pid -> its pidfd, readable once the child has ended
    ended: set[int] = set()  # reported, not yet reaped: zombies, so their pids stay taken
    requests_fd, buffer = requests.fileno(), b""
    while True:
        readable = select.select([requests_fd, *running.values()], [], [])[0]
        for pid, pidfd in list(running.items()):
            if pidfd in readable:
                # WNOWAIT: learn the status but leave the child a zombie until the runner says Reap.
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                assert info is not None  # the pidfd said it has ended
                os.close(running.pop(pid))
                ended.add(pid)
                say(Exited(pid, info.si_status if info.si_code == os.CLD_EXITED else -info.si_status))
        if requests_fd not in readable:
            continue
        chunk = os.read(requests_fd, 65536)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, _, buffer = buffer.partition(b"\n")
            request = contract.decode_line(line, REQUESTS, "zygote request")
            if isinstance(request, Reap):
                if request.pid in ended:
                    ended.discard(request.pid)
                    os.waitpid(request.pid, 0)
                continue
            pid = os.fork()
            if pid == 0:
                _child(request, [requests_fd, answers.fileno(), *running.values()])
            running[pid] = os.pidfd_open(pid)
            say(Forked(pid))
    for pid in [*ended, *running]:  # end of input: the runner has waited for its children
        os.waitpid(pid, 0)


def _child(request: Fork, inherited_fds: list[int]) -> None:
    """In the forked child: become the child a fresh process would be, run its main, exit with its code."""
    code = 1
    try:
        for fd in inherited_fds:  # the zygote's pipes and its other children's pidfds
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh child
        env = dict(request.env)
        env[ZYGOTE_PID_ENV] = str(os.getppid())
        os.environ.clear()
        os.environ.update(env)
        die_with_parent()  # PR_SET_PDEATHSIG is not inherited: the child dies with the zygote
        os.chdir(request.cwd)
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request.stdout), (2, request.stderr)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        faulthandler.enable()  # a fresh child's `python -X faulthandler`: a crash's stack goes to stderr
        sys.argv = [request.module, *request.argv]
        module = importlib.import_module(request.module)  # preloaded, or imported here once
        code = int(module.main(request.argv))  # bench.measure.harness_plugin exits inside pytest.main itself
    except BaseException:  # anything that escapes: report it like a worker's crash, never return to serve()
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main() -> None:
    # Answers go to a private copy of stdout; fd 1 itself goes to the log, so a library that prints cannot
    # corrupt the protocol.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
