"""Model sources: suite entries for the user's own models, reading their files, and every bad input.

Fast, in one process: the loading functions are called directly. tests/test_sources_e2e.py
runs the same sources through the real `bench run`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from support.model_files import save_as_if_on_cuda, tflite_linear
from torch import nn

from bench import runtimes
from bench.errors import SuiteError
from bench.measure import contract
from bench.measure.worker import WorkerSpec
from bench.models import catalog as models
from bench.models import sources
from bench.models.sources import ModelSource, SourceError
from bench.runtimes import litert
from bench.suite.scenarios import MeasurePolicy, Scenario, parse_suite

HAS_LITERT = sources.spec_available("ai_edge_litert")
FACTORY_MODULE = "bench_test_user_models"  # one module name for the whole test session
FACTORIES = """
import torch
from torch import nn

def mlp(width=32):
    return nn.Sequential(nn.Linear(16, width), nn.ReLU(), nn.Linear(width, 4))

def not_a_module():
    return "a string"

def raises():
    raise RuntimeError("no weights here")
"""


class Pickled:
    """A class a checkpoint may pickle alongside its weights (e.g. a config object)."""

    def __init__(self) -> None:
        self.lr = 0.1


@pytest.fixture(scope="module")
def factory_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("factories")
    (folder / f"{FACTORY_MODULE}.py").write_text(FACTORIES, encoding="utf-8")
    (folder / "bench_test_broken_module.py").write_text("import no_such_dependency_here\n", encoding="utf-8")
    return folder


def _parse(text: str, folder: Path) -> list[Scenario]:
    (folder / "suite.yaml").write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return list(parse_suite((folder / "suite.yaml").read_text(), str(folder / "suite.yaml")).scenarios)


def _parse_error(text: str, folder: Path) -> SuiteError:
    with pytest.raises(SuiteError) as info:
        _parse(text, folder)
    return info.value


def _source(path: Path | None = None, **changes) -> ModelSource:
    values = dict(name="mine", kind="checkpoint", input_shape=(64,), path=str(path), architecture="tiny_mlp")
    values.update(changes)
    return ModelSource(**values)


def _scenario(source: ModelSource | None, **changes) -> Scenario:
    values = dict(
        model=source.name if source else "tiny_mlp",
        batch_size=1,
        threads=1,
        interop_threads=1,
        precision="fp32",
        load=source.native_load if source and source.compiled else "eager",
        input_shape=source.input_shape if source else (64,),
        measure=MeasurePolicy(),
        source=source,
    )
    values.update(changes)
    return Scenario(**values)


def _tiny_mlp_state(seed: int = 3) -> dict[str, torch.Tensor]:
    return models.build_model("tiny_mlp", seed).state_dict()


# ---------------------------------------------------------------- suite entries


def test_model_sources_in_a_suite_give_readable_ids_and_absolute_paths(tmp_path):
    torch.save(_tiny_mlp_state(), tmp_path / "weights.pth")
    (tmp_path / "m.onnx").write_bytes(b"not parsed while validating")
    # A factory's module next to the suite is found there (the suite's folder is on the import path).
    (tmp_path / "bench_test_suite_folder_models.py").write_text(FACTORIES, encoding="utf-8")
    scenarios = _parse(
        """
        name: mine
        matrix:
          - model:
              - tiny_mlp
              - {name: ckpt, checkpoint: weights.pth, architecture: tiny_mlp}
              - {name: fac, factory: "bench_test_suite_folder_models:mlp", kwargs: {width: 8}, input_shape: [16]}
            precision: [fp32, int8_dynamic]
          - model:
              - {name: half, onnx: m.onnx, input_shape: [16], saved_precision: fp16}
        exclude:
          - {model: ckpt, precision: int8_dynamic}
        include:
          - {model: ckpt, input_shape: [64], batch_size: 4}
        """,
        tmp_path,
    )
    assert [s.id for s in scenarios] == [
        "tiny_mlp-b1-t1-fp32-eager",
        "tiny_mlp-b1-t1-int8_dynamic-eager",
        "ckpt-b1-t1-fp32-eager",
        "fac-b1-t1-fp32-eager",
        "fac-b1-t1-int8_dynamic-eager",
        "half-b1-t1-fp16-onnxruntime",  # a compiled file runs as saved: its load and precision by default
        "ckpt-b4-t1-fp32-eager",  # the name alone reuses the source defined above
    ]
    ckpt, fac = scenarios[2].source, scenarios[3].source
    assert ckpt.path == str(tmp_path / "weights.pth") and ckpt.input_shape == (64,)  # the architecture's
    assert fac.kind == "factory" and fac.kwargs == {"width": 8} and fac.search_path == str(tmp_path)
    assert isinstance(sources.build_module(fac.name, fac), nn.Sequential)
    assert scenarios[6].source == ckpt
    for scenario in scenarios:  # what the worker gets: the scenario as JSON
        assert Scenario.from_dict(json.loads(json.dumps(scenario.to_dict()))) == scenario


def test_relative_paths_start_at_the_given_base_dir(tmp_path):
    """`bench run --resume` parses the suite's copy in the run folder against the original folder."""
    torch.save(_tiny_mlp_state(), tmp_path / "w.pth")
    text = "name: s\nmatrix:\n  model: [{name: m, checkpoint: w.pth, architecture: tiny_mlp}]\n"
    (scenario,) = parse_suite(text, "elsewhere/suite.yaml", base_dir=tmp_path).scenarios
    assert scenario.source.path == str(tmp_path / "w.pth")


