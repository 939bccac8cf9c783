"""Output fidelity: how far a precision or format moves a model's outputs from fp32 eager.

Randomly initialised classifiers give outputs dominated by an input-independent part (the
same class wins for every input), so raw logits would make any precision look perfect.
Cosine similarity and top-1 agreement are therefore computed on the *input-dependent*
part: each output minus the reference's mean output over the fidelity inputs. The max
absolute error is on the raw outputs.

Quantization can also take that part away: where activations fall below a quantizer's step
(a random-weight mobilenet_v3_small's are ~1e-9), the output comes out the same for every
input and its cosine is noise. `input_dependence` says so: the output's spread over the
inputs (each minus its own mean) against the reference's, ~1 when the output still follows
the input, ~0 when it no longer does.
"""

from __future__ import annotations

from typing import Any

FIDELITY_INPUTS = 4
# Below this input_dependence the output varies too little over the inputs for cosine or top-1 to mean anything.
INPUT_DEPENDENCE_FLOOR = 0.1


def compare(output: Any, reference: Any) -> dict[str, Any]:
    """Fidelity of `output` against `reference`, both [inputs, ...] and convertible to float32 tensors."""
    import torch

    out = torch.as_tensor(output).float().flatten(1)
    ref = torch.as_tensor(reference).float().flatten(1)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    non_finite = int((~torch.isfinite(out)).sum())
    if non_finite:  # NaN/inf (e.g. fp16 overflow): no meaningful distance, and JSON has no NaN
        return {
            "max_abs_error": None,
            "cosine_similarity": None,
            "top1_agreement": None,
            "inputs": out.shape[0],
            "non_finite_outputs": non_finite,
            "input_dependence": None,
        }
    center = ref.mean(dim=0, keepdim=True)
    out_c, ref_c = out - center, ref - center
    return {
        "max_abs_error": float((out - ref).abs().max()),
        "cosine_similarity": float(row_cosines(out_c, ref_c).mean()),
        "top1_agreement": float((out_c.argmax(dim=1) == ref_c.argmax(dim=1)).float().mean()),
        "inputs": out.shape[0],
        "non_finite_outputs": 0,
        "input_dependence": input_dependence(out, ref),
    }


def is_flat(input_dependence: float | None) -> bool:
    """Whether an output varied too little over the fidelity inputs for its cosine or top-1 to mean anything."""
    return input_dependence is not None and input_dependence < INPUT_DEPENDENCE_FLOOR


def input_dependence(output: Any, reference: Any) -> float | None:
    """How much `output` [inputs, features] varies from input to input, relative to `reference`:
    the Frobenius norm of each minus its own mean over the inputs, in float64 (outputs can be
    ~1e-9). None when the reference itself is the same for every input (nothing to compare)."""
    out, ref = output.double(), reference.double()
    ref_spread = float((ref - ref.mean(dim=0, keepdim=True)).norm())
    if not ref_spread > 0:
        return None
    return float((out - out.mean(dim=0, keepdim=True)).norm()) / ref_spread


def row_cosines(a: Any, b: Any) -> Any:
    """Cosine similarity of each row pair, in float64 and without torch's eps clamp on the norms:
    a randomly initialised network's activations can vanish (mobilenet_v3_small's logits are
    ~1e-9), and torch.nn.functional.cosine_similarity's clamp at 1e-8 turned identical outputs of
    that size into a cosine of 0.06. A zero row is identical to a zero row and orthogonal to others."""
    import torch

    a, b = a.double(), b.double()
    norms = a.norm(dim=1) * b.norm(dim=1)
    both_zero = (a.abs().sum(dim=1) == 0) & (b.abs().sum(dim=1) == 0)
    cosines = (a * b).sum(dim=1) / norms.clamp(min=torch.finfo(torch.float64).tiny)
    return torch.where(norms > 0, cosines, both_zero.double())


# ---------------------------------------------------------------- text tasks (models with named inputs)

TOKEN_FIDELITY_INPUTS = 16  # samples: enough neighbours for nearest-neighbour agreement to mean something
# Fewer distinct samples leave each one a single other to pick: agreement is then 1 by construction.
NEIGHBOUR_MIN_SAMPLES = 3
METRICS = {
    None: "centered outputs: cosine and top-1 of each output minus the reference's mean output",
    "feature-extraction": "mask-aware mean-pooled embeddings: cosine per sample (min, median) and "
    "nearest-neighbour agreement among the samples",
    "text-classification": "logits: top-1 agreement and max abs logit error",
    "causal-lm": "next-token logits at every unmasked position: top-1 agreement and KL(reference || output)",
}


