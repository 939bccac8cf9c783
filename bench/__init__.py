"""CPU inference benchmarking and profiling for PyTorch and ONNX Runtime models."""

__version__ = "0.1.0"
