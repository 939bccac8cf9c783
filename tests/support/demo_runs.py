"""Hand-made run folders for the report tests: results.jsonl, raw benchmark JSON, RSS CSVs
and environment.json, written without running any worker."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
from pathlib import Path

from bench.results.record import Fidelity, ResultRecord, RssFigures
from bench.results.runfolder import RunFolder
from bench.results.stats import LatencyStats

MIB = 1024 * 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = '<script>alert("boom")</script> & friends'
RUN_ID = "20260101-120000-demo"
ENVIRONMENT = {
    "cpu_model": "Test CPU 9000",
    "cpu_flags": ["avx", "avx2", "fma", "avx512f", "avx512_bf16"],
    "isa": {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_tile": False},
    "logical_cores": 8,
    "physical_cores": 4,
    "usable_cores": 8,
    "memory_total_bytes": 16 * 1024**3,
    "libraries": {"torch": "2.14.1", "onnxruntime": "1.32.0"},
    "torch": {"cpu_capability": "AVX512", "parallel_backend": "OpenMP"},
    "git": {"sha": "abc123def456", "dirty": False},
    "fingerprint": "f00dfeedf00dfeed",
}


@dataclasses.dataclass
class Spec:
    """One hand-made scenario: what it is and how it went."""

    model: str = "tiny_mlp"
    batch_size: int = 1
    threads: int = 1
    precision: str = "fp32"
    load: str = "eager"
    status: str = "ok"
    reason: str | None = None
    median_ms: float = 1.0
    fidelity: Fidelity | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # more ResultRecord fields

    @property
    def scenario_id(self) -> str:
        return f"{self.model}-b{self.batch_size}-t{self.threads}-{self.precision}-{self.load}"


DEMO = [
    Spec(median_ms=0.5),
    Spec(batch_size=4, median_ms=1.2),
    Spec(threads=2, median_ms=0.3),
    Spec(precision="bf16", median_ms=2.0),  # 4x the fp32 row: a precision cliff
    Spec(precision="fp16", median_ms=0.75),  # 1.5x: no cliff
    Spec(model="tiny_cnn", median_ms=3.0),
    Spec(model="tiny_cnn", batch_size=4, median_ms=9.0),
    Spec(
        model="tiny_cnn",
        batch_size=2,
        threads=2,
        status="failed",
        reason=f"RuntimeError during first_inference: {EVIL}\nlast line of stderr",
    ),
    Spec(
        model="resnet18",
        precision="int8_dynamic",
        load="onnxruntime",
        status="unsupported",
        reason="int8_dynamic with onnxruntime is not implemented",
    ),
]


def make_record(
    spec: Spec, run_id: str = RUN_ID, suite: str = "demo", scale: float = 1.0
) -> tuple[ResultRecord, list[float]]:
    rng = random.Random(spec.scenario_id)
    times = [spec.median_ms * scale / 1e3 * (1 + rng.uniform(-0.1, 0.3)) for _ in range(40)]
    base = dict(
        run_id=run_id,
        scenario_id=spec.scenario_id,
        suite=suite,
        model=spec.model,
        batch_size=spec.batch_size,
        threads=spec.threads,
        interop_threads=1,
        precision=spec.precision,
        load=spec.load,
        runtime="torch",
        input_shape=[64] if spec.model == "tiny_mlp" else [3, 32, 32],
        status=spec.status,
        reason=spec.reason,
        environment_fingerprint=ENVIRONMENT["fingerprint"],
        git_sha="abc123def456",
    )
    if spec.status == "unsupported":
        return ResultRecord(**base), []
    files = {
        "benchmark_json": f"benchmark/{spec.scenario_id}.json",
        "rss_csv": f"rss/{spec.scenario_id}.csv",
        "worker_dir": f"workers/{spec.scenario_id}",
    }
    rss = RssFigures(before_load=500 * MIB, after_load=520 * MIB, peak=(530 + 10 * spec.batch_size) * MIB)
    if spec.status == "failed":
        return ResultRecord(**base, files=files, load_s=0.01, rss_bytes=rss, artifact_bytes=300_000), []
    latency = LatencyStats.from_times(times)
    record = ResultRecord(
        **base,
        files=files,
        load_s=0.02 * (2 if spec.load != "eager" else 1),
        first_inference_s=0.003,
        latency_s=latency,
        throughput_samples_per_s=spec.batch_size / latency.mean,
        rss_bytes=rss,
        artifact_bytes=300_000,
        fidelity=spec.fidelity,
        percentile_rule="nearest-rank",
        **spec.extra,
    )
    return record, times


def write_rss_csv(path: Path, peak_mib: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    phases = [  # (phase, samples, first MiB, last MiB)
        ("startup", 30, 10, 500),
        ("load", 3, 500, 520),
        ("first_inference", 2, 520, 525),
        ("warmup", 3, 525, 526),
        ("steady", 20, 526, peak_mib),
        ("done", 10, peak_mib, peak_mib + 100),
    ]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "phase", "rss_bytes", "rss_anon_bytes", "rss_file_bytes", "uss_bytes", "pss_bytes"])
        t = 0.0
        for phase, n, start, end in phases:
            for i in range(n):
                rss = int((start + (end - start) * i / max(n - 1, 1)) * MIB)
                writer.writerow([f"{t:.4f}", phase, rss, rss // 2, rss - rss // 2, "", ""])
                t += 0.01


def make_run(
    root: Path,
    specs: list[Spec] = DEMO,
    run_id: str = RUN_ID,
    suite: str = "demo",
    scale: float = 1.0,
    status: str = "complete",
) -> Path:
    """A run folder as `bench run` writes it, without running anything."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_id, "suite": suite, "status": status}))
    (run_dir / "environment.json").write_text(json.dumps(ENVIRONMENT))
    (run_dir / "scenarios.json").write_text(json.dumps([{"scenario_id": s.scenario_id} for s in specs]))
    lines = []
    for spec in specs:
        record, times = make_record(spec, run_id, suite, scale)
        lines.append(record.to_json())
        if times:
            bench_json = run_dir / record.files["benchmark_json"]
            bench_json.parent.mkdir(parents=True, exist_ok=True)
            bench_json.write_text(json.dumps({"benchmarks": [{"stats": {"data": times}}]}))
        if record.files:
            write_rss_csv(run_dir / record.files["rss_csv"], record.rss_bytes.peak / MIB)
    (run_dir / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    return run_dir


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"


def update_row(run_dir: Path, scenario_id: str, changes: dict) -> None:
    """Merge `changes` into one row of a hand-made run's results.jsonl (nested dicts are merged too)."""
    lines = []
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["scenario_id"] == scenario_id:
            for key, value in changes.items():
                record[key] = {**record[key], **value} if isinstance(record.get(key), dict) else value
        lines.append(json.dumps(record))
    (run_dir / "results.jsonl").write_text("".join(line + "\n" for line in lines))


def allocation_events_demo(calls: int = 10) -> list[dict]:
    """memory.csv rows: load allocates 2 MiB, the first call keeps 0.5 MiB (1.5 MiB at its peak), then each
    profiled call allocates 64 KiB and frees it."""
    events, level, t = [], 0, 0.0

    def add(phase: str, nbytes: int, call: int | None = None) -> None:
        nonlocal level, t
        level += nbytes
        t += 0.001
        events.append({"t_s": t, "phase": phase, "call": call, "bytes": nbytes, "allocated_bytes": level})

    for _ in range(4):
        add("load", MIB // 2)
    add("first_inference", MIB)
    add("first_inference", -MIB // 2)
    for call in range(calls):
        add("steady", 64 * 1024, call)
        add("steady", -64 * 1024, call)
    return events


def add_profile(run_dir: Path, scenario_id: str, *, status: str = "ok", note: str | None = None) -> None:
    """Give one row of a hand-made run what `profile: true` leaves: profile/<id>/ files and record.profile."""
    import pandas as pd

    from bench.profile import folder as profile_format
    from bench.profile import profiler as profiling

    if status != "ok":
        update_row(run_dir, scenario_id, {"profile": {"status": status, "note": note}})
        return
    folder = run_dir / "profile" / scenario_id
    folder.mkdir(parents=True)
    ops = [("aten::addmm", 0.002, 80.0), (EVIL, 0.0005, 20.0)]
    pd.DataFrame(
        [
            {
                "op": op,
                "calls": 20,
                "calls_per_iter": 2.0,
                "self_cpu_s": t,
                "total_cpu_s": t,
                "self_cpu_pct": pct,
                "self_cpu_per_iter_s": t / 10,
                "cpu_memory_bytes": 4096,
                "input_shapes": "[[1, 64]]",
            }
            for op, t, pct in ops
        ]
    )[profile_format.OPS_COLUMNS].to_csv(folder / "ops.csv", index=False)
    (folder / "trace.json").write_text('{"traceEvents": []}')
    events = allocation_events_demo()
    pd.DataFrame(events, columns=profile_format.MEMORY_COLUMNS).to_csv(folder / "memory.csv", index=False)
    names = {"ops_csv": "ops.csv", "trace_json": "trace.json", "memory_csv": "memory.csv"}
    files = {key: f"profile/{scenario_id}/{name}" for key, name in names.items()}
    figures = {
        "status": "ok",
        "note": None,
        "runtime": "torch",
        "iterations": 10,
        "median_latency_s": 2.5e-4,
        "explained_ratio": 1.02,
        "ops_only_ratio": 0.8,
        "top_op": "aten::addmm",
        "top_op_pct": 80.0,
        "flops": 168960,
        "achieved_gflops": 0.7,
        "peak_gflops": 70.0,
        "percent_of_peak": 1.0,
        **profiling.allocation_figures(events, 10),
    }
    update_row(run_dir, scenario_id, {"profile": figures, "files": files})


def run_of(records: list[ResultRecord], path: Path = Path("r"), suite: str = "demo") -> RunFolder:
    """The run model (bench.results.runfolder) of records made in memory, as a report section reads it."""
    return RunFolder(
        path=path,
        source=str(path),
        run_id="r",
        suite=suite,
        info={},
        environment={},
        lines=[],
        records=records,
        results={},
        expected_scenarios=[r.scenario_id for r in records],
        started_at=None,
        git_sha=None,
        branch=None,
    )