def compare_task(
    task: str | None, output: Any, reference: Any, mask: Any = None, named: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fidelity as the task reads a model's output, named in `metric`. `mask` ([samples, seq], 1 for
    a real token) keeps padding out of pooling and next-token figures. Never an argmax over
    embedding dimensions.

    `named` (the samples' named inputs, each [samples, ...]): samples whose inputs repeat an earlier
    sample's exactly are left out (counted in `duplicate_inputs`; `inputs` is the distinct samples
    compared). A `text:` file with fewer sentences than the samples repeats them, and identical
    samples tie as each other's nearest neighbour, so float noise picked the winner: fp32 ONNX
    Runtime against fp32 eager (max abs error 5e-7) read 0.81. A figure left null for want of
    distinct samples says why in `note`."""
    if task is None:
        return {**compare(output, reference), "metric": METRICS[None]}
    import torch

    out = torch.as_tensor(output).float()
    ref = torch.as_tensor(reference).float()
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} differs from the reference's {tuple(ref.shape)}")
    keep = distinct_samples(named) if named else list(range(out.shape[0]))
    duplicates = out.shape[0] - len(keep)
    if duplicates:
        out, ref = out[keep], ref[keep]
        mask = None if mask is None else torch.as_tensor(mask)[keep]
    base = {
        "metric": METRICS[task],
        "inputs": out.shape[0],
        "max_abs_error": None,
        "cosine_similarity": None,
        "top1_agreement": None,
        "non_finite_outputs": int((~torch.isfinite(out)).sum()),
        "duplicate_inputs": duplicates,
        "note": None,
    }
    if base["non_finite_outputs"]:
        return base
    base["max_abs_error"] = float((out - ref).abs().max())
    if task == "feature-extraction":
        return {**base, **_embedding_figures(out, ref, mask)}
    if task == "text-classification":
        flat_out, flat_ref = out.flatten(1), ref.flatten(1)
        return {**base, "top1_agreement": float((flat_out.argmax(1) == flat_ref.argmax(1)).float().mean())}
    # causal-lm: [samples, seq, vocab]; every real position predicts its next token
    keep = _mask_of(mask, out.shape[:2]).reshape(-1).bool()
    out_pos, ref_pos = out.reshape(-1, out.shape[-1])[keep], ref.reshape(-1, ref.shape[-1])[keep]
    log_ref, log_out = ref_pos.log_softmax(-1), out_pos.log_softmax(-1)
    kl = (log_ref.exp() * (log_ref - log_out)).sum(-1).clamp(min=0)  # >= 0; rounding can dip below
    return {
        **base,
        "top1_agreement": float((out_pos.argmax(-1) == ref_pos.argmax(-1)).float().mean()),
        "kl_divergence_mean": float(kl.mean()),
        "kl_divergence_max": float(kl.max()),
        "positions": int(keep.sum()),
    }


def _mask_of(mask: Any, shape: Any) -> Any:
    import torch

    return torch.ones(tuple(shape)) if mask is None else torch.as_tensor(mask).float()


def _embedding_figures(out: Any, ref: Any, mask: Any) -> dict[str, Any]:
    """[samples, seq, hidden] (or already pooled [samples, hidden]) -> pooled cosine and neighbours."""
    import torch

    if out.dim() == 3:
        weights = _mask_of(mask, out.shape[:2]).unsqueeze(-1)
        out = (out * weights).sum(1) / weights.sum(1).clamp(min=1)
        ref = (ref * weights).sum(1) / weights.sum(1).clamp(min=1)
    out, ref = out.flatten(1), ref.flatten(1)
    cosine = row_cosines(out, ref)
    figures = {
        "cosine_similarity": float(cosine.median()),
        "cosine_min": float(cosine.min()),
        "cosine_median": float(cosine.median()),
        "nearest_neighbour_agreement": None,
    }
    if out.shape[0] < NEIGHBOUR_MIN_SAMPLES:
        figures["note"] = (
            f"no nearest-neighbour agreement: {out.shape[0]} distinct sample(s), it needs at least "
            f"{NEIGHBOUR_MIN_SAMPLES} (a text: file with fewer sentences than the samples repeats "
            "them, and repeats are left out)"
        )
    else:  # each sample's most similar other sample, in both

        def neighbours(x: Any) -> Any:
            unit = torch.nn.functional.normalize(x.double(), dim=1, eps=torch.finfo(torch.float64).tiny)
            similarity = unit @ unit.T
            similarity.fill_diagonal_(-float("inf"))
            return similarity.argmax(1)

        figures["nearest_neighbour_agreement"] = float((neighbours(out) == neighbours(ref)).float().mean())
    return figures


def distinct_samples(named: dict[str, Any]) -> list[int]:
    """Indices of the samples whose named inputs (each [samples, ...]) differ from every earlier sample's."""
    import torch

    tensors = [torch.as_tensor(value) for _, value in sorted(named.items())]
    seen: set[tuple[bytes, ...]] = set()
    keep = []
    for i in range(tensors[0].shape[0]):
        key = tuple(t[i].contiguous().numpy().tobytes() for t in tensors)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return keep
