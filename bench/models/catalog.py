"""Models by name: built-in tiny models and torchvision classification models (bench.models.sources: the user's own).

torchvision models are built with weights=None and a fixed seed: no hub, no download.
torch and torchvision are imported only to build a model, so that validating a suite stays fast.
"""

from __future__ import annotations

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


# torchvision's classification models (torchvision.models.list_models(module=torchvision.models)) in
# the pinned release: a suite's model names are checked against this list, because importing
# torchvision (and torch with it) to list them took 4.3 s of a 6.8 s `bench validate` on a 2-core
# host. tests/test_models.py fails when the installed torchvision lists other names.
TORCHVISION_MODELS: tuple[str, ...] = (
    "alexnet",
    "convnext_base",
    "convnext_large",
    "convnext_small",
    "convnext_tiny",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "efficientnet_v2_s",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5",
    "mnasnet0_75",
    "mnasnet1_0",
    "mnasnet1_3",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "regnet_x_16gf",
    "regnet_x_1_6gf",
    "regnet_x_32gf",
    "regnet_x_3_2gf",
    "regnet_x_400mf",
    "regnet_x_800mf",
    "regnet_x_8gf",
    "regnet_y_128gf",
    "regnet_y_16gf",
    "regnet_y_1_6gf",
    "regnet_y_32gf",
    "regnet_y_3_2gf",
    "regnet_y_400mf",
    "regnet_y_800mf",
    "regnet_y_8gf",
    "resnet101",
    "resnet152",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "resnext50_32x4d",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
    "squeezenet1_0",
    "squeezenet1_1",
    "swin_b",
    "swin_s",
    "swin_t",
    "swin_v2_b",
    "swin_v2_s",
    "swin_v2_t",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vit_b_16",
    "vit_b_32",
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
    "wide_resnet101_2",
    "wide_resnet50_2",
)


def is_known(name: str) -> bool:
    return name in BUILTIN or name in TORCHVISION_MODELS


def known_models() -> list[str]:
    return [*BUILTIN, *TORCHVISION_MODELS]


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
