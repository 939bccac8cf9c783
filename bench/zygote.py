"""The zygote: one process per run that imports the heavy libraries once and forks a worker per scenario.

A fresh worker (`python -m pytest bench/harness.py`) pays a new interpreter, `import torch`
and pytest's start-up before its first timed call: seconds per scenario. The zygote pays
them once. It imports torch, torchvision, onnxruntime, numpy, pytest, pytest-benchmark and
bench's worker modules, runs no operator (so no OpenMP or inter-op pool exists when it
forks), then serves requests: each forks one child that takes the scenario's environment,
redirects its output like a fresh worker and runs the same `pytest.main` command line. The
child sets its thread pools with torch.set_num_threads (bench.worker.WorkerSession), since
libgomp read OMP_NUM_THREADS once, in the zygote, when it was loaded.

Protocol: one JSON line per request on the zygote's stdin, one JSON line per answer on its
stdout. First the zygote says {"ready": ..., "t_s"}; to a request {"argv", "env", "stdout",
"stderr", "cwd"} it answers {"pid"} once forked and {"pid", "returncode"} once the child
has ended (negative: killed by that signal, as subprocess reports it). The child is reaped
only when the next request or the end of input arrives, so until the runner has read its
exit status the pid cannot be reused, and killing it by pid is safe.

Memory: a child starts with the zygote's pages, shared copy-on-write; its RSS counts them
as a fresh worker's RSS counts its own imports, but they are every preloaded library (a
fresh worker imports only what its scenario needs), and its USS leaves them out (they are
shared with the zygote). VmHWM is reset per phase inside the child, so per-phase peaks hold.
Fork copies the page tables of anonymous memory only; file-backed pages (the libraries' code)
are mapped again as the child touches them, so a child's RSS at start is below the zygote's.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
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
from typing import IO, Any

from bench.memory import read_status_bytes
from bench.worker import ZYGOTE_PID_ENV, describe_exit, die_with_parent

# What a fresh worker imports before its first timed call. bench.harness is left out (it reads its
# environment when imported) and so is bench.harness_plugin (pytest would warn it cannot rewrite it):
# each child imports those two anew, as a fresh worker does.
PRELOADED = (
    "numpy", "torch", "torchvision", "onnxruntime", "pytest", "pytest_benchmark.plugin",
    "bench.worker",
)  # fmt: skip
READY_TIMEOUT_S = 120.0


def fork_available() -> bool:
    """The zygote needs os.fork and /proc (Linux); elsewhere workers start fresh."""
    return hasattr(os, "fork") and sys.platform.startswith("linux")


class ZygoteDied(RuntimeError):
    """The zygote process ended or stopped answering."""


class ForkedWorker:
    """A worker forked by the zygote; `poll`, `wait`, `kill` and `returncode` as subprocess.Popen's."""

    def __init__(self, zygote: Zygote, pid: int):
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None
        self.zygote_died = False  # the zygote ended while this worker ran: its PDEATHSIG killed the worker

    def poll(self) -> int | None:
        if self.returncode is None:
            self._take(self.zygote.answer(timeout_s=0.0))
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            self._take(self.zygote.answer(timeout_s=None))
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:  # not yet reaped by the zygote: the pid is still this worker's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def _take(self, answer: dict[str, Any] | None) -> None:
        if answer is None:
            return
        if answer.get("died"):
            self.zygote_died = True
            self.returncode = -signal.SIGKILL
            return
        if answer.get("pid") != self.pid or "returncode" not in answer:
            raise ZygoteDied(f"the zygote answered out of turn: {answer}")
        self.returncode = int(answer["returncode"])


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
                [sys.executable, "-m", "bench.zygote"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, start_new_session=False,
            )  # fmt: skip
        self._buffer = b""
        self.facts: ZygoteFacts | None = None  # once ready (the imports run while the runner prepares artifacts)

    def wait_ready(self) -> ZygoteFacts:
        if self.facts is None:
            answer = self.answer(timeout_s=READY_TIMEOUT_S)
            if answer is None or not answer.get("ready"):
                raise ZygoteDied(self._why(f"not ready after {READY_TIMEOUT_S:g} s" if answer is None else answer))
            # The zygote's own mark: the runner reads the answer only when its first worker is due.
            ready_s = float(answer["t_s"]) - self.started_s
            self.facts = ZygoteFacts(answer["pid"], ready_s, answer["rss_bytes"], answer["threads"])
        return self.facts

    def start(self, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> ForkedWorker:
        """Fork a worker running `pytest.main(argv)` in `env`, its output in the two files."""
        self.wait_ready()
        request = {"argv": argv, "env": env, "stdout": str(stdout), "stderr": str(stderr), "cwd": os.getcwd()}
        assert self.process.stdin is not None
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError as exc:
            raise ZygoteDied(self._why(f"{type(exc).__name__}: {exc}")) from exc
        answer = self.answer(timeout_s=READY_TIMEOUT_S)
        if answer is None or answer.get("died") or "pid" not in answer:
            raise ZygoteDied(self._why(answer or "no answer to a fork request"))
        return ForkedWorker(self, int(answer["pid"]))

    def answer(self, timeout_s: float | None) -> dict[str, Any] | None:
        """The next answer line; None if none came within `timeout_s`; {"died": true} at end of output."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return {"died": True}
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

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
    """A run's zygote, started again once if it dies; after that (or if it cannot start) None: fresh workers.

    `announce` says each change on the console, and `kind` is what the next worker will be."""

    def __init__(self, env: dict[str, str], log_path: Path, announce: Callable[[str], None], restarts: int = 1):
        self.env, self.log_path, self.announce = env, log_path, announce
        self.restarts_left = restarts
        self.zygote: Zygote | None = Zygote(env, log_path)
        self.facts: list[ZygoteFacts] = []

    @property
    def kind(self) -> str:
        return "fork" if self.zygote is not None else "fresh"

    def start(self, argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> ForkedWorker | None:
        while self.zygote is not None:
            try:
                if self.zygote.facts is None:
                    self.facts.append(self.zygote.wait_ready())
                return self.zygote.start(argv, env, stdout, stderr)
            except ZygoteDied as exc:
                self._replace(str(exc))
        return None

    def worker_ended(self, worker: ForkedWorker) -> None:
        """After a worker whose zygote died with it: the next scenario gets a new zygote (or fresh workers)."""
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


# ---- the zygote process (python -m bench.zygote) ----


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

    def say(answer: dict[str, Any]) -> None:
        answers.write((json.dumps(answer) + "\n").encode())
        answers.flush()

    threads = len(os.listdir("/proc/self/task"))
    ready = {"ready": True, "pid": os.getpid(), "rss_bytes": read_status_bytes().get("VmRSS"), "threads": threads}
    say({**ready, "t_s": time.monotonic()})  # CLOCK_MONOTONIC: one clock for every process, the runner's too
    last_child = None
    for line in requests:
        if last_child is not None:  # its status was reported: reap it now
            os.waitpid(last_child, 0)
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request, requests, answers)
        last_child = pid
        say({"pid": pid})
        # WNOWAIT: learn the status but leave the child a zombie, so its pid stays taken until reaped above.
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        say({"pid": pid, "returncode": code})
    if last_child is not None:
        os.waitpid(last_child, 0)


def _child(request: dict[str, Any], requests: IO[bytes], answers: IO[bytes]) -> None:
    """In the forked child: become the worker a fresh process would be, run pytest, exit with its code."""
    code = 1
    try:
        requests.close()
        answers.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh worker
        env = dict(request["env"])
        env[ZYGOTE_PID_ENV] = str(os.getppid())
        os.environ.clear()
        os.environ.update(env)
        die_with_parent()  # PR_SET_PDEATHSIG is not inherited: the child dies with the zygote
        os.chdir(request["cwd"])
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        pytest = importlib.import_module("pytest")  # preloaded: the runner itself need not import it
        code = int(pytest.main(request["argv"]))  # bench.harness_plugin exits here itself
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
