"""Model sources: the user's own models, which a suite's `model:` entry can point at.

A `model:` entry is a name (a built-in model or a torchvision architecture, bench.models.catalog)
or a mapping with a `name` and exactly one source key:

- `checkpoint` / `safetensors`: weights for an `architecture` (a model name or a factory);
- `factory`: `package.module:function` returning an nn.Module;
- `torchscript` / `onnx` / `exported_program` / `tflite` / `aoti`: a compiled file, run as
  given (an AOTInductor package holds native code: it needs `trust_code: true`);
- `hf`: a Hugging Face model folder (config.json and weights), built with transformers (bench.models.hf).

Any source but tflite may declare named, typed `inputs:` (bench.suite.inputs) and an `output:`. The
mapping's keys, and which apply to which kind, are declared once by the suite (bench.suite.scenarios.ModelEntry).

Here: what each kind is, the file checks (exists, not empty, sha256), and reading weights
(torch.load with weights_only=True and map_location="cpu" unless the suite trusts the
pickle; safetensors without transformers), ONNX inputs and factories. A problem is a
SourceError that names the file, the model and the suite field. torch is imported lazily.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import json
import re
import sys
import warnings
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from bench.errors import UserError
from bench.models import catalog as models
from bench.models.artifacts import file_sha256
from bench.schema import from_json
from bench.suite.inputs import InputSpec

KINDS = ("checkpoint", "safetensors", "factory", "torchscript", "onnx", "exported_program", "tflite", "aoti", "hf")
WEIGHT_KINDS = ("checkpoint", "safetensors")  # weights for an `architecture`
MODULE_KINDS = (*WEIGHT_KINDS, "factory")  # an nn.Module in Python: every precision and load mode applies
# Compiled files run as given, with the one load mode that reads them.
NATIVE_LOAD = {
    "torchscript": "torchscript",
    "onnx": "onnxruntime",
    "exported_program": "export",
    "tflite": "litert",
    "aoti": "aoti",
}
FILE_KINDS = (*WEIGHT_KINDS, *NATIVE_LOAD, "hf")
TASKS = ("feature-extraction", "text-classification", "causal-lm")
FORMAT_NAMES = {
    "checkpoint": "PyTorch checkpoint",
    "safetensors": "safetensors",
    "factory": "factory",
    "torchscript": "TorchScript",
    "onnx": "ONNX",
    "exported_program": "torch.export (.pt2)",
    "tflite": "TFLite",
    "aoti": "AOTInductor package (.pt2)",
    "hf": "Hugging Face model folder",
}
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a folder's single-file weights, by preference
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,63}$")  # no '-': it separates the parts of a scenario id
FACTORY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
SAFETENSORS_INDEX = "model.safetensors.index.json"
CODE_RISK = (
    "an AOTInductor package holds compiled shared libraries, which run as native code, with this user's rights, "
    "as soon as the package is loaded; set `trust_code: true` in this model entry only for a package you built "
    "or from a source you trust, and give its sha256 so a changed file is refused"
)
PICKLE_RISK = (
    "unpickling runs whatever code the file names, so set it only for a file from a source you trust; "
    "better, save the weights alone (torch.save(model.state_dict(), path))"
)
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
_LISTED = 8  # keys listed per kind of state_dict mismatch


@dataclass(frozen=True)
class ModelSource:
    """One user model, as a suite names it (paths absolute, resolved from the suite's folder)."""

    name: str
    kind: str
    input_shape: tuple[int, ...]  # one sample without the batch: the scenario's default
    path: str | None = None  # the file or folder (file kinds)
    architecture: str | None = None  # weight kinds: a model name or factory; kind `factory`: the factory
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)  # passed to the architecture
    sha256: str | None = None  # as declared in the suite; verified before loading
    trust_pickle: bool = False  # checkpoint: torch.load(weights_only=False); exported_program: skip the pickle check
    trust_code: bool = False  # aoti: the user accepts that loading the package runs its native code
    saved_precision: str = "fp32"  # compiled files: the precision they were saved in
    search_path: str | None = None  # the suite's folder: factories' modules are imported from there too
    inputs: tuple[
        InputSpec, ...
    ] = ()  # named, typed inputs (bench.suite.inputs); empty: one float tensor of input_shape
    output: str | int | None = None  # what the timed call returns, for fidelity; None: the first tensor
    task: str | None = None  # hf: feature-extraction, text-classification or causal-lm (decides fidelity)
    text: str | None = None  # hf: sentences, one a line, tokenized with the folder's tokenizer
    random_weights: bool = False  # hf: a folder with config.json only: seeded random weights

    @property
    def compiled(self) -> bool:
        return self.kind in NATIVE_LOAD

    @property
    def native_load(self) -> str | None:
        return NATIVE_LOAD.get(self.kind)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        data["inputs"] = [spec.to_dict() for spec in self.inputs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSource:
        return from_json(cls, data)


class SourceError(UserError):
    """A model source that cannot be used; names the file, the model and the suite field."""

    def __init__(self, source: ModelSource, problem: str, *, field: str | None = None, path: str | None = None):
        self.source = source
        self.field = field or source.kind
        self.problem = problem
        where = path or source.path or source.architecture
        super().__init__(f"{where} ({self.field} of model '{source.name}'): {problem}")


@dataclass(frozen=True)
class FileFacts:
    """What the record says about a source's file: where, how big, its content hash."""

    path: str
    bytes: int
    sha256: str


# ---------------------------------------------------------------- files: exist, not empty, hash


def weight_files(source: ModelSource) -> list[Path]:
    """The files holding a source's bytes: the file itself, a safetensors folder's shards, or a
    Hugging Face folder's config.json and weights."""
    path = Path(source.path or "")
    if source.kind == "hf":
        return hf_files(source)
    if source.kind != "safetensors" or not path.is_dir():
        return [path]
    index = path / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceError(source, f"{SAFETENSORS_INDEX} has no readable weight_map ({exc})") from None
        return [path / name for name in names]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise SourceError(source, "is a folder with no *.safetensors file (and no model.safetensors.index.json)")
    return files


def hf_files(source: ModelSource) -> list[Path]:
    """config.json, then the weights (none with random_weights), then the tokenizer's files if any."""
    folder = Path(source.path or "")
    if not folder.is_dir():
        raise SourceError(source, "is not a folder (expected a Hugging Face model folder with config.json)")
    files = [folder / "config.json"]
    if not source.random_weights:
        sharded = folder / SAFETENSORS_INDEX
        if sharded.is_file():
            files += weight_files(dataclasses.replace(source, kind="safetensors"))
        else:
            found = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
            if found is None:
                raise SourceError(
                    source,
                    f"has no weights ({', '.join(HF_WEIGHTS)} or {SAFETENSORS_INDEX}); "
                    "for a folder with config.json only, set random_weights: true",
                )
            files.append(found)
    return files + sorted(p for p in folder.glob("tokenizer*.json") if p.is_file())


def check_file(source: ModelSource) -> FileFacts:
    """Exists, not empty, and (when the suite gives one) matches its sha256: otherwise a SourceError.

    For a safetensors folder the size is the sum of its shards and the hash is the sha256 of
    the lines `<file name> <sha256>` of the shards, sorted by name.
    """
    try:
        files = weight_files(source)
        digests = []
        for path in files:
            if not path.exists():
                raise SourceError(
                    source, "no such file (relative paths are relative to the suite's folder)", path=str(path)
                )
            if not path.is_file():
                expected = f"expected a {FORMAT_NAMES[source.kind]} file"
                raise SourceError(source, f"is not a file ({expected})", path=str(path))
            stat = path.stat()
            if stat.st_size == 0:
                raise SourceError(source, "is empty (0 bytes)", path=str(path))
            digests.append((path, stat.st_size, _sha256(str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)))
    except (OSError, ValueError) as exc:  # unreadable, a name with a NUL byte, ...
        raise SourceError(source, f"cannot be read: {exc}") from None
    if len(digests) == 1 and Path(source.path or "").is_file():
        sha = digests[0][2]
    else:
        lines = "".join(f"{p.name} {d}\n" for p, _, d in sorted(digests))
        sha = hashlib.sha256(lines.encode()).hexdigest()
    if source.sha256 is not None and source.sha256.lower() != sha:
        raise SourceError(
            source,
            f"sha256 is {sha}, not {source.sha256.lower()} as the suite says: the file has changed "
            "or the suite names the wrong one",
            field="sha256",
        )
    return FileFacts(str(source.path), sum(size for _, size, _ in digests), sha)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """A file's sha256, hashed once per version of the file (size, mtime and inode are the cache key)."""
    return file_sha256(Path(path))


def source_facts(source: ModelSource) -> FileFacts:
    """File facts of any source; for a factory, of the file of its module."""
    return check_file(source) if source.kind in FILE_KINDS else factory_file(source)


def factory_file(source: ModelSource) -> FileFacts:
    """The file of the module of the source's factory (what a cache key can follow; not what it imports)."""
    module = import_factory_module(source)
    origin = getattr(module, "__file__", None)
    if not origin:
        raise SourceError(source, f"module '{module.__name__}' has no file to hash")
    return FileFacts(origin, Path(origin).stat().st_size, file_sha256(Path(origin)))


# ---------------------------------------------------------------- architectures and factories


def is_factory(spec: str) -> bool:
    return bool(FACTORY_RE.match(spec))


def architecture_field(source: ModelSource) -> str:
    return "factory" if source.kind == "factory" else "architecture"


def import_factory_module(source: ModelSource) -> Any:
    """The module of the source's factory, imported with the suite's folder on sys.path."""
    module_name = (source.architecture or "").partition(":")[0]
    if source.search_path and source.search_path not in sys.path:
        sys.path.append(source.search_path)  # after everything else: never shadows an installed module
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise SourceError(
            source,
            f"cannot import module '{module_name}': {type(exc).__name__}: {exc} (it is imported "
            f"from PYTHONPATH, the current folder and the suite's folder {source.search_path})",
            field=architecture_field(source),
        ) from None


def factory_modules(sources: Iterable[ModelSource]) -> list[tuple[str, str]]:
    """(factory, the file of its module) for each distinct factory among `sources`: the Python code
    a suite imports and calls (`bench validate` says so, since a suite file is code)."""
    found = {}
    for source in sources:
        spec = source.architecture or ""
        if is_factory(spec) and spec not in found:
            module = import_factory_module(source)
            found[spec] = getattr(module, "__file__", None) or "built into Python"
    return sorted(found.items())


def resolve_factory(source: ModelSource) -> Any:
    """The callable `package.module:function` names (attributes may be dotted, e.g. Class.create)."""
    target = import_factory_module(source)
    attribute = (source.architecture or "").partition(":")[2]
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SourceError(
                source,
                f"module '{source.architecture.partition(':')[0]}' has no '{attribute}'",
                field=architecture_field(source),
            ) from None
    if not callable(target):
        raise SourceError(source, f"'{source.architecture}' is not callable", field=architecture_field(source))
    return target


def build_module(
    model: str,
    source: ModelSource | None,
    seed: int = 0,
    device: Any = None,
    *,
    with_weights: bool = True,
    as_given: bool = False,
) -> Any:
    """The fp32 nn.Module of a model name or a module source, in eval mode.

    Seeded random weights, then the source's own weights unless `with_weights` is false
    (the worker builds the skeleton and loads the prepared artifact into it). `as_given`:
    left in the mode the factory gave it (the worker records it, then calls eval()).
    """
    if source is None:
        return models.build_model(model, seed, device)
    if source.kind not in MODULE_KINDS:
        raise ValueError(f"a {FORMAT_NAMES[source.kind]} file has no nn.Module to build")
    module = _build_architecture(source, seed, device)
    if with_weights and source.kind in WEIGHT_KINDS:
        load_into(module, read_weights(source), source)
    return module if as_given else module.eval()


def _build_architecture(source: ModelSource, seed: int, device: Any) -> Any:
    import torch

    spec = source.architecture or ""
    if not is_factory(spec):
        return models.build_model(spec, seed, device, kwargs=source.kwargs)
    factory = resolve_factory(source)
    torch.manual_seed(seed)
    try:
        with torch.device(device) if device is not None else nullcontext():
            module = factory(**source.kwargs)
    except Exception as exc:
        raise SourceError(
            source,
            f"calling {spec}(**{source.kwargs}) raised {type(exc).__name__}: {exc}",
            field=architecture_field(source),
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise SourceError(
            source,
            f"{spec} returned {type(module).__name__}, expected a torch.nn.Module",
            field=architecture_field(source),
        )
    return module


# ---------------------------------------------------------------- weights: checkpoints and safetensors


def read_weights(source: ModelSource) -> dict[str, Any]:
    """The source's state_dict on the CPU, unwrapped and without DataParallel / compile prefixes."""
    check_file(source)  # the file may have changed since the suite was read
    state = _read_safetensors(source) if source.kind == "safetensors" else _read_checkpoint(source)
    for prefix in _PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def _read_checkpoint(source: ModelSource) -> dict[str, Any]:
    import pickle

    import torch

    try:
        # map_location: a checkpoint saved on a GPU names cuda storages; they load here on the CPU.
        loaded = torch.load(source.path, map_location="cpu", weights_only=not source.trust_pickle)
    except pickle.UnpicklingError as exc:
        wanted = [] if source.trust_pickle else _unsafe_globals(source.path)
        if wanted:
            raise SourceError(
                source,
                f"wants the Python global(s) {', '.join(wanted)}: loading it would run the code they name "
                "(torch.load(weights_only=True) refused it, and nothing ran). To load it anyway, set "
                f"`trust_pickle: true` in this model entry: {PICKLE_RISK}",
                field="trust_pickle",
            ) from None
        # torch's text advises weights_only=False; for bytes that are no checkpoint that is no fix.
        raise SourceError(
            source,
            f"is not a PyTorch checkpoint (not written by torch.save, or truncated or corrupted): "
            f"{_unpickler_problem(exc)}",
        ) from None
    except Exception as exc:  # truncated zip, an old format torch cannot read
        raise SourceError(
            source,
            f"is not a readable PyTorch checkpoint (truncated, corrupted or not written by torch.save): "
            f"{type(exc).__name__}: {short(exc)}",
        ) from None
    return _unwrap(loaded, source)


def _unsafe_globals(path: str | None) -> list[str]:
    """The globals a checkpoint's pickle names beyond torch's safe list, read without unpickling it;
    [] when the file is no torch.save archive."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # not a zip archive, no data.pkl, a pickle that does not parse
        return []


def _unpickler_problem(exc: BaseException) -> str:
    """torch's UnpicklingError text without its advice (weights_only=False, filing an issue, the docs link)."""
    advice = ("weights_only", "Please file an issue", "Check the documentation", "WeightsUnpickler error")
    kept = [line.strip() for line in str(exc).splitlines() if line.strip() and not any(a in line for a in advice)]
    return short(Exception(" ".join(kept) or "the unpickler refused it"))


def _unwrap(loaded: Any, source: ModelSource) -> dict[str, Any]:
    """A state_dict, whether saved bare, as {'state_dict': ...} / {'model': ...}, or (trusted) as a module."""
    import torch

    def as_state(value: Any) -> dict[str, Any] | None:
        if isinstance(value, torch.nn.Module):  # only a trusted pickle can hold one
            return dict(value.state_dict())
        if isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            return dict(value)
        return None

    state = as_state(loaded)
    if state is None and isinstance(loaded, dict):
        state = next((s for key in ("state_dict", "model") if (s := as_state(loaded.get(key))) is not None), None)
    if state is None:
        raise SourceError(
            source,
            f"holds {_describe(loaded)}, not a state_dict: expected a mapping of parameter names "
            "to tensors, or a dict with a 'state_dict' or 'model' key holding one",
        )
    return state


def _read_safetensors(source: ModelSource) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for path in weight_files(source):
        try:
            part = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise SourceError(source, f"is not a readable safetensors file: {short(exc)}", path=str(path)) from None
        twice = sorted(set(part) & set(state))
        if twice:
            raise SourceError(source, f"tensors appear in two shards: {_listed(twice)}", path=str(path))
        state.update(part)
    return state


def load_into(module: Any, state: dict[str, Any], source: ModelSource) -> None:
    """load_state_dict, after saying exactly how the file and the architecture disagree, if they do."""
    expected = module.state_dict()
    # BatchNorm's load_state_dict adds a missing num_batches_tracked itself (older checkpoints lack it)
    missing = [key for key in expected if key not in state and not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} (file {list(state[key].shape)}, model {list(value.shape)})"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    problems = [
        f"{label} {_listed(keys)}"
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if keys
    ]
    if problems:
        kwargs = f" with kwargs {source.kwargs}" if source.kwargs else ""
        raise SourceError(
            source,
            f"does not match architecture '{source.architecture}'{kwargs}: " + "; ".join(problems),
            field="architecture",
        )
    module.load_state_dict(state)


# ---------------------------------------------------------------- torch.export archives


def check_exported_program(source: ModelSource) -> None:
    """Refuse a .pt2 archive whose loading would unpickle untrusted data or run compiled code,
    unless the entry says `trust_pickle: true`.

    torch.export.load (torch 2.14) unpickles with weights_only=False every weight or tensor
    constant saved with `use_pickle`, every custom or opaque object constant, and any .pt
    payload (sample inputs, legacy weights) that the safe unpickler refuses; it also loads
    AOTInductor's shared libraries. torch.export.save of an ordinary module writes none of
    these, only sample inputs that load with weights_only=True."""
    if source.trust_pickle:
        return
    import io
    import json
    import zipfile

    import torch
    from torch.export.pt2_archive import constants as pt2

    def refuse(what: str) -> NoReturn:
        raise SourceError(
            source,
            f"{what}, which torch.export.load would load without weights_only=True. To load it anyway, "
            f"set `trust_pickle: true` in this model entry: {PICKLE_RISK}",
            field="trust_pickle",
        )

    def check_pickle(member: str, data: bytes) -> None:
        try:
            with warnings.catch_warnings():  # its notes on pickle protocols: the refusal says enough
                warnings.simplefilter("ignore")
                torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            refuse(f"holds {member}, a pickle that torch.load(weights_only=True) refuses ({short(exc)})")

    try:
        with zipfile.ZipFile(source.path) as archive:
            # members sit under one root folder, whose name torch.export.save takes from the file's
            members = {name.split("/", 1)[1]: name for name in archive.namelist() if "/" in name}
            if pt2.ARCHIVE_FORMAT_PATH not in members:
                refuse("is not in the torch.export archive format of torch >= 2.8 (older archives are unpickled)")
            if any(rel.startswith(pt2.AOTINDUCTOR_DIR) for rel in members):
                refuse("holds AOTInductor-compiled code (shared libraries)")
            for rel, name in members.items():
                directory = next((d for d in (pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR) if rel.startswith(d)), None)
                if directory is not None and rel.endswith("_config.json"):
                    config = json.loads(archive.read(name)).get("config", {})
                    for fqn, entry in config.items():
                        payload = str(entry.get("path_name", ""))
                        if payload.startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX, pt2.OPAQUE_OBJ_FILENAME_PREFIX)):
                            refuse(f"holds a Python object constant ({fqn}), unpickled as it loads")
                        if entry.get("use_pickle"):
                            check_pickle(f"{directory}{payload} ({fqn})", archive.read(members[directory + payload]))
                elif rel.endswith(".pt"):
                    check_pickle(rel, archive.read(name))
    except (zipfile.BadZipFile, KeyError, ValueError, AttributeError) as exc:
        raise SourceError(
            source, f"is not a readable torch.export archive: {type(exc).__name__}: {short(exc)}"
        ) from None