@pytest.mark.parametrize(
    ("entry", "field", "fragments"),
    [
        ("{name: m, checkpoint: nowhere.pth, architecture: tiny_mlp}", "checkpoint", ["nowhere.pth", "no such file"]),
        ("{name: m, checkpoint: empty.pth, architecture: tiny_mlp}", "checkpoint", ["empty.pth", "is empty (0 bytes)"]),
        (
            "{name: m, checkpoint: w.pth, architecture: tiny_mlp, sha256: " + "ab" * 32 + "}",
            "sha256",
            ["w.pth", "sha256 is ", "not " + "ab" * 32, "the file has changed"],
        ),
        (
            "{name: m, factory: 'bench_test_no_such_module:build', input_shape: [4]}",
            "factory",
            ["cannot import module 'bench_test_no_such_module'", "ModuleNotFoundError"],
        ),
        (
            "{name: m, factory: 'bench_test_broken_module:build', input_shape: [4]}",
            "factory",
            ["cannot import module 'bench_test_broken_module'", "no_such_dependency_here"],
        ),
        (f"{{name: m, factory: '{FACTORY_MODULE}:nope', input_shape: [4]}}", "factory", ["has no 'nope'"]),
        ("{name: m, factory: 'not a factory', input_shape: [4]}", "factory", ["expected 'package.module:function'"]),
        ("{name: m, checkpoint: w.pth, architecture: resnet81}", "architecture", ["Did you mean resnet18"]),
        ("{name: m, checkpoint: w.pth}", "architecture", ["needs an architecture"]),
        ("{name: resnet18, checkpoint: w.pth, architecture: resnet18}", "name", ["already a built-in or torchvision"]),
        ("{name: my-model, checkpoint: w.pth, architecture: tiny_mlp}", "name", ["letters, digits"]),
        (
            "{name: m, checkpoint: w.pth, onnx: w.pth, architecture: tiny_mlp}",
            None,
            ["exactly one of", "checkpoint, onnx"],
        ),
        (
            "{name: m, onnx: w.pth, architecture: tiny_mlp, input_shape: [4]}",
            "architecture",
            ["does not apply to onnx sources"],
        ),
        ("{name: m, onnx: w.pth, trust_pickle: true, input_shape: [4]}", "trust_pickle", ["does not apply"]),
        # a key that does not apply is refused at its usual value too
        ("{name: m, onnx: w.pth, kwargs: {}, input_shape: [4]}", "kwargs", ["does not apply to onnx sources"]),
        ("{name: m, hf: folder, input_shape: [4]}", "input_shape", ["does not apply to hf sources"]),
        ("{checkpoint: w.pth, architecture: tiny_mlp}", None, ["has no 'name'", "letters, digits"]),
        ("{name: m, aoti: w.pth, input_shape: [4]}", "trust_code", ["is not set", "native code"]),
        ("{name: m, torchscript: w.pth}", None, ["needs input_shape"]),
        ("{name: m, checkpoint: w.pth, architecture: tiny_mlp, sha256: abc}", "sha256", ["64 hexadecimal digits"]),
        ("{name: m, checkpoint: w.pth, architecture: tiny_mlp, kwargs: {a: 1}}", "kwargs", ["takes no kwargs"]),
        (
            "{name: m, checkpoint: w.pth, architecture: resnet18, kwargs: {when: 2020-01-01}}",
            "kwargs",
            ["values must be numbers"],
        ),
        (
            "{name: m, checkpoint: w.pth, architecture: tiny_mlp, trust_pickel: true}",
            "trust_pickel",
            ["did you mean 'trust_pickle'"],
        ),
    ],
)
def test_bad_model_entries_are_refused_before_anything_runs(tmp_path, factory_dir, entry, field, fragments):
    """Missing, empty or changed files and factories that do not import: the suite is refused, with
    file, line and field, by `bench validate` as by `bench run` (nothing runs on a suite that cannot)."""
    torch.save(_tiny_mlp_state(), tmp_path / "w.pth")
    (tmp_path / "empty.pth").touch()
    sys.path.append(str(factory_dir))  # as if installed: the broken module is found, then fails
    try:
        err = _parse_error(f"name: s\nmatrix:\n  model:\n    - tiny_mlp\n    - {entry}\n", tmp_path)
    finally:
        sys.path.remove(str(factory_dir))
    assert err.line == 5
    assert err.field == "matrix.model.1" + (f".{field}" if field else "")
    for fragment in fragments:
        assert fragment in err.message


