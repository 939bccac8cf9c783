"""Output fidelity: how far a precision or format moves a model's outputs from fp32 eager.

Randomly initialised classifiers give outputs dominated by an input-independent part (the
same class wins for every input), so raw logits would make any precision look perfect.
Cosine similarity and top-1 agreement are therefore computed on the *input-dependent*
part: each output minus the reference's mean output over the fidelity inputs. The max
absolute error is on the raw outputs.
"""

from __future__ import annotations

from typing import Any

FIDELITY_INPUTS = 4


def compare(output: Any, reference: Any) -> dict[str, Any]:
    """Fidelity of `output` against `reference`, both [inputs, ...] and convertible to float32 tensors."""
    import torch

    out = torch.as_tensor(output).float().flatten(1)
    ref = torch.as_tensor(reference).float().flatten(1)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    non_finite = int((~torch.isfinite(out)).sum())
    if non_finite:  # NaN/inf (e.g. fp16 overflow): no meaningful distance, and JSON has no NaN
        return {"max_abs_error": None, "cosine_similarity": None, "top1_agreement": None,
                "inputs": out.shape[0], "non_finite_outputs": non_finite}  # fmt: skip
    center = ref.mean(dim=0, keepdim=True)
    out_c, ref_c = out - center, ref - center
    return {
        "max_abs_error": float((out - ref).abs().max()),
        "cosine_similarity": float(torch.nn.functional.cosine_similarity(out_c, ref_c, dim=1).mean()),
        "top1_agreement": float((out_c.argmax(dim=1) == ref_c.argmax(dim=1)).float().mean()),
        "inputs": out.shape[0],
        "non_finite_outputs": 0,
    }
