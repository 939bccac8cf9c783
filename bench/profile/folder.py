"""What a profile folder holds (bench.profile.profiler writes it, the report reads it): the columns of
ops.csv and memory.csv, the summary's name, the memory phases, and what a FLOPs figure counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OPS_COLUMNS = [
    "op",  # operator (torch) or ONNX op type (onnxruntime), or a bracketed pseudo-row
    "calls",  # over all profiled iterations
    "calls_per_iter",
    "self_cpu_s",  # over all profiled iterations, every thread
    "total_cpu_s",  # self + children (torch); same as self for ORT nodes
    "self_cpu_pct",  # of the table's total self time
    "self_cpu_per_iter_s",
    "cpu_memory_bytes",  # torch: net CPU memory allocated by the op itself (allocs - frees), over all
    # iterations; ORT: bytes of the node's outputs (output_size), over all iterations
    "input_shapes",  # the shapes the op spent most self time on (up to 3 sets, most expensive first)
]
TOP_OPS = 15
PROFILE_SUMMARY = "profile.json"
MEMORY_CSV = "memory.csv"
MEMORY_COLUMNS = [
    "t_s",  # seconds since load began in the profiling process (time on the profiled calls is profiler time)
    "phase",  # load, first_inference (the first call) or steady (the profiled calls)
    "call",  # steady: which profiled call (0-based); empty otherwise
    "bytes",  # this allocation (+) or free (-)
    "allocated_bytes",  # live bytes torch's CPU allocator had handed out since load began, after this event
]
MEMORY_PHASES = ("load", "first_inference", "steady")
ALLOCATION_FIELDS = tuple(f"allocated_{p}_bytes" for p in (*MEMORY_PHASES, "per_call"))
FLOPS_NOTE = (
    "FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on the fp32 eager model: matmul, "
    "linear (addmm), convolution, bmm and the attention kernels it has formulas for, as 2 x multiply-adds. "
    "It does not count element-wise ops, activations, normalisation, pooling or bias adds (small next to "
    "matmuls/convolutions), quantized kernels (an int8 row reuses the fp32 count of the same model), nor "
    "ops it has no formula for, such as CPU scaled-dot-product attention (aten::_scaled_dot_product_"
    "flash_attention_for_cpu); those are listed in uncounted_ops."
)


def read_ops(path: Path | str) -> Any:
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, dtype={"input_shapes": str})
