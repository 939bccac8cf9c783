"""Process memory: /proc counters, peak reset, the RSS sampler and its CSV (Linux only)."""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.measure.memory import (
    RssSample,
    RssSampler,
    max_rss_rusage_bytes,
    phase_at,
    read_status_bytes,
    reset_peak_rss,
    write_samples_csv,
)

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc"),
    pytest.mark.serial,  # the sampler's accuracy and its own CPU time are checked
]

MiB = 1024 * 1024

# Allocates and touches N bytes, holds them for a second, then reports its own VmHWM.
CHILD = """
import sys, time
n = int(sys.argv[1])
buf = bytearray(n)
for i in range(0, n, 4096):
    buf[i] = 1
time.sleep(1.0)
with open("/proc/self/status") as f:
    for line in f:
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) * 1024, flush=True)
"""


def test_read_status_bytes_self():
    status = read_status_bytes("self")
    assert set(status) >= {"VmRSS", "VmHWM", "RssAnon", "RssFile"}
    assert status["VmRSS"] > 1 * MiB
    assert status["VmHWM"] >= status["VmRSS"] > 0
    assert status["VmRSS"] % 1024 == 0  # kB converted to bytes
    assert status["RssAnon"] + status["RssFile"] <= status["VmRSS"] + 1 * MiB
    assert read_status_bytes(os.getpid())["VmHWM"] >= status["VmRSS"] // 2


def test_read_status_bytes_missing_process_is_empty():
    assert read_status_bytes(999_999_999) == {}


def test_max_rss_rusage_bytes_is_in_bytes():
    rusage = max_rss_rusage_bytes()
    assert rusage == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert rusage >= read_status_bytes()["VmRSS"] // 2


def test_reset_peak_rss_drops_vmhwm_back_to_current_rss():
    size = 200 * MiB
    block = bytearray(size)
    for i in range(0, size, 4096):
        block[i] = 1
    del block
    after_free = read_status_bytes()
    assert after_free["VmHWM"] >= after_free["VmRSS"] + 150 * MiB, "the 200 MB block should have raised VmHWM"
    if not reset_peak_rss():
        pytest.skip("cannot write /proc/self/clear_refs here (kernel < 4.0 or a restricted container)")
    after_reset = read_status_bytes()
    assert after_reset["VmHWM"] < after_free["VmHWM"] - 150 * MiB
    assert after_reset["VmHWM"] <= after_reset["VmRSS"] + 20 * MiB


def test_sampler_peak_matches_child_vmhwm():
    size = 300 * MiB
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(size)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with RssSampler(process.pid, interval_s=0.01) as sampler:
            stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    child_hwm = int(stdout.strip())
    assert child_hwm > size
    peak = sampler.peak_bytes()
    assert peak is not None
    assert 0.9 * child_hwm <= peak <= child_hwm, (peak, child_hwm)
    assert len(sampler.samples) >= 20
    times = [s.t_s for s in sampler.samples]
    assert times == sorted(times)
    # USS is sampled more rarely, but it is sampled, and the 300 MB are the child's own pages.
    assert sampler.peak_uss_bytes() is not None
    assert sampler.peak_uss_bytes() >= size
    assert sum(s.uss_bytes is not None for s in sampler.samples) < len(sampler.samples)


def test_sampler_sleeps_between_samples_and_does_not_spin():
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    with RssSampler(os.getpid(), interval_s=0.05) as sampler:
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    # About 1.0 / 0.05 = 20 samples; a spinning loop would take thousands.
    assert 5 <= len(sampler.samples) < 60, len(sampler.samples)
    assert cpu_s < 0.5, f"sampler used {cpu_s:.2f} s of CPU in {elapsed:.2f} s"
    gaps = [b.t_s - a.t_s for a, b in zip(sampler.samples, sampler.samples[1:], strict=False)]
    assert min(gaps) >= 0.04
    assert all(s.rss_bytes > 0 for s in sampler.samples)


def test_sampler_stop_is_prompt_even_with_a_long_interval():
    sampler = RssSampler(os.getpid(), interval_s=30.0)
    sampler.__enter__()
    time.sleep(0.05)
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1.0
    assert len(sampler.samples) == 1
    sampler.stop()  # a second stop is harmless


