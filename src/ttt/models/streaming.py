"""Linear layers as streaming reductions for small-batch decode packages.

At batch 1 a decode step is matrix-vector products over weights that do not fit in cache: its cost is the bytes of
the weights over the memory bandwidth. One thread of torch's CPU matrix product reads a weight matrix at about half
the bandwidth a plain sum reaches (`python -m ttt.bench.fast_decode` reports the linear layers' share of a step and
the bandwidth measured in the same run). Written as an elementwise product summed over the input features,

    y[..., o] = Σ_i x[..., i] · W[o, i] (+ b[o]),

the same product is one reduction loop that inductor compiles into a single pass over W (the product is fused, never
materialized), which streams the weights near the bandwidth. At larger batches the matrix product reuses each weight
for several rows and wins, so packages use the reduction only up to `STREAMING_MAX_BATCH` rows.

Only the order of the additions differs from `F.linear` (float32: relative differences ~1e-7; tested).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .weights import BF16Linear, bf16_linear

# the largest batch size (rows per step) at which a package uses the reduction: whole ttt-linear-125m packages on one
# AVX-512 thread (`python -m ttt.bench.fast_decode --sizes 125m --batches 1 2 4 --compare-linears`; the figures are in
# docs/fast_inference.md) are 1.56x faster streaming at 1 row and at 2, and 1.17x slower at 4
STREAMING_MAX_BATCH = 2


def streaming_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`F.linear(x, weight, bias)` as a sum of products over the input features: x [..., in], weight [out, in],
    bias [out] -> [..., out], in the dtype of `x` and `weight` (which must match), accumulated in float32 when they
    are bfloat16 (as the matrix product does)."""
    if x.dtype != weight.dtype:
        raise ValueError(f"x is {x.dtype} and the weight {weight.dtype}: cast one first")
    acc = torch.promote_types(x.dtype, torch.float32)
    wide = x.unsqueeze(-2).to(acc) * weight.to(acc)  # [..., out, in], fused into the reduction by inductor
    out = wide.sum(-1).to(x.dtype)
    return out if bias is None else out + bias


def _forward(linear: nn.Linear) -> Callable[[Tensor], Tensor]:
    if type(linear) is BF16Linear:
        return lambda x: bf16_linear(x, linear.weight, linear.bias, streaming_linear)
    return lambda x: streaming_linear(x, linear.weight, linear.bias)


@contextmanager
def streaming_linears(model: nn.Module) -> Iterator[int]:
    """Within the block, `model`'s nn.Linear and BF16Linear layers compute through `streaming_linear` (for tracing a
    decode package); linear layers whose weight is a tensor subclass (torchao's int8 weights) are left as they are.
    Yields how many layers were switched."""
    switched: list[nn.Module] = []
    try:
        for module in model.modules():
            plain = isinstance(module, nn.Linear) and type(module) in (nn.Linear, BF16Linear)
            if plain and type(module.weight) is nn.Parameter:
                module.forward = _forward(module)  # type: ignore[arg-type]
                switched.append(module)
        yield len(switched)
    finally:
        for module in switched:
            del module.forward
