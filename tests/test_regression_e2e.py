"""End to end: real `bench run`s of tiny_mlp recorded in the history, then `bench compare`.

The "head commit" with a regression is a copy of the bench package whose models.py builds
a slower (or fatter) tiny_mlp: the same scenario ids, a different code base, as when a
pull request makes a model slower. `bench run` from that copy (PYTHONPATH) runs its
workers from the copy too (bench.measure.child.child_env), and the artifact cache keys on the
models.py source, so nothing of the base run is reused.

Runs are shared by the tests of this module (one base pair, one slow, one fat, one with
another thread count): about a minute and a half on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import bench

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # serial: two runs' timings are compared

SCENARIO = "tiny_mlp-b1-t1-fp32-eager"
# Generous rounds: a tiny_mlp call takes tens of microseconds, so 1.5 s is thousands of
# rounds and the median's interval is a fraction of a percent wide.
SUITE = """\
name: regress
defaults:
  model: tiny_mlp
  measure: {{warmup_rounds: 200, min_rounds: 300, max_rounds: 50000, max_time_s: {max_time_s}}}
matrix:
  batch_size: [1]
  threads: [{threads}]
"""

# Appended to the copy's models/catalog.py: tiny_mlp runs its layers four times (same weights, same
# outputs, four times the work). Four, not 1.2: on a busy 2-core machine tiny_mlp's median
# was seen to switch between 27 and 45 us within one run (a neighbour on the sibling
# hyperthread), and `bench compare` rightly trusts no change smaller than that drift.
SLOW_PATCH = """

# --- test_regression_e2e: the slower head commit ---
_base_build_builtin = _build_builtin


def _build_builtin(name):
    model = _base_build_builtin(name)
    if name != "tiny_mlp":
        return model
    from torch import nn

    class FourTimes(nn.Sequential):
        def forward(self, x):
            for _ in range(3):
                super().forward(x)
            return super().forward(x)

    return FourTimes(*model)
"""

# tiny_mlp holds a ballast buffer (not in its state_dict, so its artifact loads as before),
# filled with ones so that its pages are resident.
FAT_PATCH = """

# --- test_regression_e2e: the fatter head commit ---
_base_build_builtin = _build_builtin