def test_sampler_ends_by_itself_when_the_process_is_gone():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    with RssSampler(process.pid, interval_s=0.01) as sampler:
        process.wait(timeout=30)  # reaped: the pid no longer exists
        time.sleep(0.05)
        count = len(sampler.samples)
        time.sleep(0.2)  # a sampler still running would add ~20 samples here
        assert len(sampler.samples) == count


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_sampler_started_after_the_process_is_reaped_ends_cleanly():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sampler = RssSampler(process.pid, interval_s=0.01)
    finally:
        process.kill()
        process.wait(timeout=30)
    with sampler:
        time.sleep(0.1)
    assert sampler.samples == []
    assert sampler.peak_bytes() is None
    assert sampler.peak_uss_bytes() is None


def test_sampler_ends_by_itself_when_the_process_is_a_zombie():
    # The runner reaps the worker only after the sampler has seen it exit: a zombie
    # (exited, not yet reaped) must end sampling too, and leave no zero-RSS samples.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.1)"])
    try:
        with RssSampler(process.pid, interval_s=0.01) as sampler:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, still unreaped
            time.sleep(0.05)
            count = len(sampler.samples)
            time.sleep(0.2)
            assert len(sampler.samples) == count
    finally:
        process.wait(timeout=30)
    assert count >= 3
    assert all(s.rss_bytes > 0 for s in sampler.samples)


def test_toggle_period_leaves_samples_only_inside_on_windows():
    period = 0.1
    with RssSampler(os.getpid(), interval_s=0.01, toggle_period_s=period) as sampler:
        time.sleep(0.75)
    windows = sampler.on_windows
    assert 3 <= len(windows) <= 5, windows
    for start, end in windows:
        assert end - start == pytest.approx(period)
    for earlier, later in zip(windows, windows[1:], strict=False):
        assert later[0] - earlier[0] == pytest.approx(2 * period)  # one off window between two on windows
    assert sampler.samples
    for sample in sampler.samples:
        assert any(start <= sample.t_s < end for start, end in windows), sample.t_s
    # Every on window got samples, and the off windows got none.
    for start, end in windows[:-1]:
        assert sum(start <= s.t_s < end for s in sampler.samples) >= 1  # >= 1: CI neighbours may delay the thread
    assert len(sampler.samples) < 0.75 / 0.01


def test_sample_anon_is_rss_minus_file():
    sample = RssSample(t_s=1.0, rss_bytes=1000, rss_file_bytes=300, uss_bytes=None, pss_bytes=None)
    assert sample.rss_anon_bytes == 700


PHASES = [(10.0, "load"), (12.0, "first_inference"), (13.0, "steady")]


@pytest.mark.parametrize(
    ("t_s", "phase"),
    [
        (0.0, "startup"),
        (9.999, "startup"),
        (10.0, "load"),  # a phase starts at its start time
        (11.5, "load"),
        (12.0, "first_inference"),
        (12.999, "first_inference"),
        (13.0, "steady"),
        (1e9, "steady"),
    ],
)
def test_phase_at_boundaries(t_s, phase):
    assert phase_at(t_s, PHASES) == phase


def test_phase_at_without_phases_is_startup():
    assert phase_at(5.0, []) == "startup"


def test_write_samples_csv(tmp_path: Path):
    samples = [
        RssSample(9.5, 1000, 100, 800, 900),
        RssSample(10.0, 2000, 200, None, None),
        RssSample(12.25, 3000, 300, None, None),
        RssSample(13.0, 4000, 1000, 2500, 2600),
    ]
    path = tmp_path / "raw" / "scenario" / "rss.csv"  # parents are created
    write_samples_csv(path, samples, origin_s=9.0, phase_starts=PHASES)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["t_s", "phase", "rss_bytes", "rss_anon_bytes", "rss_file_bytes", "uss_bytes", "pss_bytes"]
    assert rows[1:] == [
        ["0.5000", "startup", "1000", "900", "100", "800", "900"],
        ["1.0000", "load", "2000", "1800", "200", "", ""],
        ["3.2500", "first_inference", "3000", "2700", "300", "", ""],
        ["4.0000", "steady", "4000", "3000", "1000", "2500", "2600"],
    ]


def test_write_samples_csv_without_samples_writes_only_the_header(tmp_path: Path):
    path = tmp_path / "rss.csv"
    write_samples_csv(path, [], origin_s=0.0, phase_starts=[])
    assert path.read_text(encoding="utf-8").splitlines() == [
        "t_s,phase,rss_bytes,rss_anon_bytes,rss_file_bytes,uss_bytes,pss_bytes"
    ]
