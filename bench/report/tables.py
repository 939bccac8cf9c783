"""The report's tables, as pandas DataFrames: one flat row per scenario, and run comparisons.

`summary_frame` is also what results.csv holds. Units are in the column names (`_ms`,
`_mib`, `_per_s`); a value that was not measured is empty (NaN), never zero.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.checks.fidelity import is_flat
from bench.format.units import GIB, MIB
from bench.models.pruning import DENSE
from bench.results.record import ResultRecord
from bench.results.runfolder import RunFolder

# A non-fp32 row this many times slower than the fp32 row of the same configuration is a cliff.
CLIFF_RATIO = 3.0
REFERENCE_PRECISION = "fp32"

# Columns of results.csv, in order.
COLUMNS = [
    "run_id",
    "scenario_id",
    "suite",
    "model",
    "batch_size",
    "threads",
    "interop_threads",
    "precision",
    "load",
    "runtime",
    "input_shape",
    "variant",
    "grad_mode",
    "module_mode",
    "host_group",
    "status",
    "reason",
    "latency_median_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "latency_min_ms",
    "latency_max_ms",
    "latency_stddev_ms",
    "rounds",
    "throughput_samples_per_s",
    "load_ms",
    "first_inference_ms",
    "peak_rss_mib",
    "rss_before_load_mib",
    "peak_rss_anon_mib",
    "peak_rss_file_mib",
    "peak_uss_mib",
    "artifact_mib",
    "fidelity_max_abs_error",
    "fidelity_cosine_similarity",
    "fidelity_top1_agreement",
    "fidelity_inputs",
    "fidelity_non_finite_outputs",
    "fidelity_input_dependence",
    "vs_fp32",
    "cliff",
    "vs_dense",
    "weight_sparsity",
    "parameters",
    "pipeline_images_per_s",
    "top1_accuracy",
    "top5_accuracy",
    "autograd_saved_mib",
    "outputs_repeat",
    "given_training",
    "given_parameters_requiring_grad",
    "rounds_limited_by_time",
    "artifact_format",
    "artifact_cached",
    "quantized_layers",
    "ort_graph_optimization_level",
    "cpu_utilization",
    "contention",
    "contention_why",
    "torch_num_threads",
    "torch_num_interop_threads",
    "environment_fingerprint",
    "git_sha",
    "started_at",
    "duration_s",
    "schema_version",
    "seq_len",
    "task",
    "fidelity_metric",
    "ttft_median_ms",
    "tpot_median_ms",
    "generation_tokens_per_s",
    "compile_ms",
    "cold_start_ms",
    "compile_cache",
]
# Identifies "the same configuration" for the fp32 reference: everything but precision.
CONFIG_KEY = [
    "run_id",
    "host_group",
    "model",
    "batch_size",
    "threads",
    "interop_threads",
    "load",
    "input_shape",
    "variant",
    "grad_mode",
    "module_mode",
]


@dataclass(frozen=True)
class Column:
    """How a summary column is shown in HTML and Markdown."""

    key: str
    title: str
    unit: str = ""
    digits: str = "auto"  # "auto" (3 significant-ish), "int", "ratio", "text"


# What the summary table shows (results.csv has more).
DISPLAY_COLUMNS = [
    Column("scenario_id", "scenario", digits="text"),
    Column("latency_median_ms", "median", "ms"),
    Column("latency_p90_ms", "p90", "ms"),
    Column("latency_p99_ms", "p99", "ms"),
    Column("throughput_samples_per_s", "throughput", "samples/s"),
    Column("load_ms", "load", "ms"),
    Column("first_inference_ms", "first inference", "ms"),
    Column("peak_rss_mib", "peak RSS", "MiB"),
    Column("artifact_mib", "artifact", "MiB"),
    Column("vs_fp32", "vs fp32", "×", digits="ratio"),
    Column("status", "status", digits="text"),
]
VARIANT_COLUMNS = [Column("vs_dense", "vs dense", "×", digits="ratio")]
FIDELITY_COLUMNS = [
    Column("fidelity_cosine_similarity", "cosine sim.", digits="cosine"),
    Column("fidelity_top1_agreement", "top-1 agree", "%", digits="percent"),
    Column("fidelity_max_abs_error", "max abs err", digits="error"),
]


def display_columns(*, fidelity: bool, status_first: bool, variants: bool = False) -> list[Column]:
    """The summary table's columns: fidelity and pruning ones only when measured; status second or last."""
    columns = [c for c in DISPLAY_COLUMNS if c.key != "status"]
    if variants:
        columns += VARIANT_COLUMNS
    if fidelity:
        columns += FIDELITY_COLUMNS
    status = next(c for c in DISPLAY_COLUMNS if c.key == "status")
    return [columns[0], status, *columns[1:]] if status_first else [*columns, status]


