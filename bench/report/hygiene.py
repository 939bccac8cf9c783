"""The report's "Inference hygiene" section: what forgetting no_grad / inference_mode or eval() cost.

Shown only when some row ran with a non-default `grad_mode` or `module_mode` (bench.checks.hygiene).
Each such row is set against the default row (eval() under inference_mode) of the same model,
batch, threads, precision, load mode, shape and variant: latency, the kernel's peak RSS during the
timed calls, what autograd saved per call, and fidelity against the default outputs. One
sentence per model sums it up at its largest batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.format.units import MIB
from bench.report.tables import first_line
from bench.results.record import ResultRecord
from bench.results.runfolder import RunFolder

DEFAULT_MODES = ("inference_mode", "eval")
INTRO = (
    "The default rows call the model the right way: eval() under torch.inference_mode(). The other rows forget "
    "something: grad_mode no_grad uses torch.no_grad() instead; enabled calls the model plainly, so autograd "
    "records a graph and keeps the tensors it saves for backward alive until the output is dropped; module_mode "
    "train forgets eval() (Dropout active, BatchNorm normalising with each batch's own statistics). Each row is "
    "compared with the default row of the same model, batch, threads, precision and load mode. Peak RSS is the "
    "kernel's high-water mark during the timed calls. Fidelity compares the row's outputs on the fidelity inputs "
    "with the same loaded model's in eval() under inference_mode; 'repeat' says whether two calls on the same "
    "inputs gave identical outputs."
)
HEADERS = [
    ("scenario", ""),
    ("grad mode", ""),
    ("module mode", ""),
    ("median", "ms"),
    ("latency vs default", "%"),
    ("peak RSS, timed calls", "MiB"),
    ("vs default", "MiB"),
    ("autograd saved", "MiB / call"),
    ("top-1 agree vs default", "%"),
    ("cosine vs default", ""),
    ("outputs repeat", ""),
    ("status", ""),
]
TEXT_COLUMNS = (0, 1, 2, 10, 11)  # the rest are numbers


@dataclass
class HygieneSection:
    rows: list[list[str]] = field(default_factory=list)  # cells, as HEADERS
    sentences: list[str] = field(default_factory=list)  # one per model (per run)


def _key(record: ResultRecord) -> tuple:
    """The configuration a row is compared within: everything but the two modes."""
    return (
        record.model,
        record.batch_size,
        record.threads,
        record.interop_threads,
        record.precision,
        record.load,
        tuple(record.input_shape),
        record.variant,
        record.host_group,
    )


def _modes(record: ResultRecord) -> tuple[str, str]:
    return (record.grad_mode, record.module_mode)


def _median_s(record: ResultRecord | None) -> float | None:
    if record is None or record.status != "ok" or record.latency_s is None:
        return None
    return record.latency_s.median


def _peak_bytes(record: ResultRecord | None) -> int | None:
    """VmHWM during the timed calls (reset at their start); the sampled peak where the kernel gave none."""
    if record is None or record.status != "ok":
        return None
    return record.peak_rss_kernel_phase_bytes.steady or record.rss_bytes.peak


def _percent_change(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else (value / base - 1) * 100


def _fmt(value: float | None, spec: str, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, ("+" if signed else "") + spec)


def _cells(tag: str, record: ResultRecord, default: ResultRecord | None) -> list[str]:
    hygiene = record.hygiene
    vs = hygiene.vs_default if hygiene else None
    if record is default:  # the reference itself: nothing to set it against
        default = None
    median, base = _median_s(record), _median_s(default)
    peak, base_peak = _peak_bytes(record), _peak_bytes(default)
    saved = hygiene.autograd_saved_bytes if hygiene else None
    repeat = hygiene.outputs_repeat if hygiene else None
    return [
        record.scenario_id + (f" ({tag})" if tag else ""),
        record.grad_mode,
        record.module_mode,
        _fmt(median * 1e3 if median else None, ".3g"),
        _fmt(_percent_change(median, base), ".0f", signed=True),
        _fmt(peak / MIB if peak else None, ".1f"),
        _fmt((peak - base_peak) / MIB if peak and base_peak else None, ".1f", signed=True),
        _fmt(saved / MIB if saved is not None else None, ".2f"),
        _fmt(vs.top1_agreement * 100 if vs and vs.top1_agreement is not None else None, ".0f"),
        _fmt(vs.cosine_similarity if vs else None, ".4f"),
        "-" if repeat is None else ("yes" if repeat else "no"),
        record.status if record.status == "ok" else f"{record.status}: {first_line(record.reason, 120)}",
    ]


def _find(rows: list[ResultRecord], grad_mode: str, module_mode: str) -> ResultRecord | None:
    return next((r for r in rows if _modes(r) == (grad_mode, module_mode) and r.status == "ok"), None)


def _sentence(model: str, groups: list[tuple[tuple, ResultRecord | None, list[ResultRecord]]]) -> str | None:
    """One line for a model, from its largest batch that has a default row and a measured forgetful one."""
    usable = [(k, d, rows) for k, d, rows in groups if d is not None and d.status == "ok"]
    if not usable:
        return None
    key, default, rows = max(usable, key=lambda item: item[0][1])
    batch = key[1]
    parts: list[str] = []
    enabled = _find(rows, "enabled", "eval")
    if enabled is not None:
        peak, base_peak = _peak_bytes(enabled), _peak_bytes(default)
        delta = _fmt((peak - base_peak) / MIB if peak and base_peak else None, ".1f", signed=True)
        latency = _fmt(_percent_change(_median_s(enabled), _median_s(default)), ".0f", signed=True)
        saved = enabled.hygiene.autograd_saved_bytes if enabled.hygiene else None
        held = f" (autograd holds {saved / MIB:.1f} MiB per call)" if saved is not None else ""
        parts.append(f"forgetting no_grad costs {delta} MiB peak RSS at batch {batch}{held}, latency {latency}%")
    no_grad = _find(rows, "no_grad", "eval")
    if no_grad is not None:
        latency = _fmt(_percent_change(_median_s(no_grad), _median_s(default)), ".0f", signed=True)
        parts.append(f"no_grad instead of inference_mode: latency {latency}%")
    train = _find(rows, "inference_mode", "train")
    if train is not None and train.hygiene and train.hygiene.vs_default:
        vs = train.hygiene.vs_default
        if vs.max_abs_error == 0:
            parts.append("forgetting eval() leaves the outputs identical (no Dropout or BatchNorm behaviour changes)")
        elif vs.top1_agreement is not None and vs.inputs:
            changed = round((1 - vs.top1_agreement) * vs.inputs)
            error = f"max abs error {vs.max_abs_error:.3g}"
            if changed:
                parts.append(f"forgetting eval() changes top-1 on {changed} of {vs.inputs} inputs ({error})")
            else:
                parts.append(f"forgetting eval() moves the outputs ({error}); top-1 holds on all {vs.inputs} inputs")
        if train.hygiene.outputs_repeat is False:
            parts.append("in training mode two calls on the same inputs disagree (Dropout)")
        after = train.hygiene.eval_after_train_vs_default
        if after is not None and after.max_abs_error:
            parts.append(
                f"and eval() afterwards still differs (max abs error {after.max_abs_error:.3g}): "
                "the train-mode calls moved BatchNorm's running statistics"
            )
    if not parts:
        return None
    text = "; ".join(parts)
    return f"{model}: {text[0].upper()}{text[1:]}."


def build_hygiene(runs: Sequence[RunFolder]) -> HygieneSection | None:
    """The section's rows and sentences, or None when no row ran in a non-default mode."""
    section = HygieneSection()
    for index, run in enumerate(runs, start=1):
        tag = "" if len(runs) == 1 else f"run {index}"
        groups: dict[tuple, list[ResultRecord]] = {}
        for record in run.records:
            groups.setdefault(_key(record), []).append(record)
        by_model: dict[str, list[tuple[tuple, ResultRecord | None, list[ResultRecord]]]] = {}
        for key, rows in groups.items():
            if all(_modes(r) == DEFAULT_MODES for r in rows):
                continue
            default = next((r for r in rows if _modes(r) == DEFAULT_MODES), None)
            section.rows += [_cells(tag, r, default) for r in rows]
            by_model.setdefault(key[0], []).append((key, default, rows))
        for model, model_groups in by_model.items():
            sentence = _sentence(model, model_groups)
            if sentence:
                section.sentences.append(sentence + (f" ({tag})" if tag else ""))
    return section if section.rows else None