def _build_builtin(name):
    model = _base_build_builtin(name)
    if name != "tiny_mlp":
        return model
    import torch
    from torch import nn

    class Fat(nn.Sequential):
        def __init__(self, *layers):
            super().__init__(*layers)
            self.register_buffer("ballast", torch.ones({ballast_bytes} // 4), persistent=False)

    return Fat(*model)
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def host_speed_s() -> float:
    """The median of 9 timings of a fixed pure-Python loop: how fast this host runs code right now.

    This VM was seen to switch speed between runs (tiny_mlp's median 41 us in one run, 69 us in the
    next, with no other process on the machine): a steady host is a precondition of A/A."""
    times = []
    for _ in range(9):
        started = time.perf_counter()
        sum(i * i for i in range(100_000))
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.host_speeds_s: dict[Path, tuple[float, float]] = {}  # run folder: loop time before and after it

    def bench(self, *args: str, code: Path | None = None, timeout_s: float = 300) -> Result:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
        if code is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p)
        done = subprocess.run(
            [sys.executable, "-m", "bench", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def run(self, label: str, *, code: Path | None = None, threads: int = 1, max_time_s: float = 1.5) -> Path:
        suite = self.root / f"suite-t{threads}-{max_time_s}.yaml"
        suite.write_text(SUITE.format(threads=threads, max_time_s=max_time_s), encoding="utf-8")
        # retry: a row measured on a contended host is never called regressed (bench.checks.contention)
        before_s = host_speed_s()
        result = self.bench("run", str(suite.name), "--label", label, "--on-contention", "retry", code=code)
        after_s = host_speed_s()
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert "history: recorded run" in result.stderr, result.stderr  # `bench run` recorded it by itself
        match = re.search(r"run folder: (\S+)", result.stdout)
        assert match, result.stdout
        self.host_speeds_s[self.root / match.group(1)] = (before_s, after_s)
        return self.root / match.group(1)

    def head(self, name: str, patch: str) -> Path:
        """A copy of the bench package with `patch` appended to its models/catalog.py."""
        root = self.root / f"head-{name}"
        shutil.copytree(Path(bench.__file__).parent, root / "bench", ignore=shutil.ignore_patterns("__pycache__"))
        catalog = root / "bench" / "models" / "catalog.py"
        assert catalog.is_file(), f"{catalog} moved: the patch would land in a new file no one imports"
        with open(catalog, "a", encoding="utf-8") as f:
            f.write(textwrap.dedent(patch))
        return root

    def compare(self, *args: str) -> tuple[Result, dict | None]:
        result = self.bench("compare", *args, "--format", "json")
        data = json.loads(result.stdout) if result.returncode in (0, 1) else None
        return result, data


def rows(data: dict, metric: str) -> list[dict]:
    return [r for r in data["rows"] if r["metric"] == metric]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("regression"))


@pytest.fixture(scope="module")
def base_runs(ws) -> tuple[Path, Path]:
    return ws.run("main"), ws.run("main")


def test_a_and_a_is_never_regressed(ws, base_runs):
    # Two fresh-clone CI runs on a quiet VM flagged the p99 of this 18 us model as regressed by
    # 31-34 % between two back-to-back runs of the same code (both rows quiet, the host loop steady
    # within 10 %): a change between runs that one run's own rounds cannot show. A bias of bench's
    # own (a second run always slower) flags every pair, so a flagged pair is measured once more,
    # as a pair of its own (label `aa`: `main` stays the baseline of the tests below), and only a
    # second flag fails.
    pair = base_runs
    for attempt in range(2):
        result, data = ws.compare(str(pair[0]), str(pair[1]))
        assert result.returncode in (0, 1), result.stdout + result.stderr
        verdicts = {(r["scenario_id"], r["metric"]): r["verdict"] for r in data["rows"]}
        assert set(verdicts) == {(SCENARIO, m) for m in ("median", "p99", "throughput", "load", "peak_rss")}
        assert data["comparable"] and data["environment_differences"] == []
        if set(verdicts.values()) <= {"unchanged", "inconclusive"}:
            assert result.returncode == 0, result.stdout + result.stderr
            return
        speeds = [s for run in pair for s in ws.host_speeds_s[run]]
        spread = max(speeds) / min(speeds) - 1
        if spread > 0.10:  # the host itself changed speed: two runs then differ, and rightly so
            pytest.skip(
                f"the host's speed changed by {spread:.0%} around the two runs (a fixed loop took "
                f"{min(speeds) * 1e3:.2f}-{max(speeds) * 1e3:.2f} ms): A/A needs a steady host"
            )
        if attempt == 0:
            pair = (ws.run("aa"), ws.run("aa"))
    raise AssertionError(json.dumps(data["rows"], indent=1))


def test_an_injected_slowdown_is_regressed_with_exit_status_1(ws, base_runs):
    head = ws.head("slow", SLOW_PATCH)
    baseline = base_runs[1]
    # A run on a host that stalled is rightly inconclusive (contended, or drifted: stretches of
    # its rounds disagree); CI saw a baseline drift by 1297% with no contention recorded. Such a
    # pair is measured once more, a fresh baseline first; then the test needs a steady host.
    for attempt in range(2):
        slow_run = ws.run("head", code=head)
        # the baseline by label from the history that `bench run` filled
        result, data = ws.compare("--baseline", "main", str(slow_run))
        assert data["baseline"]["run_id"] == baseline.name  # the latest `main` run
        [median] = rows(data, "median")
        unsteady = _unsteady_host(median, baseline, slow_run)
        if unsteady is None:
            break
        assert result.returncode == 0 and median["verdict"] == "inconclusive", json.dumps(median)
        if attempt == 0:
            baseline = ws.run("main")
    else:
        pytest.skip(
            f"the host was unsteady in two attempts ({unsteady}): compare rightly said inconclusive; "
            "the regression verdict needs a steady host"
        )
    assert result.returncode == 1, result.stdout + result.stderr
    # the whole row (its note names a run's drift, which makes the rule say inconclusive) when it fails
    assert median["verdict"] == "regressed" and median["change"] >= 0.5 and median["ci_low"] > 0, json.dumps(median)
    # throughput comes from the mean, which a busy machine's stalls move far more than the
    # median: it may rightly be inconclusive here, but never improved
    assert rows(data, "throughput")[0]["verdict"] in ("regressed", "inconclusive")

    markdown = ws.bench("compare", "--baseline", "main", str(slow_run), "--format", "markdown")
    assert markdown.returncode == 1
    assert markdown.stdout.startswith("### bench compare: **") and f"| {SCENARIO} | median latency |" in markdown.stdout


def _unsteady_host(median: dict, *runs: Path) -> str | None:
    """Why compare could not judge this pair on this host, or None when it could."""
    for run_dir in runs:
        records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
        if any((r.get("contention") or {}).get("verdict") == "contended" for r in records):
            assert "contended host" in median["note"], json.dumps(median)
            return f"{run_dir.name} was contended"
    if median["verdict"] == "inconclusive" and "drifted" in (median["note"] or ""):
        return median["note"]
    return None


def test_a_memory_increase_is_reported(ws, base_runs):
    base_data = json.loads((base_runs[0] / "results.jsonl").read_text().splitlines()[0])
    peak = base_data["peak_rss_kernel_bytes"] or base_data["rss_bytes"]["peak"]
    ballast = int(peak * 0.3)  # +30 %: comfortably past the 20 % the issue asks to see
    fat_run = ws.run("head", code=ws.head("fat", FAT_PATCH.format(ballast_bytes=ballast)))
    result, data = ws.compare(str(base_runs[0]), str(fat_run))
    assert result.returncode == 1, result.stdout + result.stderr
    [memory] = rows(data, "peak_rss")
    assert memory["verdict"] == "regressed" and memory["change"] >= 0.2, memory


def test_different_thread_counts_are_refused(ws, base_runs):
    two_threads = ws.run("threads", threads=2, max_time_s=0.2)
    result, data = ws.compare(str(base_runs[0]), str(two_threads))
    assert result.returncode == 2 and data is None
    assert "thread settings differ" in result.stderr and "threads=1 in the baseline, threads=2" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_history_lists_the_runs_and_follows_the_scenario(ws, base_runs):
    listing = ws.bench("history")
    assert listing.returncode == 0, listing.stderr
    for run in base_runs:
        assert run.name in listing.stdout
    assert "main" in listing.stdout
    trend = ws.bench("history", "--scenario", SCENARIO)
    assert trend.returncode == 0, trend.stderr
    assert f"{SCENARIO}: median latency" in trend.stdout and base_runs[0].name in trend.stdout