def _get(obj: Any, name: str) -> Any:
    return None if obj is None else getattr(obj, name, None)


def _num(value: Any, scale: float = 1.0) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number * scale if math.isfinite(number) else math.nan


def shape_text(shape: Any) -> str:
    if isinstance(shape, list | tuple):
        return "x".join(str(v) for v in shape)
    return "" if shape is None else str(shape)


def record_row(record: ResultRecord) -> dict[str, Any]:
    """One flat row of results.csv."""
    lat, rss, fid = record.latency_s, record.rss_bytes, record.fidelity
    hygiene = getattr(record, "hygiene", None)
    generation = getattr(record, "generation", None)
    return {
        "run_id": record.run_id,
        "scenario_id": record.scenario_id,
        "suite": record.suite,
        "model": record.model,
        "batch_size": _num(record.batch_size),
        "threads": _num(record.threads),
        "interop_threads": _num(record.interop_threads),
        "precision": record.precision,
        "load": record.load,
        "runtime": record.runtime,
        "input_shape": shape_text(record.input_shape),
        "host_group": getattr(record, "host_group", None) or "",
        "status": record.status,
        "reason": record.reason or "",
        "latency_median_ms": _num(_get(lat, "median"), 1e3),
        "latency_p90_ms": _num(_get(lat, "p90"), 1e3),
        "latency_p99_ms": _num(_get(lat, "p99"), 1e3),
        "latency_mean_ms": _num(_get(lat, "mean"), 1e3),
        "latency_min_ms": _num(_get(lat, "min"), 1e3),
        "latency_max_ms": _num(_get(lat, "max"), 1e3),
        "latency_stddev_ms": _num(_get(lat, "stddev"), 1e3),
        "rounds": _num(_get(lat, "rounds")),
        "throughput_samples_per_s": _num(record.throughput_samples_per_s),
        "load_ms": _num(record.load_s, 1e3),
        "first_inference_ms": _num(record.first_inference_s, 1e3),
        "peak_rss_mib": _num(_get(rss, "peak"), 1 / MIB),
        "rss_before_load_mib": _num(_get(rss, "before_load"), 1 / MIB),
        "peak_rss_anon_mib": _num(_get(rss, "peak_anon"), 1 / MIB),
        "peak_rss_file_mib": _num(_get(rss, "peak_file"), 1 / MIB),
        "peak_uss_mib": _num(_get(rss, "peak_uss"), 1 / MIB),
        "artifact_mib": _num(record.artifact_bytes, 1 / MIB),
        "fidelity_max_abs_error": _num(_get(fid, "max_abs_error")),
        "fidelity_cosine_similarity": _num(_get(fid, "cosine_similarity")),
        "fidelity_top1_agreement": _num(_get(fid, "top1_agreement")),
        "fidelity_inputs": _num(_get(fid, "inputs")),
        "fidelity_non_finite_outputs": _num(_get(fid, "non_finite_outputs")),
        "fidelity_input_dependence": _num(_get(fid, "input_dependence")),
        "vs_fp32": math.nan,
        "cliff": False,
        "vs_dense": math.nan,
        "variant": record.variant,
        "weight_sparsity": _num(_get(getattr(record, "pruning", None), "weight_sparsity")),
        "parameters": _num(_get(getattr(record, "pruning", None), "parameters_after")),
        "pipeline_images_per_s": _num(_get(getattr(record, "pipeline", None), "end_to_end_images_per_s")),
        "top1_accuracy": _num(_get(getattr(record, "pipeline", None), "top1_accuracy")),
        "top5_accuracy": _num(_get(getattr(record, "pipeline", None), "top5_accuracy")),
        "grad_mode": record.grad_mode,
        "module_mode": record.module_mode,
        "autograd_saved_mib": _num(_get(hygiene, "autograd_saved_bytes"), 1 / MIB),
        "outputs_repeat": _get(hygiene, "outputs_repeat"),
        "given_training": _get(hygiene, "given_training"),
        "given_parameters_requiring_grad": _num(_get(hygiene, "given_parameters_requiring_grad")),
        # Fields of newer schemas, read with getattr so that the report also runs against older code.
        "rounds_limited_by_time": bool(getattr(record, "rounds_limited_by_time", None)),
        "artifact_format": getattr(record, "artifact_format", None) or "",
        "artifact_cached": getattr(record, "artifact_cached", None),
        "quantized_layers": _num(getattr(record, "quantized_layers", None)),
        "ort_graph_optimization_level": getattr(record, "ort_graph_optimization_level", None) or "",
        "cpu_utilization": _num(record.cpu_utilization),
        "contention": _get(getattr(record, "contention", None), "verdict") or "",
        "contention_why": _get(getattr(record, "contention", None), "why") or "",
        "torch_num_threads": _num(record.torch_num_threads),
        "torch_num_interop_threads": _num(record.torch_num_interop_threads),
        "environment_fingerprint": record.environment_fingerprint or "",
        "git_sha": record.git_sha or "",
        "started_at": record.started_at or "",
        "duration_s": _num(record.duration_s),
        "schema_version": _num(record.schema_version),
        "seq_len": _num(getattr(record, "seq_len", None)),
        "task": getattr(record, "task", None) or "",
        "fidelity_metric": _get(fid, "metric") or "",
        "ttft_median_ms": _num(_get(_get(generation, "ttft_s"), "median"), 1e3),
        "tpot_median_ms": _num(_get(_get(generation, "tpot_s"), "median"), 1e3),
        "generation_tokens_per_s": _num(_get(generation, "tokens_per_s")),
        "compile_ms": _num(getattr(record, "compile_s", None), 1e3),
        "cold_start_ms": cold_start_ms(record),
        "compile_cache": _get(getattr(record, "compiled", None), "cache") or "",
    }


