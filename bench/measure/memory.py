"""Process memory: the parent's RSS sampler and the kernel's own counters.

The sampler runs in the parent and watches the worker with psutil. It sleeps between
samples and reads one small /proc file per sample, so it does not compete with the
worker's threads. The kernel counters (VmHWM, ru_maxrss) are read inside the worker and
are the reference the sampler is checked against.
"""

from __future__ import annotations

import csv
import ctypes
import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

# USS/PSS need /proc/PID/smaps_rollup, which walks every mapping under the mm lock
# and would slow the worker if read often; the worker also reads its USS at phase ends.
USS_INTERVAL_S = 1.0
_STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def read_status_bytes(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile and RssShmem of a process, in bytes (Linux)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in _STATUS_FIELDS:
                    out[key] = int(rest.split()[0]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return out


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0). False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def max_rss_rusage_bytes() -> int:
    """The lifetime peak RSS from getrusage; never reset, unlike VmHWM."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def malloc_trim() -> bool:
    """glibc's malloc_trim(0): give the heap's free memory back to the kernel. False without glibc.

    Freed memory often stays in the allocator's arenas (RSS does not drop) until this is called.
    """
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl, macOS: no such library or function
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


@dataclass(frozen=True)
class RssSample:
    t_s: float  # time.monotonic(), comparable across processes on Linux
    rss_bytes: int
    rss_file_bytes: int  # file-backed and shared memory pages (mmap'd weights land here)
    uss_bytes: int | None
    pss_bytes: int | None

    @property
    def rss_anon_bytes(self) -> int:
        return self.rss_bytes - self.rss_file_bytes


class RssSampler:
    """Samples a process's memory every `interval_s` seconds in a background thread."""

    def __init__(
        self, pid: int, interval_s: float = 0.01, toggle_period_s: float | None = None, limit_bytes: int | None = None
    ):
        self.pid = pid
        # Checked on every sample, so a runaway worker is stopped within one interval.
        self.limit_bytes = limit_bytes
        self.limit_exceeded_bytes: int | None = None
        self.interval_s = interval_s
        # With a toggle period the sampler alternates `period` on and `period` off, so its
        # cost on the worker's latency can be measured (bench selfcheck).
        self.toggle_period_s = toggle_period_s
        self.on_windows: list[tuple[float, float]] = []
        self.samples: list[RssSample] = []
        self.cpu_s = 0.0
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-sampler-{pid}", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        try:
            self._sample_until_stopped()
        finally:
            # This thread's own CPU time (user + kernel, /proc reads included): what sampling cost.
            self.cpu_s = time.thread_time()

    def _sample_until_stopped(self) -> None:
        next_uss_s = 0.0
        origin_s = time.monotonic()
        while True:
            now = time.monotonic()
            if self.toggle_period_s is not None:
                window, into_s = divmod(now - origin_s, self.toggle_period_s)
                if window % 2 == 1:  # an "off" window: sleep through it
                    if self._stop.wait(self.toggle_period_s - into_s):
                        return
                    continue
                start_s = origin_s + window * self.toggle_period_s
                if not self.on_windows or self.on_windows[-1][0] != start_s:
                    self.on_windows.append((start_s, start_s + self.toggle_period_s))
            try:
                info = self._process.memory_info()
                uss = pss = None
                if now >= next_uss_s:
                    full = self._process.memory_full_info()
                    uss, pss = full.uss, getattr(full, "pss", None)
                    next_uss_s = now + USS_INTERVAL_S
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                return
            if info.rss == 0:  # the worker has exited and released its memory
                return
            self.samples.append(RssSample(now, info.rss, info.shared, uss, pss))
            if self.limit_bytes is not None and info.rss > self.limit_bytes:
                self.limit_exceeded_bytes = info.rss
                self._process.kill()
                return
            # Event.wait sleeps in the kernel; a sampler must never spin.
            if self._stop.wait(self.interval_s):
                return

    def peak_bytes(self) -> int | None:
        return max((s.rss_bytes for s in self.samples), default=None)

    def peak_uss_bytes(self) -> int | None:
        return max((s.uss_bytes for s in self.samples if s.uss_bytes is not None), default=None)


def phase_at(t_s: float, phase_starts: list[tuple[float, str]]) -> str:
    """The phase a timestamp falls in, given (start time, name) pairs in order."""
    current = "startup"
    for start_s, name in phase_starts:
        if t_s < start_s:
            break
        current = name
    return current


def write_samples_csv(
    path: Path, samples: list[RssSample], origin_s: float, phase_starts: list[tuple[float, str]]
) -> None:
    """One row per sample; time is seconds since the worker started."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "phase", "rss_bytes", "rss_anon_bytes", "rss_file_bytes", "uss_bytes", "pss_bytes"])
        for s in samples:
            writer.writerow(
                [
                    f"{s.t_s - origin_s:.4f}",
                    phase_at(s.t_s, phase_starts),
                    s.rss_bytes,
                    s.rss_anon_bytes,
                    s.rss_file_bytes,
                    "" if s.uss_bytes is None else s.uss_bytes,
                    "" if s.pss_bytes is None else s.pss_bytes,
                ]
            )


def cpu_count() -> int:
    """CPUs this process may run on (affinity-aware), which is what threads compete for."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