def test_a_name_means_one_source_in_a_suite(tmp_path):
    torch.save(_tiny_mlp_state(), tmp_path / "a.pth")
    shutil.copy(tmp_path / "a.pth", tmp_path / "b.pth")
    err = _parse_error(
        """
        name: s
        matrix:
          model:
            - {name: m, checkpoint: a.pth, architecture: tiny_mlp}
            - {name: m, checkpoint: b.pth, architecture: tiny_mlp}
        """,
        tmp_path,
    )
    assert err.field == "matrix.model.1.name" and "names a different model source" in err.message


def test_the_sha256_given_is_checked_and_accepted(tmp_path):
    torch.save(_tiny_mlp_state(), tmp_path / "w.pth")
    digest = hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    entry = f"{{name: m, checkpoint: w.pth, architecture: tiny_mlp, sha256: {digest.upper()}}}"
    text = f"name: s\nmatrix:\n  model: [{entry}]\n"
    (scenario,) = _parse(text, tmp_path)
    assert sources.check_file(scenario.source).sha256 == digest


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"epoch": 7, "state_dict": s, "optimizer": {"lr": 0.1}},
        lambda s: {"model": s, "step": 100},
        lambda s: {f"module.{k}": v for k, v in s.items()},  # DataParallel
        lambda s: {"state_dict": {f"_orig_mod.{k}": v for k, v in s.items()}},  # torch.compile
    ],
    ids=["bare", "state_dict-key", "model-key", "module-prefix", "compile-prefix"],
)
def test_checkpoint_layouts_people_save_all_load(tmp_path, wrap):
    state = _tiny_mlp_state()
    torch.save(wrap(state), tmp_path / "w.pth")
    module = sources.build_module("mine", _source(tmp_path / "w.pth"))
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path):
    state = _tiny_mlp_state()
    save_as_if_on_cuda({"state_dict": state}, tmp_path / "cuda.pth")
    if not torch.cuda.is_available():  # the file really names CUDA storages: a plain load fails here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "cuda.pth", weights_only=True)
    loaded = sources.read_weights(_source(tmp_path / "cuda.pth"))
    assert {v.device.type for v in loaded.values()} == {"cpu"}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_truncated_random_and_missing_checkpoints_are_named_errors(tmp_path):
    torch.save(_tiny_mlp_state(), tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    for name, fragment in (("truncated", "not a readable PyTorch checkpoint"), ("random", "Unsupported operand")):
        with pytest.raises(SourceError) as info:
            sources.read_weights(_source(tmp_path / f"{name}.pth"))
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}.pth (checkpoint of model 'mine'): ")
        assert fragment in message
        # random bytes are not a reason to unpickle: neither bench nor torch's advice says so
        assert "trust_pickle" not in message and "weights_only=False" not in message and "succeed" not in message
        if name == "truncated":
            assert "central directory" in message
        else:
            assert "is not a PyTorch checkpoint" in message
    with pytest.raises(SourceError, match="no such file"):
        sources.read_weights(_source(tmp_path / "gone.pth"))


