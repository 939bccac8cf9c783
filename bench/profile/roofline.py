"""The bandwidth roof: this host's memory bandwidth, and where a row sits under the roofline.

A call cannot finish faster than the bytes it must move divided by the memory bandwidth, nor
faster than its FLOPs divided by the FLOP peak (bench.profile.profiler.measure_peak_gflops);
its arithmetic intensity (FLOPs per byte moved) says which of the two roofs is the lower one.
Decoding one token reads every weight once and does about two FLOPs per weight, so it sits
far under the bandwidth roof: its floor is bytes per step / bandwidth.

`measure_bandwidth` runs a STREAM-style copy (`a = b`) and triad (`a = b + q*c`) over float64
arrays far larger than the last-level cache, in a fresh process (`python -m
bench.profile.roofline --bandwidth ARRAY_BYTES REPETITIONS`) with torch's intra-op pool at
`threads` (torch's `copy_` and `add(..., alpha=q, out=a)` are one parallel pass each; numpy's
copy is single-threaded, so it would measure one core's share). The best of the repetitions
counts, in STREAM's convention: bytes read plus bytes written (`STREAM_ARRAYS`), the
write-allocate read not counted. Cached as JSON per environment fingerprint, threads and array
size, like the matmul peak. Never raises: a failure gives a `MemoryBandwidth` with its note.
The parent imports no torch for it; on this 2-core host the child took about 2 s (1.4 s of it
importing torch), once per environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.profile.probe import ProbeFailed, keep, read_cached, run_probe

# Arrays each kernel touches per element: copy reads b and writes a; triad reads b and c, writes a.
STREAM_ARRAYS = {"copy": 2, "triad": 3}
ELEMENT_BYTES = 8  # float64, as STREAM
# Each array is at least 4x the last-level cache, so that (LRU or not) at most a quarter of what a
# pass reads can come from a cache the previous pass filled, and at least 256 MiB, so that one pass
# lasts >= 10 ms at 50 GB/s: thread start-up and the timer's resolution stay under 1 %.
LLC_MULTIPLE = 4
MIN_ARRAY_BYTES = 256 * 2**20
REPETITIONS = 5
CPU_CACHE_SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")


@dataclass(frozen=True)
class MemoryBandwidth:
    """environment.json's `memory_bandwidth`: the host's STREAM copy and triad at `threads`."""

    gb_per_s: float | None  # the higher of copy and triad: what the floors divide by (a floor must not be too high)
    copy_gb_per_s: float | None
    triad_gb_per_s: float | None
    threads: int  # torch intra-op threads: the usable cores
    array_bytes: int  # each array's size
    llc_bytes: int | None  # the last-level cache, from sysfs (None: not found)
    repetitions: int
    cached: bool  # read from the cache, measured earlier on this environment
    note: str | None = None  # why gb_per_s is None

    @property
    def bytes_per_s(self) -> float | None:
        return self.gb_per_s * 1e9 if self.gb_per_s else None


def stream_bytes(kernel: str, array_bytes: int) -> int:
    """Bytes one pass of `kernel` (copy or triad) moves over arrays of `array_bytes`: reads plus writes."""
    return STREAM_ARRAYS[kernel] * array_bytes


def last_level_cache_bytes(root: Path = CPU_CACHE_SYSFS) -> int | None:
    """The largest cache of the highest level cpu0 has (sysfs `indexN/level` and `size`, e.g. '32768K')."""
    best: tuple[int, int] | None = None
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text().strip())
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:].upper(), 1)
        number = size[:-1] if scale != 1 else size
        if not number.isdigit():
            continue
        candidate = (level, int(number) * scale)
        best = candidate if best is None or candidate > best else best
    return best[1] if best else None


def array_bytes_for(llc_bytes: int | None) -> int:
    """Each array's size: LLC_MULTIPLE x the last-level cache, at least MIN_ARRAY_BYTES, whole elements."""
    wanted = max(MIN_ARRAY_BYTES, LLC_MULTIPLE * (llc_bytes or 0))
    return wanted // ELEMENT_BYTES * ELEMENT_BYTES