def cold_start_ms(record: ResultRecord) -> float:
    """From file to the first answer: load + compile (load: compile) + first inference; NaN if unmeasured.

    An aoti row's compile happened in the parent (artifact_prepare_s), as in a deployment that ships
    the package: it is not part of the cold start."""
    if record.load_s is None or record.first_inference_s is None:
        return math.nan
    return (record.load_s + (getattr(record, "compile_s", None) or 0.0) + record.first_inference_s) * 1e3


def summary_frame(runs: Sequence[RunFolder]) -> pd.DataFrame:
    """One row per scenario per run, in run order then suite order; with vs_fp32 and cliff."""
    rows = []
    for run in runs:
        for record in run.records:
            row = record_row(record)
            row["run_id"] = run.label  # unique even when two folders share a run id
            rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    return add_precision_ratios(frame)


INTEGER_COLUMNS = (
    "batch_size",
    "threads",
    "interop_threads",
    "rounds",
    "torch_num_threads",
    "torch_num_interop_threads",
    "schema_version",
    "fidelity_inputs",
    "fidelity_non_finite_outputs",
    "quantized_layers",
    "parameters",
    "seq_len",
    "given_parameters_requiring_grad",
)


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary as results.csv holds it: counts as integers (1, not 1.0), empty when unknown."""
    out = frame.copy()
    for column in INTEGER_COLUMNS:
        out[column] = pd.to_numeric(out[column], errors="coerce").round().astype("Int64")
    return out


def add_precision_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """vs_fp32: median latency / the fp32 row's of the same configuration; cliff: vs_fp32 > CLIFF_RATIO."""
    frame = frame.copy()
    key = frame[CONFIG_KEY].astype(str).agg("|".join, axis=1)
    reference = frame["precision"].eq(REFERENCE_PRECISION) & frame["latency_median_ms"].gt(0)
    fp32 = frame.loc[reference].assign(_key=key[reference]).drop_duplicates("_key", keep="last")
    by_key = dict(zip(fp32["_key"], fp32["latency_median_ms"], strict=True))
    base = key.map(by_key).astype(float)
    ratio = frame["latency_median_ms"] / base
    ratio[frame["precision"].eq(REFERENCE_PRECISION)] = math.nan
    frame["vs_fp32"] = ratio
    frame["cliff"] = ratio.gt(CLIFF_RATIO).fillna(False).astype(bool)
    return add_variant_ratios(frame)


