"""Tiny Hugging Face model folders for the text-model tests: configs with random weights, saved with
save_pretrained, and a word-level tokenizer built locally with `tokenizers` (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "red",
    "blue",
    "big",
    "small",
    "house",
    "tree",
    "bird",
    "sang",
]
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran fast",
    "the big red house",
    "a small blue bird sang",
    "the tree",
    "a slow dog sat on a big mat",
]


def tokenizer_file(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{word: i + 2 for i, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))


def bert_folder(folder: Path, *, labels: int | None = None, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32) with weights and a tokenizer; a classifier when `labels` is given."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=labels or 2,
    )
    model = BertForSequenceClassification(config) if labels else BertModel(config)
    model.eval().save_pretrained(folder)
    tokenizer_file(folder)
    return folder


def gpt2_folder(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (hidden 32, 64 positions) with weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


def config_only(folder: Path, **config: object) -> Path:
    """A folder with a config.json and nothing else (for checks that need no transformers)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


# A two-input text model with a dict output, as a factory module's source (written next to a suite).
TAGGER_FACTORY = """
from torch import nn


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        hidden = self.embed(input_ids) * attention_mask.unsqueeze(-1)
        return {"hidden": hidden, "logits": self.head(hidden.mean(dim=1))}


def tagger():
    return Tagger()
"""