def test_a_pickle_that_needs_weights_only_false_is_refused_unless_trusted(tmp_path):
    state = _tiny_mlp_state()
    torch.save({"state_dict": state, "config": Pickled()}, tmp_path / "pickled.pth")
    with pytest.raises(SourceError) as info:
        sources.read_weights(_source(tmp_path / "pickled.pth"))
    message = str(info.value)
    assert info.value.field == "trust_pickle"
    assert "Pickled" in message and "trust_pickle: true" in message and "arbitrary" not in message
    assert "runs whatever code the file names" in message  # the risk, said plainly
    assert "would run the code" in message
    trusted = sources.read_weights(_source(tmp_path / "pickled.pth", trust_pickle=True))
    assert all(torch.equal(trusted[k], v) for k, v in state.items())
    # A whole pickled module, trusted, gives its state_dict.
    torch.save(models.build_model("tiny_mlp", 3), tmp_path / "module.pth")
    whole = sources.read_weights(_source(tmp_path / "module.pth", trust_pickle=True))
    assert all(torch.equal(whole[k], v) for k, v in state.items())


class _CallsSystem:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_call_os_system_names_the_global_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"state_dict": _tiny_mlp_state(), "payload": _CallsSystem(marker)}, tmp_path / "evil.pth")
    with pytest.raises(SourceError) as info:
        sources.read_weights(_source(tmp_path / "evil.pth"))
    message = str(info.value)
    assert info.value.field == "trust_pickle"
    assert f"{os.system.__module__}.system" in message  # posix.system: the refused global, by name
    assert "would run the code" in message and "trust_pickle: true" in message
    assert "runs whatever code the file names" in message and "likely succeed" not in message
    assert not marker.exists()


def test_a_checkpoint_for_another_architecture_lists_every_difference(tmp_path):
    state = _tiny_mlp_state()
    state["4.weight"] = torch.zeros(5, 256)  # a head for 5 classes, not 10
    state["extra.bias"] = torch.zeros(3)
    del state["0.bias"]
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(SourceError) as info:
        sources.build_module("mine", _source(tmp_path / "other.pth"))
    message = str(info.value)
    assert info.value.field == "architecture"
    assert "does not match architecture 'tiny_mlp'" in message
    assert "missing keys [0.bias]" in message
    assert "unexpected keys [extra.bias]" in message
    assert "shape mismatches [4.weight (file [5, 256], model [10, 256])]" in message


def test_a_checkpoint_without_num_batches_tracked_loads_as_torch_loads_it(tmp_path):
    state = {
        k: v for k, v in models.build_model("resnet18", 3).state_dict().items() if not k.endswith("num_batches_tracked")
    }
    torch.save(state, tmp_path / "old.pth")
    source = _source(tmp_path / "old.pth", architecture="resnet18", input_shape=(3, 32, 32))
    module = sources.build_module("mine", source)
    assert torch.equal(module.conv1.weight, state["conv1.weight"]) and not module.training