def add_variant_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """vs_dense: a pruned variant's median latency / the dense row's of the same configuration and precision."""
    others = [c for c in CONFIG_KEY if c != "variant"] + ["precision"]
    key = frame[others].astype(str).agg("|".join, axis=1)
    reference = frame["variant"].eq(DENSE) & frame["latency_median_ms"].gt(0)
    dense = frame.loc[reference].assign(_key=key[reference]).drop_duplicates("_key", keep="last")
    base = key.map(dict(zip(dense["_key"], dense["latency_median_ms"], strict=True))).astype(float)
    ratio = frame["latency_median_ms"] / base
    ratio[frame["variant"].eq(DENSE)] = math.nan
    frame["vs_dense"] = ratio
    return frame


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = {"ok": 0, "unsupported": 0, "failed": 0}
    for status, n in frame["status"].value_counts().items() if not frame.empty else []:
        counts[str(status)] = int(n)
    return counts


def comparison_frame(frame: pd.DataFrame, run_labels: Sequence[str]) -> pd.DataFrame:
    """Median latency (ms) per scenario id across runs, and each run's ratio to the first run.

    Columns: scenario_id, then per run `<label>` (median ms, NaN when not ok) and, for every
    run after the first, `<label> / <first>`. A scenario missing from a run, or not ok in it,
    has NaN there; `status:<label>` says which.
    """
    labels = list(run_labels)
    ids: list[str] = []
    for sid in frame["scenario_id"]:
        if sid not in ids:
            ids.append(sid)
    out = pd.DataFrame({"scenario_id": ids})
    if not labels:
        return out
    latest = frame.drop_duplicates(["run_id", "scenario_id"], keep="last").set_index(["run_id", "scenario_id"])
    for label in labels:
        medians, statuses = [], []
        for sid in ids:
            if (label, sid) in latest.index:
                row = latest.loc[(label, sid)]
                statuses.append(str(row["status"]))
                medians.append(row["latency_median_ms"] if row["status"] == "ok" else math.nan)
            else:
                statuses.append("absent")
                medians.append(math.nan)
        out[label] = pd.Series(medians, dtype=float)
        out[f"status:{label}"] = statuses
    first = labels[0]
    for label in labels[1:]:
        out[f"{label} / {first}"] = out[label] / out[first]
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indexes of the points no other point beats on both axes (both minimised), by x."""
    order = sorted(
        (i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)),
        key=lambda i: (points[i][0], points[i][1]),
    )
    front: list[int] = []
    best_y = math.inf
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def format_value(value: Any, digits: str = "auto") -> str:
    """A table cell: '' for not measured; about three significant digits for numbers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if digits == "text" or isinstance(value, str):
        return str(value)
    number = float(value)
    if digits == "int":
        return f"{number:.0f}"
    if digits == "ratio":
        return f"{number:.2f}×"
    if digits == "cosine":  # 0.9998 must not round to 1
        return f"{number:.4f}"
    if digits == "percent":
        return f"{number * 100:.0f}"
    if digits == "error":
        return "0" if number == 0 else f"{number:.2e}"
    magnitude = abs(number)
    if magnitude == 0:
        return "0"
    if magnitude >= 1000:
        return f"{number:,.0f}"
    if magnitude >= 100:
        return f"{number:.1f}"
    if magnitude >= 10:
        return f"{number:.2f}"
    if magnitude >= 0.01:
        return f"{number:.3f}"
    if magnitude >= 0.001:
        return f"{number:.4f}"
    return f"{number:.2e}"


