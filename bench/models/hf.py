"""Hugging Face model folders (`hf: FOLDER` with a `task:`), through `transformers` (an optional extra).

When a suite is checked, the suite asks `check_entry` what an `hf:` entry's folder says: its
config.json is read with json alone (maximum positions, vocabulary, token types), its text:
file and tokenizer are looked for, so a suite is refused before anything runs without importing
transformers; the answer is typed (`EntryFacts`), a refusal names the entry's key (`EntryError`).

Models are built with AutoModel / AutoModelForSequenceClassification / AutoModelForCausalLM
and `local_files_only=True`: never the network. `text:` sentences are tokenized with the
folder's own tokenizer, padded or truncated to `seq_len`.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.models.sources import TASKS, ModelSource, SourceError, short, spec_available
from bench.suite.inputs import SEQ, InputSpec, make_inputs

MISSING = "transformers is not installed: pip install .[transformers] (the transformers and tokenizers packages)"
TASK_CLASSES = {
    "feature-extraction": "AutoModel",
    "text-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
}
TASK_OUTPUTS = {"feature-extraction": "last_hidden_state", "text-classification": "logits", "causal-lm": "logits"}
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")
# Inputs every transformers text model takes as [batch, sequence]: one sample is one dimension.
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def available() -> bool:
    return spec_available("transformers")


def read_config(folder: Path) -> dict[str, Any]:
    """config.json as a dict; ValueError saying what is wrong with it."""
    path = folder / "config.json"
    if folder.is_file():
        raise ValueError(
            f"{folder} is a file, not a folder: hf: takes the model's folder (the one save_pretrained "
            f"wrote, with config.json and the weights in it), e.g. hf: {folder.parent}"
        )
    if not folder.exists():
        raise ValueError(f"{folder}: no such folder (relative paths are relative to the suite's folder)")
    if not path.is_file():
        raise ValueError(
            f"{folder} has no config.json (expected a Hugging Face model folder, as save_pretrained writes it)"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ValueError(f"{path} has no model_type; it is not a transformers model config")
    return config


def architecture_task(architecture: str) -> str | None:
    """The task that loads a saved architecture with every weight in its place: a causal LM, a sequence
    classifier, or a base model (no head) for feature-extraction; None for another head (a masked LM, a
    token classifier), which no task is sure to fit."""
    if architecture.endswith(("ForCausalLM", "LMHeadModel")):
        return "causal-lm"
    if architecture.endswith("ForSequenceClassification"):
        return "text-classification"
    if architecture.endswith("Model"):
        return "feature-extraction"
    return None


_TASK_NEEDS = {
    "causal-lm": "which needs the weights of a language-model head",
    "text-classification": "which needs the weights of a classification head",
    "feature-extraction": "which has no place for the weights of a task head",
}
_ARCHITECTURE_KINDS = {
    "causal-lm": "a causal language model",
    "text-classification": "a sequence classifier",
    "feature-extraction": "a base model without a task head",
    None: "a model with another head",
}


def task_misfit(config: dict[str, Any], task: str) -> str | None:
    """Why `task` cannot load the saved weights of the architecture config.json names, or None when
    it can, may, or config.json names none (transformers' loading then says what does not fit).

    Tried on saved BERT and GPT-2 folders: causal-lm on a base model or a classifier misses the LM
    head; text-classification on anything but a classifier misses the classifier; feature-extraction
    on a classifier finds the classifier's weights unexpected. Other pairs load for some models and
    not for others (a masked LM loads as a causal LM; GPT-2's LM head, tied, loads as a base model)."""
    named = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    fits = {architecture_task(a) for a in named}
    if not named or task in fits:
        return None
    wrong = {
        "text-classification": True,
        "causal-lm": fits <= {"feature-extraction", "text-classification"},
        "feature-extraction": fits == {"text-classification"},
    }[task]
    if not wrong:
        return None
    fit = next((f for f in sorted(fits, key=str) if f), None)
    return (
        f"task: {task} does not fit this folder: it loads the model as {TASK_CLASSES[task]}, {_TASK_NEEDS[task]}, "
        f"and config.json names the architecture {', '.join(named)} (model_type {config.get('model_type')}), "
        f"{_ARCHITECTURE_KINDS[fit]}. "
        + (f"The task that fits it: task: {fit}" if fit else "No task bench offers is sure to fit it")
        + f" (or set random_weights: true to time {task} with seeded random weights)"
    )


class EntryError(ValueError):
    """What an hf: folder refuses in its model entry; `where` is the entry's key it concerns, e.g.
    ("hf",) or ("inputs", 0, "range"), or () for the entry as a whole."""

    def __init__(self, where: tuple[Any, ...], message: str):
        super().__init__(message)
        self.where = where


@dataclass(frozen=True)
class EntryFacts:
    """What an hf: folder gives its model entry."""

    inputs: tuple[InputSpec, ...]  # the entry's own inputs, or the defaults from config.json
    max_positions: int | None  # the longest sequence config.json allows, when it says


def check_entry(
    folder: Path, task: str | None, inputs: tuple[InputSpec, ...], text: str | None, random_weights: bool
) -> EntryFacts:
    """An hf: model entry checked against its folder: config.json readable, a task named that loads
    the saved architecture (unless random_weights), sequence inputs of one dimension per sample, token
    ids within the vocabulary, and a tokenizer for its `text:` file (whose sentences are read).
    Raises EntryError."""
    try:
        config = read_config(folder)
    except ValueError as exc:
        raise EntryError(("hf",), str(exc)) from None
    if task is None:
        named = ", ".join(config.get("architectures") or []) or "not named in config.json"
        raise EntryError((), f"an hf: folder needs task: one of {', '.join(TASKS)} (its architecture: {named})")
    if not random_weights and (misfit := task_misfit(config, task)):
        raise EntryError(("task",), misfit)
    for i, spec in enumerate(inputs):
        if spec.name in SEQUENCE_INPUTS and len(spec.shape) != 1:
            shape = f"[{', '.join(map(str, spec.shape))}]"
            raise EntryError(
                ("inputs", i, "shape"),
                f"a transformers text model takes {spec.name} as [batch, "
                f"sequence], so one sample's shape has one dimension, e.g. [{SEQ}]; {shape} would "
                f"make it [batch, {shape[1:]}",
            )
    vocab = config.get("vocab_size")
    if not inputs and not (isinstance(vocab, int) and vocab > 0):
        raise EntryError(
            ("hf",),
            f"{folder / 'config.json'} has no vocab_size (a positive integer): bench draws the token ids of its "
            f"inputs from it; add it to the config, or give inputs: with a range for input_ids",
        )
    inputs = inputs or default_inputs(config)
    for i, spec in enumerate(inputs):
        if spec.name == "input_ids" and spec.range and isinstance(vocab, int) and spec.range[1] > vocab:
            raise EntryError(
                ("inputs", i, "range"),
                f"token ids up to {spec.range[1] - 1} are beyond the "
                f"vocabulary of {folder / 'config.json'} (vocab_size {vocab})",
            )
    if text is not None:
        try:
            read_sentences(Path(text))
        except ValueError as exc:
            raise EntryError(("text",), str(exc)) from None
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise EntryError(
                ("text",), f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}) to tokenize it with"
            )
    return EntryFacts(inputs, max_positions(config))