@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")  # TorchScript's deprecation, as in bench's own use
def test_a_torchscript_file_saved_in_train_mode_runs_in_eval_mode(tmp_path):
    scripted = torch.jit.script(nn.Sequential(nn.Linear(64, 8), nn.BatchNorm1d(8), nn.Dropout(0.5)))
    assert scripted.training
    scripted.save(str(tmp_path / "train.pt"))
    source = _source(tmp_path / "train.pt", kind="torchscript", architecture=None)
    infer, _ = runtimes.load_model(_scenario(source), tmp_path / "train.pt")
    x = torch.randn(1, 64)  # batch 1: BatchNorm in train mode would refuse it
    with torch.inference_mode():
        assert torch.equal(infer(x), infer(x))  # no dropout
    assert not infer.training


def test_onnx_artifacts_are_keyed_by_input_shape(tmp_path):
    small, large = (
        _scenario(None, model="tiny_cnn", load="onnxruntime", input_shape=shape) for shape in ((3, 32, 32), (3, 48, 48))
    )
    first = runtimes.prepare_artifact(small, tmp_path / "cache")
    second = runtimes.prepare_artifact(large, tmp_path / "cache")
    assert not second.cached and second.path != first.path
    infer, _ = runtimes.load_model(large, second.path)
    assert infer(models.make_input((3, 48, 48), 1).numpy()).shape == (1, 10)


class _RunsCode:
    """A pickle payload that writes a marker file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def _rewrite_pt2(path: Path, change) -> None:
    """Rewrite a .pt2 archive's members: `change(relative_name, bytes)` gives the new bytes, or a dict
    of members to add."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    root = next(iter(members)).split("/", 1)[0]
    out = {}
    for name, data in members.items():
        result = change(name.split("/", 1)[1], data)
        out.update({f"{root}/{k}": v for k, v in result.items()} if isinstance(result, dict) else {name: result})
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in out.items():
            archive.writestr(name, data)


