"""Child processes: the one way bench starts one, whatever it runs.

The timed worker (pytest on bench/measure/harness.py), a profile (bench.profile.profiler) and a serving
instance (bench.capacity.instance) are each `python -m MODULE ARGS` with a spec file: `launch` starts
one, forked from the run's zygote (bench.measure.zygote) when there is one, else as a fresh
interpreter, and gives back a `Child` whatever the kind. Either way the child gets:

- its environment (`child_env`): the thread pools sized, bench's own import path, no option
  or plugin of the caller's pytest, and the parent's pid so that it dies with the parent;
- its output in two files of its folder (`ChildFiles`: `<prefix>stdout.log`,
  `<prefix>stderr.log`, beside its `<prefix>spec.json`), stdin from /dev/null;
- faulthandler on, writing to its stderr: a crash (a segfault in a native library) leaves
  its Python stack there, and `Child.tail` gives that report rather than the last lines.

A module run this way has `main(argv) -> int`, which is what the zygote calls in a fork, and
`python -m` calls (through `sys.exit(main(sys.argv[1:]))`) in a fresh interpreter; pytest's
own `pytest.main` is one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the zygote imports this module: a type only, no cycle at run time
    from bench.measure.zygote import ForkedWorker, ZygoteWorkers

SPEC_ENV = "BENCH_WORKER_SPEC"
PARENT_PID_ENV = "BENCH_PARENT_PID"  # the child dies with this process (die_with_parent)
ZYGOTE_PID_ENV = "BENCH_ZYGOTE_PID"  # a forked child's parent, the zygote (bench.measure.zygote): it dies with that
TAIL_LINES = 12


def thread_env(threads: int) -> dict[str, str]:
    """Variables that size the OpenMP/MKL pools; they must be set before the process starts."""
    value = str(threads)
    return {"OMP_NUM_THREADS": value, "MKL_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value}


def child_env(threads: int, extra: dict[str, str]) -> dict[str, str]:
    """The environment a child (a worker, an instance, a profile, the zygote) starts with."""
    # The worker's pytest is bench's own: no options or plugins from the caller's pytest, and no
    # PYTEST_XDIST_* (under a pytest-xdist worker, pytest-benchmark sees PYTEST_XDIST_WORKER and
    # silently disables itself: the row then has no timings).
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS") and not k.startswith("PYTEST_XDIST_")
    }
    env.update(thread_env(threads))
    # The child must import this very `bench`, whether installed or run from a checkout.
    package_root = str(Path(__file__).resolve().parents[2])  # bench/measure/child.py: the folder holding bench
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env[PARENT_PID_ENV] = str(os.getpid())
    env.update(extra)
    return env


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by signal SIGSEGV' for a finished child."""
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def die_with_parent() -> None:
    """A child whose parent is killed (`bench run`, or a fleet host's Dask worker) must not
    live on, measuring for no one and disturbing whatever runs next on the host."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    expected = os.environ.get(ZYGOTE_PID_ENV) or os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):  # the parent died before prctl took effect
        os._exit(1)


@dataclass(frozen=True)
class ChildFiles:
    """Where a child's spec and output go."""

    spec: Path
    stdout: Path
    stderr: Path

    @classmethod
    def in_folder(cls, folder: Path, prefix: str = "") -> ChildFiles:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{prefix}spec.json", folder / f"{prefix}stdout.log", folder / f"{prefix}stderr.log")


class Child:
    """A started child, forked or fresh: `pid`, `poll`, `wait`, `kill`, `returncode`, `tail`."""

    def __init__(
        self,
        process: ForkedWorker | subprocess.Popen[bytes],
        kind: str,
        files: ChildFiles,
        workers: ZygoteWorkers | None,
    ):
        self.process, self.kind, self.files, self._workers = process, kind, files, workers

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Its exit status, or None if it is still running after `timeout_s`."""
        if self.kind == "fork":
            return self.process.wait(timeout_s)  # type: ignore[arg-type]
        try:
            return self.process.wait(timeout=timeout_s)  # type: ignore[call-arg]
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.process.kill()

    def end(self) -> int:
        """Kill it if it still runs, wait for it; a zygote that died with it is replaced for the next child."""
        if self.poll() is None:
            self.kill()
        code = self.wait()
        assert code is not None
        if self._workers is not None:
            self._workers.worker_ended(self.process)  # type: ignore[arg-type]
        return code

    def tail(self) -> str:
        return tail(self.files.stderr) or tail(self.files.stdout)


def launch(
    module: str, argv: list[str], env: dict[str, str], files: ChildFiles, workers: ZygoteWorkers | None = None
) -> Child:
    """Start `python -m module *argv`: forked from `workers`' zygote when it has one, else fresh."""
    if workers is not None:
        forked = workers.start(module, argv, env, files.stdout, files.stderr)
        if forked is not None:
            return Child(forked, "fork", files, workers)
    with open(files.stdout, "wb") as stdout, open(files.stderr, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", module, *argv],
            env=env,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
        )
    return Child(process, "fresh", files, None)


def tail(path: Path) -> str:
    """The informative end of a child's output: faulthandler's crash report if there is one, else the last lines."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for index, line in enumerate(lines):
        if line.startswith("Fatal Python error"):  # the innermost frames come first
            return "\n".join(lines[index : index + TAIL_LINES])
    return "\n".join(lines[-TAIL_LINES:])
