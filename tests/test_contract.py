"""The typed messages between bench's processes (bench.measure.contract): a field renamed on one side fails
the read, never arrives as a null."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.capacity.instance import COMMANDS, REPLIES, Batching, Ready, Serve
from bench.checks.contention import Contention
from bench.measure import contract
from bench.measure.worker import SelfcheckBlock, WorkerFacts
from bench.profile.profiler import ProfileSummary, TopOp
from bench.results.record import CompiledRuntime, Fidelity, HygieneFigures
from bench.results.stats import LatencyStats


def _full_facts() -> WorkerFacts:
    contention = Contention("quiet", "idle", 2, 1, 1.0, 0.0, 0.0, 1.0, 0.01, 1.0)
    return WorkerFacts(
        status="ok",
        phase="done",
        load_s=0.5,
        first_inference_s=0.01,
        compiled=CompiledRuntime(compiler="inductor", cache="cold", graphs=1),
        hygiene=HygieneFigures(outputs_repeat=True, vs_default=Fidelity(0.0, 1.0, 1.0, inputs=4)),
        kernel_peaks_bytes={"load": 1 << 20, "steady": None},
        round_starts_s=[1.0, 2.0],
        contention=contention,
        selfcheck_blocks=[SelfcheckBlock(0, 0.001, [1.0], contention)],
    )


def test_worker_facts_cross_the_boundary_whole_nested_dataclasses_included():
    facts = _full_facts()
    assert contract.decode(WorkerFacts, json.loads(contract.encode(facts))) == facts


def test_a_field_renamed_on_one_side_fails_the_read_naming_both_names():
    data = json.loads(contract.encode(WorkerFacts(load_s=0.5)))
    data["load_time_s"] = data.pop("load_s")  # the worker writes a new name, the parent expects the old
    with pytest.raises(contract.ContractError, match="unknown field.*load_time_s"):
        contract.decode(WorkerFacts, data, "worker.json")
    del data["load_time_s"]
    with pytest.raises(contract.ContractError, match="missing field.*load_s"):
        contract.decode(WorkerFacts, data, "worker.json")


def test_a_nested_field_of_the_wrong_type_is_named_by_its_path():
    data = json.loads(contract.encode(_full_facts()))
    data["hygiene"]["vs_default"]["cosine_similarity"] = "high"
    with pytest.raises(contract.ContractError, match=r"worker.json.hygiene.vs_default.cosine_similarity: expected"):
        contract.decode(WorkerFacts, data, "worker.json")
    data = json.loads(contract.encode(_full_facts()))
    data["kernel_peaks_bytes"]["load"] = True  # a bool is no byte count
    with pytest.raises(contract.ContractError, match="kernel_peaks_bytes.load"):
        contract.decode(WorkerFacts, data, "worker.json")


def test_build_takes_a_librarys_dict_with_defaults_left_out_but_no_unknown_key():
    stats = dataclasses.asdict(LatencyStats.from_times([0.1, 0.2, 0.3]))
    assert contract.build(LatencyStats, stats) == LatencyStats.from_times([0.1, 0.2, 0.3])
    assert (
        contract.build(Fidelity, {"max_abs_error": 0.0, "cosine_similarity": 1.0, "top1_agreement": 1.0}).inputs is None
    )
    with pytest.raises(contract.ContractError, match="unknown field.*cosine"):
        contract.build(Fidelity, {"max_abs_error": 0.0, "cosine": 1.0, "top1_agreement": 1.0})
    with pytest.raises(contract.ContractError, match="missing field.*top1_agreement"):
        contract.build(Fidelity, {"max_abs_error": 0.0, "cosine_similarity": 1.0})


def test_load_facts_without_a_worker_field_fail_in_the_worker():
    facts = WorkerFacts()
    facts.take_load_facts({"compiled": {"compiler": "inductor"}, "fixed_batch": 4}, compile_cache="warm")
    assert facts.compiled == CompiledRuntime(compiler="inductor", cache="warm")
    assert facts.fixed_batch == 4
    with pytest.raises(contract.ContractError, match="no WorkerFacts field for session_options"):
        facts.take_load_facts({"session_options": {}}, compile_cache=None)


def test_instance_commands_and_replies_are_read_as_the_class_they_name():
    serve = Serve(requests=8, mixed=False, path="/dev/shm/step", batching=Batching(4, 0.002))
    assert contract.decode_line(contract.encode_line(serve), COMMANDS) == serve
    ready = Ready(load_s=0.1, torch_num_threads=1, affinity=[0])
    assert contract.decode_line(contract.encode_line(ready), REPLIES) == ready
    with pytest.raises(contract.ContractError, match="unknown message 'Ready'"):
        contract.decode_line(contract.encode_line(ready), COMMANDS, "instance 0 command")
    line = contract.encode_line(ready).replace(b'"affinity"', b'"cores"')
    with pytest.raises(contract.ContractError, match="instance 0 reply Ready: unknown field.*cores"):
        contract.decode_line(line, REPLIES, "instance 0 reply")


def test_a_profile_summary_crosses_the_boundary_and_figures_without_a_field_fail_in_the_child():
    summary = ProfileSummary(pid=1, started_monotonic_s=2.0, status="ok", iterations=3)
    summary.add(
        {
            "top_ops": [
                {
                    "op": "aten::mm",
                    "calls_per_iter": 1.0,
                    "self_cpu_per_iter_s": 1e-4,
                    "self_cpu_pct": 90.0,
                    "input_shapes": "[[1, 64]]",
                }
            ]
        }
    )
    assert summary.top_ops == [TopOp("aten::mm", 1.0, 1e-4, 90.0, "[[1, 64]]")]
    assert contract.decode(ProfileSummary, json.loads(contract.encode(summary))) == summary
    with pytest.raises(contract.ContractError, match="unknown field.*self_time_ratio"):
        summary.add({"self_time_ratio": 1.0})