def max_positions(config: dict[str, Any]) -> int | None:
    return next((config[k] for k in _POSITION_KEYS if isinstance(config.get(k), int)), None)


def default_inputs(config: dict[str, Any]) -> tuple[InputSpec, ...]:
    """input_ids over the vocabulary, an all-ones attention_mask, and token_type_ids (zeros) when
    the config has token types (BERT-like encoders)."""
    specs = [
        InputSpec("input_ids", (SEQ,), "int64", range=(0, int(config["vocab_size"]))),
        InputSpec("attention_mask", (SEQ,), "int64", fill=1),
    ]
    if config.get("type_vocab_size"):
        specs.append(InputSpec("token_type_ids", (SEQ,), "int64", fill=0))
    return tuple(specs)


def read_sentences(path: Path) -> list[str]:
    """The non-blank lines of a `text:` file; ValueError when there are none or it cannot be read."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} cannot be read: {exc}") from None
    sentences = [line for line in lines if line]
    if not sentences:
        raise ValueError(f"{path} has no sentences (expected one a line)")
    return sentences


def import_transformers() -> Any:
    import transformers  # runtimes.unsupported_reason says MISSING before a row gets here without it

    transformers.logging.set_verbosity_error()  # its notes on configs go to every worker's stderr otherwise
    transformers.utils.logging.disable_progress_bar()
    return transformers


def build(source: ModelSource, seed: int, device: Any = None, *, with_weights: bool = True) -> Any:
    """The folder's model for its task in fp32 eval mode: its weights, or (with_weights false, or
    random_weights) seeded random ones from its config. Its KV cache is off for single forward calls."""
    import torch

    transformers = import_transformers()
    folder = str(source.path)
    auto = getattr(transformers, TASK_CLASSES[source.task or "feature-extraction"])
    if with_weights and not source.random_weights:
        try:
            # mismatched sizes are reported in `info` (below) rather than raised without the tensors' names
            model, info = auto.from_pretrained(
                folder,
                local_files_only=True,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                dtype=torch.float32,
            )
        except Exception as exc:  # unreadable weights, an unknown model_type
            raise SourceError(source, f"transformers could not load it: {type(exc).__name__}: {short(exc)}") from None
        problems = [
            f"{kind.replace('_', ' ')}: "
            + ", ".join(
                f"{item[0]} (file {list(item[1])}, config {list(item[2])})" if isinstance(item, tuple) else str(item)
                for item in sorted(info[kind], key=str)[:8]
            )
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
            if info.get(kind)
        ] + [str(message) for message in info.get("error_msgs") or []]
        if problems:
            saved = ", ".join(getattr(model.config, "architectures", None) or ["not named in config.json"])
            raise SourceError(
                source,
                f"its weights do not fit its config.json as task: {source.task} loads it "
                f"({TASK_CLASSES[source.task or 'feature-extraction']}; the saved architecture: "
                f"{saved}) ({short('; '.join(problems), 600)}); it would run with randomly "
                "initialised layers",
            )
    else:
        try:
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        except Exception as exc:
            raise SourceError(
                source, f"transformers cannot read config.json: {type(exc).__name__}: {short(exc)}"
            ) from None
        torch.manual_seed(seed)
        with torch.device(device) if device is not None else nullcontext():
            model = auto.from_config(config, dtype=torch.float32)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # a timed forward returns the outputs only; generation asks for the cache
    return model.eval()


def tokenize(
    source: ModelSource, specs: tuple[InputSpec, ...], count: int, seq_len: int, skip: int = 0
) -> dict[str, Any]:
    """`count` sentences of the `text:` file from the `skip`-th (repeated when it has fewer),
    tokenized, padded or truncated to seq_len; the inputs `specs` names that the tokenizer does
    not give are made as the specs say."""
    transformers = import_transformers()
    folder = Path(source.path or "")
    try:
        if (folder / "tokenizer_config.json").is_file():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        else:
            tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    except Exception as exc:
        raise SourceError(
            source, f"its tokenizer cannot be loaded: {type(exc).__name__}: {short(exc)}", field="text"
        ) from None
    if tokenizer.pad_token is None:  # GPT-2-like tokenizers have none; padding is masked out anyway
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": tokenizer.convert_ids_to_tokens(0)})
    if source.task == "causal-lm":  # prompts end where generation starts: pad on the left
        tokenizer.padding_side = "left"
    sentences = read_sentences(Path(source.text or ""))
    chosen = [sentences[(skip + i) % len(sentences)] for i in range(count)]
    encoded = tokenizer(chosen, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    made = make_inputs(specs, count, seq_len, 0)
    for spec in specs:
        if spec.name in encoded:
            made[spec.name] = encoded[spec.name].to(made[spec.name].dtype)
    return made