def cell_text(row: pd.Series, column: Column) -> str:
    """A summary cell as text: the number, or why a fidelity figure is missing."""
    value = row[column.key]
    if column.key.startswith("fidelity_") and pd.isna(value):
        non_finite = row.get("fidelity_non_finite_outputs")
        if non_finite is not None and not pd.isna(non_finite) and non_finite > 0:
            return "NaN/inf"
    return format_value(value, column.digits)


def row_notes(row: pd.Series) -> list[str]:
    """Short remarks on an ok row that its numbers alone do not say."""
    notes = []
    if row.get("contention") == "contended":
        notes.append(f"measured on a contended host: {row.get('contention_why')}")
    if row.get("rounds_limited_by_time"):
        notes.append("fewer rounds than min_rounds: max_time_s cut the steady state (very slow)")
    non_finite = row.get("fidelity_non_finite_outputs")
    if non_finite is not None and not pd.isna(non_finite) and non_finite > 0:
        notes.append(f"{int(non_finite)} NaN/inf output values: no fidelity figures")
    dependence = row.get("fidelity_input_dependence")
    if is_flat(dependence):  # NaN (not measured) is not below the floor
        notes.append(
            f"output barely depends on the input (its spread over the fidelity inputs is {dependence:.1%} of "
            "fp32's): cosine and top-1 say nothing"
        )
    given = [("in training mode" if row.get("given_training") is True else "")]
    grad = row.get("given_parameters_requiring_grad")
    if grad is not None and not pd.isna(grad) and grad > 0:
        given.append(f"with {int(grad)} parameter tensors requiring grad")
    if any(given):
        measured = f"{row.get('module_mode') or 'eval'}() with grad_mode {row.get('grad_mode') or 'inference_mode'}"
        notes.append(f"your model as given was {' '.join(g for g in given if g)}; measured in {measured}")
    return notes


def first_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- environment -------------------------------------------------------------------------------

KEY_ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")


def _bandwidth_text(bandwidth: Any) -> str:
    """environment.json's memory_bandwidth (bench.profile.roofline) in a line; '' for a run without one."""
    if not isinstance(bandwidth, dict):
        return ""
    if not bandwidth.get("gb_per_s"):
        return f"not measured: {bandwidth.get('note') or 'no figure'}"
    array_mib = (bandwidth.get("array_bytes") or 0) / MIB
    cached = ", cached" if bandwidth.get("cached") else ""
    return (
        f"STREAM copy {bandwidth.get('copy_gb_per_s') or 0:.1f} GB/s, triad {bandwidth.get('triad_gb_per_s') or 0:.1f} "
        f"GB/s ({bandwidth.get('threads')} threads, {array_mib:.0f} MiB arrays{cached})"
    )