def test_a_pt2_file_loads_and_one_that_would_unpickle_code_is_refused(tmp_path):
    import pickle

    module = nn.Sequential(nn.Linear(16, 4)).eval()
    x = torch.randn(2, 16)
    torch.export.save(torch.export.export(module, (x,)), str(tmp_path / "good.pt2"))
    good = _source(tmp_path / "good.pt2", kind="exported_program", architecture=None, input_shape=(16,))
    artifact = runtimes.prepare_artifact(_scenario(good, batch_size=2), tmp_path / "cache")
    infer, _ = runtimes.load_model(_scenario(good, batch_size=2), artifact.path)
    with torch.inference_mode():
        assert torch.allclose(infer(x), module(x))

    marker = tmp_path / "pwned.txt"
    evil = pickle.dumps(_RunsCode(marker))

    def pickled_weight(rel, data):
        if rel.endswith("_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first.update(use_pickle=True, path_name="evil_weight")
            return {rel: json.dumps(config).encode(), "data/weights/evil_weight": evil}
        return data

    def evil_sample_inputs(rel, data):
        return evil if rel.startswith("data/sample_inputs/") else data

    for name, change, fragment in (
        ("weight.pt2", pickled_weight, "holds data/weights/evil_weight (0.weight), a pickle"),
        ("inputs.pt2", evil_sample_inputs, "holds data/sample_inputs/model.pt, a pickle"),
    ):
        shutil.copy(tmp_path / "good.pt2", tmp_path / name)
        _rewrite_pt2(tmp_path / name, change)
        bad = dataclasses.replace(good, path=str(tmp_path / name))
        with pytest.raises(SourceError) as info:
            runtimes.prepare_artifact(_scenario(bad), tmp_path / "cache")
        assert fragment in str(info.value) and "trust_pickle: true" in str(info.value)
        assert info.value.field == "trust_pickle" and not marker.exists()
        sources.check_exported_program(dataclasses.replace(bad, trust_pickle=True))  # the user's call
    assert not marker.exists()
    (tmp_path / "junk.pt2").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(SourceError, match="is not a readable torch.export archive"):
        sources.check_exported_program(dataclasses.replace(good, path=str(tmp_path / "junk.pt2")))


def test_a_dict_without_weights_says_what_it_holds(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "opt.pth")
    with pytest.raises(SourceError, match=r"holds a dict with keys \['epoch', 'optimizer'\], not a state_dict"):
        sources.read_weights(_source(tmp_path / "opt.pth"))


def test_kwargs_reach_a_torchvision_architecture(tmp_path):
    """A user's resnet18 trained for 10 classes: num_classes=10 builds the matching head."""
    model = models.build_model("resnet18", 1, kwargs={"num_classes": 10})
    torch.save(model.state_dict(), tmp_path / "r.pth")
    source = _source(tmp_path / "r.pth", architecture="resnet18", kwargs={"num_classes": 10}, input_shape=(3, 32, 32))
    built = sources.build_module("mine", source)
    assert built.fc.out_features == 10 and torch.equal(built.fc.weight, model.fc.weight)


# ---------------------------------------------------------------- safetensors and factories


def test_safetensors_file_and_sharded_folder(tmp_path):
    from safetensors.torch import save_file

    state = _tiny_mlp_state()
    save_file(state, tmp_path / "model.safetensors")
    folder = tmp_path / "hf"
    folder.mkdir()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[:3], "model-00002-of-00002.safetensors": keys[3:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, folder / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / sources.SAFETENSORS_INDEX).write_text(json.dumps(index), encoding="utf-8")
    (folder / "config.json").write_text("{}", encoding="utf-8")  # Hugging Face's; not needed here

    for path in (tmp_path / "model.safetensors", folder):
        source = _source(path, kind="safetensors")
        module = sources.build_module("mine", source)
        assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
    facts = sources.check_file(_source(folder, kind="safetensors"))
    assert facts.bytes == sum((folder / name).stat().st_size for name in shards)
    lines = "".join(f"{n} {hashlib.sha256((folder / n).read_bytes()).hexdigest()}\n" for n in sorted(shards))
    assert facts.sha256 == hashlib.sha256(lines.encode()).hexdigest()  # the documented folder digest

    (tmp_path / "random.safetensors").write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(SourceError, match="is not a readable safetensors file"):
        sources.read_weights(_source(tmp_path / "random.safetensors", kind="safetensors"))


def test_factories_must_return_a_module(factory_dir):
    def factory(function: str) -> ModelSource:
        return ModelSource(
            "mine", "factory", (16,), architecture=f"{FACTORY_MODULE}:{function}", search_path=str(factory_dir)
        )

    assert isinstance(sources.build_module("mine", factory("mlp")), nn.Sequential)
    with pytest.raises(SourceError, match="returned str, expected a torch.nn.Module"):
        sources.build_module("mine", factory("not_a_module"))
    with pytest.raises(SourceError, match="raised RuntimeError: no weights here"):
        sources.build_module("mine", factory("raises"))


# ---------------------------------------------------------------- compiled files


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    """An fp32 ONNX file with input [batch, 16] (the batch dynamic)."""
    path = tmp_path_factory.mktemp("onnx") / "mlp.onnx"
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; it is what bench uses too
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model, (torch.randn(1, 16),), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}}
        )
    return path


def test_an_onnx_file_with_the_wrong_input_shape_is_named(onnx_file, tmp_path):
    source = _source(onnx_file, kind="onnx", architecture=None, input_shape=(3, 4))
    with pytest.raises(SourceError) as info:
        runtimes.prepare_artifact(_scenario(source, batch_size=2), tmp_path)
    assert info.value.field == "input_shape"
    assert "input 'x' has shape [batch, 16], but the scenario feeds [2, 3, 4]" in str(info.value)

    half = _source(onnx_file, kind="onnx", architecture=None, input_shape=(16,), saved_precision="fp16")
    with pytest.raises(SourceError, match="takes FLOAT elements, which does not match saved_precision fp16"):
        runtimes.prepare_artifact(_scenario(half, precision="fp16"), tmp_path)

    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(2).bytes(1000))
    garbage = _source(tmp_path / "random.onnx", kind="onnx", architecture=None, input_shape=(16,))
    with pytest.raises(SourceError, match="is not a readable ONNX file"):
        runtimes.prepare_artifact(_scenario(garbage), tmp_path)


