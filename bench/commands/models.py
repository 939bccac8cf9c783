"""`bench models`: the model names a suite can use."""

from __future__ import annotations

import argparse

from bench.models import catalog as models


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, summary: str) -> None:
    """Add `bench models` to the CLI's subcommands."""
    parser = commands.add_parser("models", parents=[common], help=summary, description="List model names.")
    parser.set_defaults(handler=models_command)


def models_command(args: argparse.Namespace) -> int:
    print("built-in (tiny, for tests):", ", ".join(models.BUILTIN))
    print("torchvision (weights=None, seeded):")
    for name in models.TORCHVISION_MODELS:
        print(f"  {name}")
    print("your own models (checkpoints, safetensors, factories, TorchScript / ONNX / .pt2 / .tflite files):")
    print("  a mapping in the suite's model list; see docs/your-own-models.md")
    return 0
