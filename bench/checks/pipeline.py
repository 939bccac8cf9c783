"""The input pipeline as a measured stage: images from a folder to top-k predictions.

A suite's `data:` block points at an ImageFolder-layout folder (one sub-folder per class).
After the timed steady state, the worker pushes every image through the standard
torchvision transforms (Resize, CenterCrop, ToTensor, Normalize) and a DataLoader with the
scenario's batch size, and times each batch's stages apart:

- `load_preprocess`: waiting for the next batch (file reading, decoding, transforms;
  in the worker's own process when `loader_workers` is 0, else in the loader's processes),
- `copy`: turning the batch into what the runtime takes (dtype, contiguity, numpy for ORT),
- `inference`: the model call,
- `postprocess`: softmax and top-k.

With labels (the sub-folder names), it also counts top-1 / top-5 accuracy.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.schema import Context, Invalid, Where, integer, key

STAGES = ("load_preprocess", "copy", "inference", "postprocess")
CLASS_INDEX_CHOICES = ("sorted", "name")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _folder(value: Any, where: Where, context: Context) -> str:
    if not isinstance(value, str):
        raise Invalid(where, "expected the path of an image folder (FOLDER/CLASS/IMAGE)")
    folder = Path(context.path(value))
    if not folder.is_dir():
        raise Invalid(where, f"{folder} is not a folder")
    return str(folder)


def _class_index(value: Any, where: Where, context: Context) -> str:
    if not isinstance(value, str):
        raise Invalid(where, f"expected 'sorted', 'name' or a JSON file, got {value!r}")
    if value in CLASS_INDEX_CHOICES:
        return value
    path = context.path(value)
    if not Path(path).is_file():
        raise Invalid(where, f"expected 'sorted', 'name' or a JSON file; {path} is none")
    return path


def _channels(value: Any, where: Where, context: Context) -> tuple[float, ...]:
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(n, int | float) and not isinstance(n, bool) for n in value)
    ):
        raise Invalid(where, f"expected three numbers, one per colour channel, got {value!r}")
    return tuple(float(n) for n in value)


@dataclass(frozen=True)
class DataSpec:
    """The suite's `data:` block."""

    folder: str = key(_folder, required="has no 'folder': the path of an image folder (FOLDER/CLASS/IMAGE)")
    # How a sub-folder maps to the model's class index: `sorted` (ImageFolder's order, right
    # for a folder with every class, e.g. ImageNet's val set by WordNet id), `name` (sub-folders
    # are named by the class number, e.g. 0/, 207/), or a JSON file {"sub-folder": index}.
    class_index: str = key(_class_index, default="sorted")
    resize: int | None = key(integer(1), default=None)  # shorter side before the center crop; default crop * 256 / 224
    loader_workers: int = key(integer(0), default=0)
    max_images: int | None = key(integer(1), default=None)
    mean: tuple[float, ...] = key(_channels, default=IMAGENET_MEAN)
    std: tuple[float, ...] = key(_channels, default=IMAGENET_STD)


@dataclass
class PipelineResult:
    images: int = 0
    stage_times_s: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    top1_correct: int = 0
    top5_correct: int = 0
    classes: int = 0  # outputs of the model: top-5 means little with fewer than ~10

    def figures(self) -> dict[str, Any]:
        """The record's `pipeline` fields: medians per batch (the first batch pays one-time
        costs such as starting the loader) and totals over every batch."""
        median = {stage: statistics.median(times) for stage, times in self.stage_times_s.items()}
        total = {stage: sum(times) for stage, times in self.stage_times_s.items()}
        return {
            "images": self.images,
            "batches": len(self.stage_times_s["inference"]),
            "stage_median_s": median,
            "stage_total_s": total,
            "end_to_end_images_per_s": self.images / sum(total.values()),
            "top1_accuracy": self.top1_correct / self.images,
            "top5_accuracy": self.top5_correct / self.images,
            "classes": self.classes,
        }