def test_a_given_file_is_loaded_where_it_is_and_int8_comes_from_its_content(onnx_file, tmp_path):
    source = _source(onnx_file, kind="onnx", architecture=None, input_shape=(16,))
    given = runtimes.prepare_artifact(_scenario(source), tmp_path / "cache")
    assert given.path == onnx_file and given.sha256 == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    int8 = runtimes.prepare_artifact(_scenario(source, precision="int8_dynamic"), tmp_path / "cache")
    assert int8.facts["quantized_layers"] == 2 and not int8.cached
    # The same bytes under another name and path: the cache entry is found by content.
    moved = tmp_path / "elsewhere" / "renamed.onnx"
    moved.parent.mkdir()
    shutil.copy(onnx_file, moved)
    again = dataclasses.replace(source, name="other", path=str(moved))
    reused = runtimes.prepare_artifact(_scenario(again, precision="int8_dynamic"), tmp_path / "cache")
    assert reused.cached and reused.sha256 == int8.sha256
    # ... and the reference outputs are the file's own, for the int8 row's fidelity.
    reference = runtimes.reference_outputs(_scenario(source, precision="int8_dynamic"), tmp_path / "cache", 4)
    assert torch.load(reference.path, weights_only=True).shape == (4, 4)


def test_checkpoint_artifacts_are_keyed_by_content_not_path(tmp_path):
    torch.save(_tiny_mlp_state(), tmp_path / "a.pth")
    first = runtimes.prepare_artifact(_scenario(_source(tmp_path / "a.pth")), tmp_path / "cache")
    shutil.copy(tmp_path / "a.pth", tmp_path / "b.pth")
    same = runtimes.prepare_artifact(_scenario(_source(tmp_path / "b.pth", name="b")), tmp_path / "cache")
    assert same.cached and same.path == first.path
    torch.save(_tiny_mlp_state(seed=4), tmp_path / "a.pth")  # new weights, same path
    changed = runtimes.prepare_artifact(_scenario(_source(tmp_path / "a.pth")), tmp_path / "cache")
    assert not changed.cached and changed.sha256 != first.sha256


def test_what_each_source_can_run(onnx_file):
    def reason(source: ModelSource | None, **changes) -> str | None:
        return runtimes.unsupported_reason(_scenario(source, **changes))

    onnx = _source(onnx_file, kind="onnx", architecture=None, input_shape=(16,))
    script = _source(onnx_file, kind="torchscript", architecture=None, input_shape=(16,))
    checkpoint = _source(onnx_file)
    assert reason(onnx) is None and reason(onnx, precision="int8_dynamic") is None
    assert "runs in the precision it was saved in (saved_precision: fp32)" in reason(onnx, precision="fp16")
    assert "runs only with load: onnxruntime" in reason(onnx, load="eager")
    assert "runs only with load: torchscript" in reason(script, load="onnxruntime")
    assert "give the checkpoint and its architecture" in reason(script, precision="int8_dynamic")
    for load in ("eager", "mmap", "torchscript", "export", "onnxruntime"):  # a module: the usual rules
        for precision in ("fp32", "int8_dynamic", "bf16"):
            assert reason(checkpoint, load=load, precision=precision) == reason(None, load=load, precision=precision)
    assert "runs .tflite files" in reason(checkpoint, load="litert")


# ---------------------------------------------------------------- LiteRT


