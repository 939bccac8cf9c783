"""The bandwidth roofline: STREAM byte counts, the cached bandwidth measurement, bytes per decode step
on a tiny GPT-2 against a hand count, the bound classification, the roofline figure, and a real
generation and profiled row through `bench run` recording the figures."""

from __future__ import annotations

import dataclasses
import json

import pytest
from support.demo_runs import DEMO, make_record
from support.text_models import gpt2_folder

from bench.checks import generation
from bench.measure import contract
from bench.profile import roofline
from bench.profile.profiler import roofline_figures
from bench.report.roofline import build_roofline, points_of, roofs
from bench.results.record import GenerationFigures, ProfileFigures
from bench.results.runfolder import load_run
from bench.results.stats import LatencyStats

MIB = 2**20


def test_stream_kernels_count_reads_and_writes():
    # copy: read b, write a; triad: read b and c, write a (STREAM's convention, no write-allocate)
    assert roofline.stream_bytes("copy", 256 * MIB) == 512 * MIB
    assert roofline.stream_bytes("triad", 256 * MIB) == 768 * MIB
    with pytest.raises(KeyError):
        roofline.stream_bytes("scale2", 1)


def test_arrays_are_four_last_level_caches_and_at_least_256_mib(tmp_path):
    assert roofline.array_bytes_for(None) == 256 * MIB
    assert roofline.array_bytes_for(32 * MIB) == 256 * MIB
    assert roofline.array_bytes_for(105 * MIB) == 420 * MIB
    for index, (level, size) in enumerate([(1, "32K"), (2, "1024K"), (3, "32768K"), (1, "48K")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        (folder / "level").write_text(f"{level}\n")
        (folder / "size").write_text(f"{size}\n")
    assert roofline.last_level_cache_bytes(tmp_path) == 32 * MIB
    assert roofline.last_level_cache_bytes(tmp_path / "missing") is None


@pytest.mark.slow
def test_bandwidth_is_measured_once_then_cached_and_never_raises(tmp_path):
    first = roofline.measure_bandwidth(1, cache_dir=tmp_path, fingerprint="fp", repetitions=2, array_bytes=8 * MIB)
    assert first.note is None and not first.cached
    assert first.gb_per_s == max(first.copy_gb_per_s, first.triad_gb_per_s) > 0
    assert (first.threads, first.array_bytes, first.repetitions) == (1, 8 * MIB, 2)
    again = roofline.measure_bandwidth(1, cache_dir=tmp_path, fingerprint="fp", repetitions=2, array_bytes=8 * MIB)
    assert again.cached and again.gb_per_s == first.gb_per_s
    assert again.bytes_per_s == pytest.approx(first.gb_per_s * 1e9)
    failed = roofline.measure_bandwidth(1, array_bytes=8 * MIB, timeout_s=0.001)
    assert failed.gb_per_s is None and failed.bytes_per_s is None and "failed" in failed.note


def test_floor_utilization_and_bound():
    assert roofline.floor_s(1_000_000, 1e9) == pytest.approx(1e-3)
    assert roofline.floor_s(None, 1e9) is None and roofline.floor_s(10, None) is None
    assert roofline.utilization(1e-3, 4e-3) == pytest.approx(0.25)
    assert roofline.utilization(1e-3, None) is None
    # ridge point: 100 GFLOP/s / 20 GB/s = 5 FLOP per byte
    assert roofline.bound(0.5, 100.0, 20e9) == "memory"
    assert roofline.bound(4.99, 100.0, 20e9) == "memory"
    assert roofline.bound(5.0, 100.0, 20e9) == "compute"
    assert roofline.bound(50.0, None, 20e9) is None
    figures = roofline_figures(2_000_000, 1_000_000, 100.0, 20e9)
    assert figures == {
        "bytes_per_call": 1_000_000,
        "arithmetic_intensity": 2.0,
        "memory_floor_s": pytest.approx(5e-5),
        "bound": "memory",
    }
    assert roofline_figures(None, 1_000_000, 100.0, 20e9)["bound"] is None


@pytest.mark.slow
def test_bytes_per_decode_step_of_a_tiny_gpt2_match_a_hand_count(tmp_path):
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(gpt2_folder(tmp_path / "gpt2")).eval()
    d, vocab, positions, layers = 32, 64, 64, 2
    per_layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    parameters = vocab * d + positions * d + layers * per_layer + 2 * d  # lm_head is wte: counted once
    assert generation.weight_bytes(model) == parameters * 4
    batch, prompt, new = 2, 12, 4
    ids = torch.randint(0, vocab, (batch, prompt), generator=torch.Generator().manual_seed(0))
    policy = generation.GeneratePolicy(new_tokens=new, rounds=1, warmup_rounds=0)
    prompt_ids = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    decoder = generation.Decoder("generate", generation.hf_decode(model, prompt_ids, new), module=model)
    with torch.inference_mode():
        figures = generation.measure(decoder, ids.tolist(), policy)
    kv_per_position = 2 * layers * batch * d * 4  # keys and values, every layer, the batch, fp32
    assert figures["kv_bytes_per_position"] == kv_per_position
    assert figures["bytes_per_decode_step"] == parameters * 4 + kv_per_position * (prompt + new // 2)
    # every Linear / Conv1D weight is one multiply-add per token: 2 FLOPs per weight, the token embeddings' not
    matmul_weights = layers * (3 * d * d + d * d + 4 * d * d + 4 * d * d) + vocab * d
    assert figures["flops_per_decode_step"] >= 2 * matmul_weights * batch
    built = contract.build(GenerationFigures, figures, "generation")  # as the worker sends it: every key a field
    assert built.bytes_per_decode_step == figures["bytes_per_decode_step"] and built.decode_floor_s is None


def _demo(extra: dict) -> object:
    spec = dataclasses.replace(DEMO[0], extra=extra)
    return make_record(spec)[0]


def test_the_roofline_figure_places_decode_steps_and_profiled_calls(tmp_path):
    tpot = LatencyStats.from_times([0.004, 0.005, 0.006])
    decode = GenerationFigures(
        prompt_tokens=8,
        new_tokens=4,
        batch_size=1,
        rounds=1,
        ttft_s=tpot,
        tpot_s=tpot,
        tokens_per_s=200.0,
        bytes_per_decode_step=40_000_000,
        flops_per_decode_step=20_000_000,
        decode_floor_s=0.002,
        bandwidth_utilization=0.4,
    )
    profiled = ProfileFigures(
        status="ok",
        flops=3_000_000_000,
        achieved_gflops=30.0,
        peak_gflops=100.0,
        bytes_per_call=10_000_000,
        arithmetic_intensity=300.0,
        memory_floor_s=0.0005,
        bound="compute",
    )
    rows = [_demo({"generation": decode}), _demo({"profile": profiled}), _demo({})]
    points = [pt for r in rows for pt in points_of("", r)]
    assert [pt.what for pt in points] == ["decode step", "call"]
    assert points[0].intensity == pytest.approx(0.5) and points[0].achieved_gflops == pytest.approx(4.0)
    assert points[0].bandwidth_gb_per_s == pytest.approx(20.0) and points[1].bandwidth_gb_per_s == pytest.approx(20.0)
    assert roofs(points) == [(pytest.approx(20.0), None), (pytest.approx(20.0), 100.0)]

    class Run:
        label, records, path, environment = "run", rows, tmp_path, {}

    section = build_roofline([Run()], tmp_path / "figures")
    assert section is not None and section.figure is not None and section.figure.notes == []
    (png,) = section.figure.files
    assert png.name == "roofline_roofline.png" and png.stat().st_size > 0
    Run.records = [_demo({})]
    assert build_roofline([Run()], tmp_path / "none") is None  # nothing to place: no section, no figure


@pytest.mark.slow
def test_a_real_generation_row_records_its_decode_floor(run_cli, write_suite, tmp_path):
    gpt2_folder(tmp_path / "gpt2")
    suite = write_suite(
        """
        name: roof
        defaults: {measure: {warmup_rounds: 1, min_rounds: 3, max_time_s: 0.05}, profile: true}
        matrix:
          model: [tiny_mlp]
        include:
          - {model: {name: lm, hf: gpt2, task: causal-lm}, seq_len: 8, generate: {new_tokens: 4}, profile: false}
        """
    )
    result = run_cli("run", str(suite), "--no-history")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.name.startswith(".")]
    environment = json.loads((run_dir / "environment.json").read_text())
    bandwidth = environment["memory_bandwidth"]
    assert bandwidth["gb_per_s"] > 0 and bandwidth["threads"] >= 1 and bandwidth["array_bytes"] >= 256 * MIB
    mlp, row = sorted(load_run(run_dir).records, key=lambda r: r.model != "tiny_mlp")
    g = row.generation
    assert g.weight_bytes > 0 and g.kv_bytes_per_position == 2 * 2 * 1 * 32 * 4
    assert g.bytes_per_decode_step == g.weight_bytes + g.kv_bytes_per_position * (8 + 4 // 2)
    assert g.decode_floor_s == pytest.approx(g.bytes_per_decode_step / (bandwidth["gb_per_s"] * 1e9))
    assert 0 < g.bandwidth_utilization <= 1
    assert g.bandwidth_utilization == pytest.approx(g.decode_floor_s / g.tpot_s.median)
    p = mlp.profile
    assert p.status == "ok" and p.bytes_per_call > 0 and p.flops > 0
    assert p.arithmetic_intensity == pytest.approx(p.flops / p.bytes_per_call)
    assert p.bound in ("memory", "compute") and p.memory_floor_s > 0
    assert row.timeline.bandwidth_s is not None
    report = run_cli("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    markdown = (run_dir / "report.md").read_text()
    assert "## Roofline" in markdown and "roofline_roofline.png" in markdown
    assert f"| memory bandwidth | STREAM copy {bandwidth['copy_gb_per_s']:.1f} GB/s" in markdown
    assert (run_dir / "figures" / "roofline_roofline.png").exists()