# ---------------------------------------------------------------- ONNX files


@dataclass(frozen=True)
class OnnxInput:
    name: str
    elem_type: str  # onnx's name of the element type, e.g. FLOAT, FLOAT16
    dims: tuple[int | str, ...]  # a fixed size, or the name of a symbolic one
    int8_nodes: int  # integer MatMul/Conv nodes: already dynamically quantized


_ONNX_PRECISIONS = {"FLOAT": ("fp32", "int8_dynamic"), "FLOAT16": ("fp16",), "BFLOAT16": ("bf16",)}
ORT_INT8_OPS = frozenset({"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})


@functools.lru_cache(maxsize=64)
def onnx_inputs(source: ModelSource, sha256: str) -> tuple[OnnxInput, ...]:  # sha256: one parse per file version
    import onnx

    try:
        model = onnx.load(str(source.path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError for truncated files and random bytes
        raise SourceError(source, f"is not a readable ONNX file: {type(exc).__name__}: {short(exc)}") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}  # old exporters list weights as inputs too
    int8_nodes = sum(1 for node in graph.node if node.op_type in ORT_INT8_OPS)
    found = []
    for graph_input in graph.input:
        if graph_input.name in initializers:
            continue
        tensor = graph_input.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim)
        found.append(OnnxInput(graph_input.name, onnx.TensorProto.DataType.Name(tensor.elem_type), dims, int8_nodes))
    return tuple(found)


def onnx_input(source: ModelSource, sha256: str) -> OnnxInput:
    """The file's one input (a file with several needs `inputs:` in its model entry)."""
    inputs = onnx_inputs(source, sha256)
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise SourceError(
            source,
            f"has {len(inputs)} graph inputs ({names}); list them under inputs: (name, shape, dtype, "
            "range or fill) so that bench can feed each one",
            field="inputs",
        )
    return inputs[0]


_ONNX_DTYPES = {"float32": "FLOAT", "int64": "INT64", "int32": "INT32"}


def check_onnx_named_inputs(source: ModelSource, sha256: str, batch_size: int, seq_len: int | None) -> OnnxInput:
    """A file's inputs against the entry's `inputs:`: the same names, element types and fixed sizes;
    returns the first input (its batch dimension tells whether the batch is fixed)."""
    found = {i.name: i for i in onnx_inputs(source, sha256)}
    listed = [spec.name for spec in source.inputs]
    if set(found) != set(listed):
        raise SourceError(
            source,
            f"the file's inputs are [{', '.join(found)}] and inputs: lists [{', '.join(listed)}]; "
            "list exactly the file's inputs",
            field="inputs",
        )
    for spec in source.inputs:
        info = found[spec.name]
        if info.elem_type != _ONNX_DTYPES[spec.dtype]:
            raise SourceError(
                source,
                f"input '{spec.name}' takes {info.elem_type} elements and inputs: says "
                f"dtype {spec.dtype} ({_ONNX_DTYPES[spec.dtype]})",
                field="inputs",
            )
        fed = [batch_size, *spec.sample_shape(seq_len)]
        fits = len(info.dims) == len(fed) and all(
            not isinstance(d, int) or d in (0, f) for d, f in zip(info.dims, fed, strict=True)
        )
        if not fits:
            raise SourceError(
                source,
                f"input '{spec.name}' has shape [{', '.join(map(str, info.dims))}], but the scenario "
                f"feeds [{', '.join(map(str, fed))}] (batch_size {batch_size}, seq_len {seq_len})",
                field="inputs",
            )
    return found[listed[0]]


def check_onnx_input(source: ModelSource, sha256: str, batch_size: int, input_shape: tuple[int, ...]) -> OnnxInput:
    """The file's one input, checked against what the scenario feeds it; a SourceError says how they differ."""
    info = onnx_input(source, sha256)
    if source.saved_precision not in _ONNX_PRECISIONS.get(info.elem_type, ()):
        raise SourceError(
            source,
            f"input '{info.name}' takes {info.elem_type} elements, which does not match "
            f"saved_precision {source.saved_precision} (FLOAT: fp32 or int8_dynamic, FLOAT16: fp16, "
            "BFLOAT16: bf16; bench feeds floating-point tensors)",
            field="saved_precision",
        )
    fed = [batch_size, *input_shape]
    fits = len(info.dims) == len(fed) and all(
        not isinstance(d, int) or d == f for d, f in zip(info.dims, fed, strict=True)
    )
    if not fits:
        fixed = fixed_batch(info.dims)
        batch_note = f" (its batch size is fixed at {fixed})" if fixed else ""
        raise SourceError(
            source,
            f"input '{info.name}' has shape [{', '.join(map(str, info.dims))}]{batch_note}, but the "
            f"scenario feeds [{', '.join(map(str, fed))}] (batch_size {batch_size}, input_shape "
            f"{list(input_shape)})",
            field="input_shape",
        )
    return info


# ---------------------------------------------------------------- helpers


def fixed_batch(dims: tuple[int | str, ...] | list[Any]) -> int | None:
    """The batch size a model's input insists on, or None when it takes any."""
    return dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None


def short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return f"[{shown}" + (f", and {len(items) - _LISTED} more]" if len(items) > _LISTED else "]")


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        keys = [str(k) for k in list(value)[:_LISTED]]
        return f"a dict with keys {keys}" if value else "an empty dict"
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def spec_available(module: str) -> bool:
    """Whether a module could be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