@pytest.mark.skipif(not HAS_LITERT, reason="LiteRT is not installed (pip install .[tflite])")
def test_a_tflite_file_runs_in_litert_with_the_scenario_threads(tmp_path):
    weight, bias = tflite_linear(tmp_path / "linear.tflite", in_features=8, out_features=4)
    source = _source(tmp_path / "linear.tflite", kind="tflite", architecture=None, input_shape=(8,))
    scenario = _scenario(source, batch_size=3, threads=2)
    assert runtimes.unsupported_reason(scenario) is None and runtimes.runtime_of(scenario) == "litert"
    infer, facts = runtimes.load_model(scenario, Path(source.path))
    batch = runtimes.make_batch(scenario)
    assert isinstance(batch, np.ndarray) and batch.shape == (3, 8)
    np.testing.assert_allclose(infer(batch), batch @ weight.T + bias, rtol=1e-5, atol=1e-5)
    one = batch[:1]  # another batch size: the interpreter is resized
    np.testing.assert_allclose(infer(one), one @ weight.T + bias, rtol=1e-5, atol=1e-5)
    assert facts["fixed_batch"] is None

    wrong = dataclasses.replace(scenario, input_shape=(5,), source=dataclasses.replace(source, input_shape=(5,)))
    with pytest.raises(SourceError, match=r"input 'input' has shape \[-1, 8\] .* feeds \[3, 5\]"):
        runtimes.load_model(wrong, Path(source.path))
    (tmp_path / "random.tflite").write_bytes(np.random.default_rng(3).bytes(512))
    garbage = dataclasses.replace(scenario, source=dataclasses.replace(source, path=str(tmp_path / "random.tflite")))
    with pytest.raises(SourceError, match="litert could not load it as a TFLite file"):
        runtimes.load_model(garbage, tmp_path / "random.tflite")


def test_without_the_tflite_extra_rows_are_unsupported(tmp_path, monkeypatch):
    source = _source(tmp_path / "m.tflite", kind="tflite", architecture=None, input_shape=(8,))
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # what an environment without it sees
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert runtimes.unsupported_reason(_scenario(source)) == litert.LITERT_MISSING
    assert "pip install .[tflite]" in litert.LITERT_MISSING
    with pytest.raises(runtimes.Unsupported, match=r"install \.\[tflite\]"):  # the worker says the same
        runtimes.import_libraries(_scenario(source))


# ---------------------------------------------------------------- memory release


# In a new interpreter: in this long-lived test process, what other tests loaded once kept a freed 64 MiB
# block mapped (RSS unchanged to the byte, in one fresh-clone CI run), which is not what a worker sees.
RELEASE = """
import dataclasses, json, sys
from torch import nn
from bench.measure import contract
from bench.measure.worker import WorkerSession, WorkerSpec
session = WorkerSession(contract.decode(WorkerSpec, json.loads(sys.argv[1])))
try:
    session.infer = nn.Linear(4096, 4096)  # 64 MiB of weights: glibc maps (and unmaps) a block this big
    session.release()
finally:
    session._events.close()
print(json.dumps({**dataclasses.asdict(session.facts), "infer_dropped": session.infer is None}))
"""


def test_release_reports_what_deleting_the_model_gives_back(tmp_path):
    spec = WorkerSpec(_scenario(None).to_dict(), str(tmp_path / "unused.pt"), None, str(tmp_path))
    argv = [sys.executable, "-c", RELEASE, contract.encode(spec)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    weights = 4096 * 4097 * 4
    assert result["model_freed_on_release"] is True and result["infer_dropped"] is True
    assert result["rss_before_release_bytes"] - result["rss_after_release_bytes"] > 0.9 * weights, result
    if platform.libc_ver()[0] == "glibc":
        # Trimming never grows RSS; the slack is for the interpreter's other threads.
        assert result["rss_after_malloc_trim_bytes"] <= result["rss_after_release_bytes"] + (4 << 20), result
    else:
        assert result["rss_after_malloc_trim_bytes"] is None


def test_profiling_knows_sources(tmp_path):
    from bench.profile import profiler as profiling

    torch.save(_tiny_mlp_state(), tmp_path / "w.pth")
    checkpoint = _source(tmp_path / "w.pth")
    assert profiling.count_flops("mine", (64,), 2, 0, checkpoint) == profiling.count_flops("tiny_mlp", (64,), 2)
    lite = _source(tmp_path / "m.tflite", kind="tflite", architecture=None, input_shape=(8,))
    result = profiling.profile_scenario(_scenario(lite), tmp_path / "m.tflite", tmp_path / "profile")
    assert result.status == "unsupported" and "LiteRT" in result.note
