"""Models by name: built-in tiny models and torchvision classification models (bench.sources: the user's own).

torchvision models are built with weights=None and a fixed seed: no hub, no download.
torch is imported lazily so that validating a suite of built-in models stays fast.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# name -> input shape without the batch dimension
BUILTIN: dict[str, tuple[int, ...]] = {
    "tiny_mlp": (64,),
    "tiny_cnn": (3, 32, 32),
    # A small BERT-like encoder over 32 tokens of 128 features (embeddings are outside).
    "small_transformer": (32, 128),
}
_TORCHVISION_SHAPES = {"inception_v3": (3, 299, 299)}
_TORCHVISION_DEFAULT_SHAPE = (3, 224, 224)


@functools.cache
def torchvision_models() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


def is_known(name: str) -> bool:
    return name in BUILTIN or name in torchvision_models()


def known_models() -> list[str]:
    return [*BUILTIN, *torchvision_models()]


def default_input_shape(name: str) -> tuple[int, ...]:
    if name in BUILTIN:
        return BUILTIN[name]
    return _TORCHVISION_SHAPES.get(name, _TORCHVISION_DEFAULT_SHAPE)


def build_model(name: str, seed: int = 0, device: Any = None, kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
    """A model in eval mode with seeded random weights (or on `device`, e.g. 'meta').

    `kwargs` go to the torchvision builder (e.g. num_classes for a user's checkpoint); the
    built-in models take none.
    """
    import torch

    torch.manual_seed(seed)
    with torch.device(device) if device is not None else nullcontext():
        if name in BUILTIN:
            if kwargs:
                raise ValueError(f"the built-in model {name} takes no kwargs, got {kwargs}")
            model = _build_builtin(name)
        else:
            import torchvision

            options: dict[str, Any] = {"weights": None}
            if name in ("inception_v3", "googlenet"):
                # Their auxiliary heads only matter for training; init_weights=False keeps
                # construction fast and silences the scipy-based init warning.
                options.update(aux_logits=False, init_weights=False)
            model = torchvision.models.get_model(name, **{**options, **(kwargs or {})})
    return model.eval()


def make_input(shape: tuple[int, ...], batch_size: int, seed: int = 0) -> torch.Tensor:
    """The seeded input every load mode and precision of a scenario sees."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randn((batch_size, *shape), generator=generator)


def _build_builtin(name: str) -> torch.nn.Module:
    from torch import nn

    if name == "tiny_mlp":
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "tiny_cnn":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )
    if name == "small_transformer":
        return _SmallTransformer()
    raise KeyError(name)


def _small_transformer_class() -> type:
    import torch.nn.functional as F  # noqa: N812 - the usual alias
    from torch import nn

    class EncoderBlock(nn.Module):
        """Post-norm self-attention and feed-forward, with plain Linear layers as in BERT.

        Written out rather than nn.TransformerEncoderLayer, whose inference fast path breaks
        once dynamic quantization has replaced its Linear layers.
        """

        def __init__(self, width: int = 128, heads: int = 4, hidden: int = 512) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)
            self.norm1 = nn.LayerNorm(width)
            self.ff1 = nn.Linear(width, hidden)
            self.ff2 = nn.Linear(hidden, width)
            self.norm2 = nn.LayerNorm(width)

        def forward(self, x):
            batch, tokens, width = x.shape
            qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            x = self.norm1(x + self.proj(attended.transpose(1, 2).reshape(batch, tokens, width)))
            return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))

    class SmallTransformer(nn.Module):
        """4 encoder blocks, width 128, 4 heads, mean-pooled into 10 classes."""

        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(*(EncoderBlock() for _ in range(4)))
            self.head = nn.Linear(128, 10)

        def forward(self, tokens):  # [batch, 32, 128] -> [batch, 10]
            return self.head(self.blocks(tokens).mean(dim=1))

    return SmallTransformer


def _SmallTransformer():  # noqa: N802 - reads like the class it builds
    return _small_transformer_class()()
