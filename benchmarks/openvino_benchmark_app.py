"""bench's openvino rows against OpenVINO's own benchmark_app, on the same file, threads and batch.

A benchmark, not a test: it prints both medians and their ratio per pair, and the median ratio.
The two tools run in turn, --pairs times, so that the host's drift over minutes (up to 1.5x on a
small VM) falls on both alike. bench measures one scenario
(`load: openvino`, fp32), then benchmark_app runs the very ONNX artifact that row loaded, with
the same settings: CPU, synchronous API, one stream, f32 inference precision, the scenario's
threads, and the same input shape fed to the (dynamic-batch) model. bench sets the latency
hint plus INFERENCE_NUM_THREADS; benchmark_app accepts -nthreads/-nstreams only with
`-hint none`, so it gets the latency hint's outcome (one stream) spelled out.

    python benchmarks/openvino_benchmark_app.py --model resnet18 --input-shape 3 112 112 --threads 2 --batch 1
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.results.runfolder import load_run

MEDIAN_RE = re.compile(r"Median:\s*([0-9.]+)\s*(ms|us)\b")  # OpenVINO 2026 prints us below 1 ms


def bench_row(args: argparse.Namespace, work: Path) -> tuple[float, Path]:
    """Run the scenario with bench; its median latency (ms) and the ONNX file it loaded."""
    suite = work / "suite.yaml"
    suite.write_text(
        json.dumps(
            {  # JSON is YAML
                "name": "ov-vs-benchmark-app",
                "defaults": {"measure": {"max_time_s": args.time, "min_rounds": 30}},
                "matrix": {
                    "model": [args.model],
                    "load": ["openvino"],
                    "threads": [args.threads],
                    "batch_size": [args.batch],
                    "input_shape": [args.input_shape],
                },
            }
        ),
        encoding="utf-8",
    )
    reports = work / "reports"
    command = [sys.executable, "-m", "bench", "run", str(suite), "--reports", str(reports), "--no-history"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    (run_dir,) = [p for p in reports.iterdir() if p.is_dir() and not p.name.startswith(".")]
    (record,) = load_run(run_dir).records
    if record.status != "ok":
        raise SystemExit(f"bench's row is {record.status}: {record.reason}")
    spec = json.loads((run_dir / record.files["worker_dir"] / "spec.json").read_text(encoding="utf-8"))
    return record.latency_s.median * 1e3, Path(spec["artifact_path"])


def benchmark_app_median_ms(args: argparse.Namespace, onnx_path: Path) -> tuple[float, list[str]]:
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    shape = ",".join(str(d) for d in [args.batch, *args.input_shape])
    command = [
        tool,
        "-m",
        str(onnx_path),
        "-d",
        "CPU",
        "-api",
        "sync",
        "-hint",
        "none",
        "-nstreams",
        "1",
        "-nthreads",
        str(args.threads),
        "-infer_precision",
        "f32",
        "-data_shape",
        f"[{shape}]",
        "-t",
        str(args.time),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benchmark_app failed ({done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    match = MEDIAN_RE.search(done.stdout)
    if match is None:
        raise SystemExit(f"no 'Median: ... ms' (or us) in benchmark_app's output:\n{done.stdout[-2000:]}")
    return float(match.group(1)) / (1000 if match.group(2) == "us" else 1), command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--input-shape", type=int, nargs="+", default=[3, 112, 112])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--time", type=int, default=10, help="seconds each tool measures")
    parser.add_argument("--pairs", type=int, default=3, help="bench then benchmark_app, this many times")
    args = parser.parse_args()
    ratios = []
    print(f"model {args.model}, input {args.input_shape}, batch {args.batch}, threads {args.threads}")
    for pair in range(1, args.pairs + 1):
        with tempfile.TemporaryDirectory(prefix="ov-bench-") as tmp:
            bench_ms, onnx_path = bench_row(args, Path(tmp))
            app_ms, command = benchmark_app_median_ms(args, onnx_path)
        ratios.append(bench_ms / app_ms)
        print(
            f"pair {pair}: bench (load: openvino) median {bench_ms:.3f} ms, benchmark_app median {app_ms:.3f} ms, "
            f"ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"benchmark_app command: {' '.join(command[1:])}")
    print(
        f"ratio bench / benchmark_app: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} pairs)"
    )


if __name__ == "__main__":
    main()