def check_data_spec(spec: DataSpec, input_shape: tuple[int, ...]) -> str | None:
    """Why this spec cannot feed a model of `input_shape` (None when it can)."""
    if len(input_shape) != 3 or input_shape[0] != 3 or input_shape[1] != input_shape[2]:
        return f"an image pipeline makes square RGB inputs [3, N, N]; the scenario's input_shape is {list(input_shape)}"
    folder = Path(spec.folder)
    if not folder.is_dir():
        return f"data.folder {spec.folder} is not a folder"
    classes = [p for p in folder.iterdir() if p.is_dir()]
    if not classes:
        return (
            f"data.folder {spec.folder} has no class sub-folders (expected the ImageFolder layout: FOLDER/CLASS/IMAGE)"
        )
    if spec.class_index == "name" and not all(p.name.isdigit() for p in classes):
        bad = sorted(p.name for p in classes if not p.name.isdigit())[:3]
        return f"data.class_index is 'name' but these sub-folders are not class numbers: {', '.join(bad)}"
    return None


def build_loader(spec: DataSpec, input_shape: tuple[int, ...], batch_size: int, *, drop_last: bool = False) -> Any:
    """A DataLoader over the folder with the standard transforms sized to the scenario's input.

    `drop_last`: leave out a last, smaller batch (for a model whose batch size is fixed)."""
    import torch
    from torchvision import datasets, transforms

    crop = input_shape[-1]
    transform = transforms.Compose(
        [
            transforms.Resize(spec.resize or round(crop * 256 / 224)),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )
    dataset = datasets.ImageFolder(spec.folder, transform=transform, target_transform=_target_map(spec))
    if spec.max_images is not None and spec.max_images < len(dataset):
        # evenly strided, not the first N: ImageFolder lists images class by class
        dataset = torch.utils.data.Subset(dataset, evenly_spaced(len(dataset), spec.max_images))
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=spec.loader_workers, drop_last=drop_last
    )


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total), first and last included when count > 1."""
    if count <= 1:
        return list(range(min(count, total)))
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


def _target_map(spec: DataSpec) -> Callable[[int], int] | None:
    """ImageFolder numbers sub-folders in sorted order; map that number to the model's class index."""
    if spec.class_index == "sorted":
        return None
    names = sorted(p.name for p in Path(spec.folder).iterdir() if p.is_dir())
    if spec.class_index == "name":
        table = [int(name) for name in names]
    else:
        mapping = json.loads(Path(spec.class_index).read_text(encoding="utf-8"))
        missing = [name for name in names if name not in mapping]
        if missing:
            raise ValueError(f"data.class_index {spec.class_index} has no entry for sub-folder(s) {missing[:3]}")
        table = [int(mapping[name]) for name in names]
    return table.__getitem__


def run_pipeline(
    loader: Any, infer: Callable[[Any], Any], to_runtime_input: Callable[[Any], Any], *, topk: int = 5
) -> PipelineResult:
    """Every batch through the four stages, each timed on its own; accuracy against the labels."""
    import torch

    result = PipelineResult()
    times = result.stage_times_s
    batches = iter(loader)
    while True:
        started = time.perf_counter()
        try:
            images, labels = next(batches)
        except StopIteration:
            break
        loaded = time.perf_counter()
        runtime_input = to_runtime_input(images)
        copied = time.perf_counter()
        output = infer(runtime_input)
        inferred = time.perf_counter()
        logits = output if isinstance(output, torch.Tensor) else torch.from_numpy(output)
        probabilities = torch.softmax(logits.float(), dim=1)
        top = probabilities.topk(min(topk, probabilities.shape[1]), dim=1).indices
        done = time.perf_counter()

        for stage, seconds in zip(
            STAGES, (loaded - started, copied - loaded, inferred - copied, done - inferred), strict=True
        ):
            times[stage].append(seconds)
        result.images += len(labels)
        result.classes = probabilities.shape[1]
        hits = top.eq(labels.unsqueeze(1))
        result.top1_correct += int(hits[:, 0].sum())
        result.top5_correct += int(hits.any(dim=1).sum())
    return result


def write_image_folder(folder: Path, *, classes: int, per_class: int, size: int = 48, seed: int = 0) -> Path:
    """A small labelled ImageFolder of synthetic JPEGs: class c's images are tinted towards colour c.

    For tests and demos of the pipeline's timing; its labels are learnable by a model that
    looks at mean colour, not by a random-weight network.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in range(classes):
        target = folder / f"{label:03d}"
        target.mkdir(parents=True, exist_ok=True)
        tint = np.zeros(3)
        tint[label % 3] = 120.0
        for index in range(per_class):
            pixels = rng.integers(0, 100, size=(size, size + 8 * (index % 3), 3)) + tint
            Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(target / f"{index:04d}.jpg", quality=90)
    return folder