def environment_rows(run: RunFolder) -> list[tuple[str, str]]:
    """(label, value) pairs summarising a run's machine and software."""
    env = run.environment if isinstance(run.environment, dict) else {}
    libraries = env.get("libraries") if isinstance(env.get("libraries"), dict) else {}
    torch_info = env.get("torch") if isinstance(env.get("torch"), dict) else {}
    git = env.get("git") if isinstance(env.get("git"), dict) else {}
    records = run.records
    fingerprint = env.get("fingerprint") or next(
        (r.environment_fingerprint for r in records if r.environment_fingerprint), None
    )
    sha = git.get("sha") or next((r.git_sha for r in records if r.git_sha), None)

    isa = env.get("isa") if isinstance(env.get("isa"), dict) else {}
    flags = set(env.get("cpu_flags") or []) if isinstance(env.get("cpu_flags"), list) else set()
    if isa or flags:

        def has(flag: str) -> bool:
            return bool(isa.get(flag)) or flag in flags

        present = [f for f in KEY_ISA if has(f)] + [f for f in sorted(isa) if isa.get(f) and f not in KEY_ISA]
        absent = [f for f in KEY_ISA if not has(f)]
        isa_text = (", ".join(present) or "none of the tracked ones") + (
            f" (absent: {', '.join(absent)})" if absent else ""
        )
    else:
        isa_text = ""

    def cores() -> str:
        parts = [
            f"{env[k]} {name}"
            for k, name in (
                ("logical_cores", "logical"),
                ("physical_cores", "physical"),
                ("usable_cores", "usable"),
            )
            if env.get(k) is not None
        ]
        return ", ".join(parts)

    memory = env.get("memory_total_bytes")
    capability, backend = torch_info.get("cpu_capability"), torch_info.get("parallel_backend")
    env_vars = env.get("env_vars") if isinstance(env.get("env_vars"), dict) else {}
    sha_text = str(sha) if sha else ""
    if sha_text and git.get("dirty"):
        sha_text += " (uncommitted changes)"
    started = run.info.get("started_at") or ""
    finished = run.info.get("finished_at") or ""
    rows = [
        ("run", run.label),
        ("suite", run.suite or ""),
        ("status", str(run.info.get("status") or "")),
        ("started / finished", f"{started} / {finished}" if started or finished else ""),
        ("CPU", str(env.get("cpu_model") or "")),
        ("instruction sets", isa_text),
        ("cores", cores()),
        ("memory", f"{memory / GIB:.1f} GiB" if isinstance(memory, int | float) else ""),
        ("memory bandwidth", _bandwidth_text(env.get("memory_bandwidth"))),
        (
            "torch",
            _join(
                libraries.get("torch"), capability and f"CPU capability {capability}", backend and f"{backend} backend"
            ),
        ),
        ("onnxruntime", str(libraries.get("onnxruntime") or ("not installed" if libraries else ""))),
        ("python", str(env.get("python") or "")),
        ("OS / kernel", _join(env.get("os"), None)),
        ("allocator", str(env.get("allocator") or "")),
        ("CPU governor", str(env.get("cpu_governor") or ("not exposed" if env else ""))),
        ("thread variables", ", ".join(f"{k}={v}" for k, v in env_vars.items())),
        ("fingerprint", str(fingerprint or "")),
        ("git sha", sha_text),
        ("folder", str(run.path)),
    ]
    return [(k, v) for k, v in rows if v]


def environment_columns(runs: Sequence[RunFolder]) -> list[tuple[str, dict[str, str]]]:
    """(heading, label -> value) per environment: one per run, or one per measuring host of a fleet run."""
    columns: list[tuple[str, dict[str, str]]] = []
    for number, run in enumerate(runs, start=1):
        prefix = f"run {number}" if len(runs) > 1 else ""
        if not run.host_environments:
            columns.append((prefix or "value", dict(environment_rows(run))))
            continue
        for fingerprint, environment in run.host_environments.items():
            records = [r for r in run.records if r.environment_fingerprint == fingerprint]
            groups = ", ".join(sorted({r.host_group for r in records if r.host_group}))
            hosts = ", ".join(sorted({r.fleet.host for r in records if r.fleet and r.fleet.host}))
            rows = {"host group": groups, "hosts": hosts, "rows measured": str(len(records))}
            rows.update(environment_rows(dataclasses.replace(run, environment=environment, records=records)))
            heading = " · ".join(p for p in (prefix, groups or hosts) if p)
            columns.append((heading, {k: v for k, v in rows.items() if v}))
    return columns


MODEL_SOURCE_HEADERS = ["model", "kind", "file", "size MiB", "sha256", "architecture"]


def model_source_rows(runs: Sequence[RunFolder]) -> list[list[str]]:
    """The user's own models the runs measured (a suite `model:` mapping), once per name and content."""
    seen: dict[tuple[str, str | None], list[str]] = {}
    for run in runs:
        for record in run.records:
            source = getattr(record, "model_source", None)
            if source is None:
                continue
            size = "" if source.bytes is None else f"{source.bytes / MIB:.1f}"
            row = [
                record.model,
                source.kind,
                source.path or "",
                size,
                (source.sha256 or "")[:16],
                source.architecture or "",
            ]
            seen.setdefault((record.model, source.sha256), row)
    return list(seen.values())


def _join(*parts: Any) -> str:
    return ", ".join(str(p) for p in parts if p)
