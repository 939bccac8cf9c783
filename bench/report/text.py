"""The report's text-model section: fidelity by task, and generation (TTFT, TPOT, tokens/s, memory).

Shown only when some row fed named inputs (a `seq_len`; bench.suite.inputs). The fidelity table
names each row's metric (bench.checks.fidelity.METRICS): mean-pooled cosine and nearest-neighbour
agreement for embeddings, top-1 and max logit error for classifiers, next-token top-1 and
KL for causal LMs. The generation table and figure appear for rows with `generate:`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

from bench.format.markdown import cell, table, unit_headers
from bench.report.blocks import figure_html, figure_markdown, section_table
from bench.report.data import run_tags, tagged_label
from bench.report.figures import STYLE, FigureResult, _save
from bench.results.record import GenerationFigures, ResultRecord
from bench.results.runfolder import RunFolder

FIGURE_PREFIX = "text_"
INTRO = (
    "Rows whose models take named inputs (token ids, masks) at a sequence length seq_len. Fidelity is "
    "measured against fp32 eager on the same inputs, the way the task reads the output: embeddings are "
    "mean-pooled over real tokens (padding masked out) and compared by cosine per sample and by whether "
    "each sample keeps its nearest neighbour; classifiers by top-1 agreement and the largest logit error; "
    "causal LMs by next-token top-1 agreement and the KL divergence of the next-token distribution at "
    "every real position."
)
GENERATION_INTRO = (
    "Greedy generation with the KV cache after the timed run, on the scenario's batch of prompts of seq_len "
    "tokens, the way the row's runtime generates (listed below the table). TTFT is the prefill and the first "
    "token, per round; TPOT is each later token, over every decoded step of every round. Tokens/s counts every "
    "prompt's new tokens over a whole generation (median round). Token agreement is the share of the generated "
    "tokens identical to fp32 eager's on the same prompts, position by position; first divergence the earliest "
    "new-token position (from 0) where any prompt's tokens differ. Compile is the first generation's time beyond "
    "a timed one (the decode step compiling). RSS growth is VmRSS after a call minus before it (the largest, "
    "warmup calls included); the KV cache is its tensors' bytes after the last token."
)
CAPTION = "Median time of each decoded step (2nd new token onwards) against its position after the prompt."
FIDELITY_HEADERS = [
    ("scenario", ""),
    ("task", ""),
    ("seq_len", "tokens"),
    ("samples", ""),
    ("cosine min", ""),
    ("cosine median", ""),
    ("nearest-neighbour agreement", ""),
    ("top-1 agreement", ""),
    ("KL mean", "nats"),
    ("max abs error", ""),
]
GENERATION_HEADERS = [
    ("scenario", ""),
    ("batch", ""),
    ("prompt", "tokens"),
    ("new", "tokens"),
    ("runtime", ""),
    ("TTFT median", "ms"),
    ("TTFT p99", "ms"),
    ("TPOT median", "ms"),
    ("TPOT p99", "ms"),
    ("tokens/s", ""),
    ("token agreement", ""),
    ("first divergence", "token"),
    ("compile", "s"),
    ("RSS growth", "MiB"),
    ("KV cache", "MiB"),
]

# the generation table's text columns (the rest are numbers): the scenario and the runtime
_GENERATION_TEXT = {0: "id", 4: "text"}
_GENERATION_SIDES = ["r" if _GENERATION_TEXT.get(i, "num") == "num" else "l" for i in range(len(GENERATION_HEADERS))]


@dataclass
class TextSection:
    rows: list[tuple[str, ResultRecord]] = field(default_factory=list)  # (run tag, ok record with a seq_len)
    figure: FigureResult | None = None
    notes: list[str] = field(default_factory=list)  # generation's
    fidelity_notes: list[str] = field(default_factory=list)

    @property
    def generated(self) -> list[tuple[str, ResultRecord]]:
        return [(tag, r) for tag, r in self.rows if r.generation is not None]


def build_text(runs: Sequence[RunFolder], fig_dir: Path) -> TextSection | None:
    tags = run_tags(runs)
    rows = [
        (tags[run.label], r)
        for run in runs
        for r in run.records
        if r.status == "ok" and getattr(r, "named_inputs", None)
    ]
    if not rows:
        return None
    section = TextSection(rows)
    generated = section.generated
    methods = dict.fromkeys(f"load {r.load}: {r.generation.method}" for _, r in generated if r.generation.method)
    notes = [f"{tagged_label(tag, r)}: {r.generation.note}" for tag, r in generated if r.generation.note]
    section.notes = [*methods, *notes]
    section.fidelity_notes = [f"{tagged_label(tag, r)}: {note}" for tag, r in rows for note in _fidelity_notes(r)]
    measured = [(tag, r) for tag, r in section.generated if r.generation.tpot_by_position_s]
    if measured:
        try:
            with matplotlib.rc_context(STYLE):
                section.figure = _draw(measured, fig_dir)
        except Exception as exc:  # a report with a figure missing beats no report
            section.figure = FigureResult("text_tpot", "Per-token latency by position", "", notes=[f"Not drawn: {exc}"])
    return section


def _draw(rows: list[tuple[str, ResultRecord]], fig_dir: Path) -> FigureResult:
    import matplotlib.pyplot as plt

    result = FigureResult("text_tpot", "Per-token latency by position", CAPTION)
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for tag, record in rows:
        steps = record.generation.tpot_by_position_s  # type: ignore[union-attr]
        ax.plot(range(2, len(steps) + 2), [s * 1e3 for s in steps], marker=".", label=tagged_label(tag, record))
    ax.set_xlabel("new token (position after the prompt)")
    ax.set_ylabel("median ms per step")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    result.files.append(_save(fig, fig_dir / f"{FIGURE_PREFIX}tpot_by_position.png"))
    return result


def _num(value: float | None, scale: float = 1.0, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value * scale)


def _fidelity_notes(record: ResultRecord) -> list[str]:
    """What the fidelity table's row leaves out: repeated samples, and why a figure is missing."""
    f = record.fidelity
    if f is None:
        return []
    notes = [f.note] if f.note else []
    if f.duplicate_inputs:
        total = f.duplicate_inputs + (f.inputs or 0)
        notes.insert(
            0,
            f"{f.duplicate_inputs} of {total} samples repeat an earlier one exactly and are left out; "
            f"its figures are on the {f.inputs} distinct ones",
        )
    return notes