def measure_bandwidth(
    threads: int,
    *,
    cache_dir: Path | str | None = None,
    fingerprint: str | None = None,
    repetitions: int = REPETITIONS,
    array_bytes: int | None = None,
    timeout_s: float = 120.0,
) -> MemoryBandwidth:
    """This host's copy and triad bandwidth at `threads`, measured in a fresh process, cached by fingerprint."""
    llc = last_level_cache_bytes()
    size = array_bytes if array_bytes is not None else array_bytes_for(llc)
    key = f"bandwidth-{fingerprint or 'nofingerprint'}-t{threads}-b{size}-r{repetitions}.json"
    cache_path = Path(cache_dir) / key if cache_dir is not None else None
    cached = read_cached(cache_path)
    if cached is not None:
        with contextlib.suppress(TypeError):  # a cache file of other fields: measured again
            return MemoryBandwidth(**{**cached, "cached": True})
    failed = MemoryBandwidth(None, None, None, threads, size, llc, repetitions, cached=False)
    args = ["bench.profile.roofline", "--bandwidth", str(size), str(repetitions)]
    try:
        best_s = run_probe(args, threads, timeout_s, "bandwidth measurement")
    except ProbeFailed as exc:
        return dataclasses.replace(failed, note=str(exc))
    copy = stream_bytes("copy", size) / best_s["copy"] / 1e9
    triad = stream_bytes("triad", size) / best_s["triad"] / 1e9
    result = MemoryBandwidth(max(copy, triad), copy, triad, threads, size, llc, repetitions, cached=False)
    keep(cache_path, {k: v for k, v in dataclasses.asdict(result).items() if k != "cached"})
    return result


def _bandwidth_child(array_bytes: int, repetitions: int) -> int:
    """Prints {'copy': best seconds, 'triad': best seconds} of one pass over `array_bytes` arrays."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n = array_bytes // ELEMENT_BYTES
    # fill_ touches every page before timing: the first touch's page faults are not bandwidth
    a, b, c = (torch.empty(n, dtype=torch.float64).fill_(v) for v in (0.0, 1.0, 2.0))
    best = {"copy": float("inf"), "triad": float("inf")}
    for _ in range(max(1, repetitions)):
        started = time.perf_counter()
        a.copy_(b)
        best["copy"] = min(best["copy"], time.perf_counter() - started)
        started = time.perf_counter()
        torch.add(b, c, alpha=3.0, out=a)
        best["triad"] = min(best["triad"], time.perf_counter() - started)
    print(json.dumps(best))
    return 0


# ---------------------------------------------------------------- a row under the roofline


def floor_s(bytes_moved: int | None, bandwidth_bytes_per_s: float | None) -> float | None:
    """The time that moving `bytes_moved` takes at the bandwidth: no call moving them is faster."""
    if not bytes_moved or not bandwidth_bytes_per_s:
        return None
    return bytes_moved / bandwidth_bytes_per_s


def utilization(floor: float | None, measured_s: float | None) -> float | None:
    """floor / measured: 1 at the bandwidth roof. Above 1 only if fewer bytes came from memory than
    were counted (weights small enough to stay in cache)."""
    if not floor or not measured_s or measured_s <= 0:
        return None
    return floor / measured_s


def bound(intensity: float | None, peak_gflops: float | None, bandwidth_bytes_per_s: float | None) -> str | None:
    """'memory' when the intensity (FLOP/byte) is under the ridge point (peak / bandwidth), else 'compute'."""
    if not intensity or not peak_gflops or not bandwidth_bytes_per_s:
        return None
    return "memory" if intensity < peak_gflops * 1e9 / bandwidth_bytes_per_s else "compute"


def main(argv: list[str]) -> int:
    """`--bandwidth ARRAY_BYTES REPETITIONS`: measure this host's copy and triad (see measure_bandwidth)."""
    if argv[:1] != ["--bandwidth"] or len(argv) != 3:
        print("usage: python -m bench.profile.roofline --bandwidth ARRAY_BYTES REPETITIONS", file=sys.stderr)
        return 2
    return _bandwidth_child(int(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