def _fidelity_cells(tag: str, record: ResultRecord) -> list[str]:
    f = record.fidelity
    cosines = [_num(getattr(f, k, None) if f else None, fmt="{:.6f}") for k in ("cosine_min", "cosine_median")]
    return [
        tagged_label(tag, record),
        record.task or "-",
        str(record.seq_len or "-"),
        _num(f.inputs if f else None),
        *cosines,  # 6 decimals: what separates precisions is often in the fourth
        *(
            _num(getattr(f, k, None) if f else None)
            for k in ("nearest_neighbour_agreement", "top1_agreement", "kl_divergence_mean", "max_abs_error")
        ),
    ]


def _divergence(g: GenerationFigures) -> str:
    """The first divergence: a position, "none" when every token agreed, empty when not compared."""
    if g.token_agreement is None:
        return ""
    return "none" if g.first_divergence is None else str(g.first_divergence)


def _generation_cells(tag: str, record: ResultRecord) -> list[str]:
    g = record.generation
    assert g is not None
    mib = 1 / (1 << 20)
    return [
        tagged_label(tag, record),
        str(g.batch_size),
        str(g.prompt_tokens),
        str(g.new_tokens),
        record.runtime,
        _num(g.ttft_s.median if g.ttft_s else None, 1e3),
        _num(g.ttft_s.p99 if g.ttft_s else None, 1e3),
        _num(g.tpot_s.median if g.tpot_s else None, 1e3),
        _num(g.tpot_s.p99 if g.tpot_s else None, 1e3),
        _num(g.tokens_per_s, fmt="{:,.1f}"),
        _num(g.token_agreement, fmt="{:.3f}"),
        _divergence(g),
        _num(g.compile_s, fmt="{:.1f}"),
        _num(g.rss_growth_bytes, mib, "{:.2f}"),
        _num(g.kv_cache_bytes, mib, "{:.3f}"),
    ]


def _metrics(section: TextSection) -> list[str]:
    return list(dict.fromkeys(f"{r.task}: {r.fidelity.metric}" for _, r in section.rows if r.fidelity and r.task))


def text_html(section: TextSection | None) -> str:
    if section is None:
        return ""

    parts = [
        '<h2 id="text">Text models</h2>',
        f"<p>{html.escape(INTRO)}</p>",
        "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in _metrics(section)) + "</ul>",
        section_table(
            "text-fidelity-table",
            FIDELITY_HEADERS,
            (_fidelity_cells(*row) for row in section.rows),
            ["id", "text"] + ["num"] * (len(FIDELITY_HEADERS) - 2),
        ),
        *(f'<div class="note">{html.escape(note)}</div>' for note in section.fidelity_notes),
    ]
    if section.generated:
        parts += [
            '<h3 id="generation">Generation</h3>',
            f"<p>{html.escape(GENERATION_INTRO)}</p>",
            section_table(
                "generation-table",
                GENERATION_HEADERS,
                (_generation_cells(*row) for row in section.generated),
                [_GENERATION_TEXT.get(i, "num") for i in range(len(GENERATION_HEADERS))],
            ),
            *(f'<div class="note">{html.escape(note)}</div>' for note in section.notes),
        ]
    if section.figure is not None:
        parts.append(figure_html(section.figure))
    return "".join(parts)


def text_markdown(section: TextSection | None, out_dir: Path) -> str:
    if section is None:
        return ""

    out = ["## Text models\n", INTRO + "\n", *(f"- {cell(m)}" for m in _metrics(section)), ""]
    rows = [[cell(c) for c in _fidelity_cells(*row)] for row in section.rows]
    out.append(table(unit_headers(FIDELITY_HEADERS), rows, ["l", "l"] + ["r"] * (len(FIDELITY_HEADERS) - 2)) + "\n")
    if section.fidelity_notes:
        out += [*(f"- {cell(note)}" for note in section.fidelity_notes), ""]
    if section.generated:
        rows = [[cell(c) for c in _generation_cells(*row)] for row in section.generated]
        out += [
            "### Generation\n",
            GENERATION_INTRO + "\n",
            table(unit_headers(GENERATION_HEADERS), rows, _GENERATION_SIDES) + "\n",
            *(f"- {cell(note)}" for note in section.notes),
            "",
        ]
    if section.figure is not None:
        out += figure_markdown(section.figure, out_dir)
    return "\n".join(out)
