"""Random inputs for the op tests (float64, tiny dims)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from ttt.ops import InnerSpec, TTTState

TOKEN_INPUTS = ("q", "k", "v", "lr")


def inner_params(kind: str, heads: int, dim: int, bias: bool = True, dtype=torch.float64) -> tuple:
    hidden = dim if kind == "linear" else 4 * dim
    shapes = [(dim, hidden), (hidden, dim)][: 1 if kind == "linear" else 2]
    params = []
    for d_in, d_out in shapes:
        params.append(0.3 * torch.randn(heads, d_in, d_out, dtype=dtype))
        params.append(0.1 * torch.randn(heads, 1, d_out, dtype=dtype) if bias else None)
    return tuple(params)


def op_inputs(batch: int, seq_len: int, heads: int, dim: int, b: int = 16, dtype=torch.float64) -> dict:
    q, k, v = (torch.randn(batch, seq_len, heads, dim, dtype=dtype) for _ in range(3))
    return dict(
        q=q,
        k=k,
        v=v,
        lr=torch.rand(batch, seq_len, heads, dtype=dtype),
        spec=InnerSpec(
            token_factor=(1.0 / torch.arange(1, b + 1, dtype=dtype) + 0.05 * torch.randn(b, dtype=dtype)).clamp_min(0),
            ln_weight=1 + 0.1 * torch.randn(heads, dim, dtype=dtype),
            ln_bias=0.1 * torch.randn(heads, dim, dtype=dtype),
        ),
    )


def tensors(inputs: dict) -> list[Tensor]:
    """Every tensor of `op_inputs`, the spec's included: q, k, v, lr, token_factor, ln_weight, ln_bias."""
    spec = inputs["spec"]
    return [inputs[name] for name in TOKEN_INPUTS] + [spec.token_factor, spec.ln_weight, spec.ln_bias]


def require_grad(inputs: dict) -> list[Tensor]:
    """Make every input tensor a leaf that requires grad; returns them (`tensors`)."""
    leaves = tensors(inputs)
    for t in leaves:
        t.requires_grad_()
    return leaves


def map_tokens(inputs: dict, fn: Callable[[Tensor], Tensor]) -> dict:
    """The inputs with fn applied to the per-token ones (q, k, v, lr); the spec is kept."""
    return {name: fn(t) if name in TOKEN_INPUTS else t for name, t in inputs.items()}


def with_spec(inputs: dict, **changes) -> dict:
    """The inputs with their spec's fields replaced (`dataclasses.replace`)."""
    return {**inputs, "spec": dataclasses.replace(inputs["spec"], **changes)}


def cast(inputs: dict, dtype: torch.dtype) -> dict:
    """The inputs, spec included, in `dtype`."""
    spec = inputs["spec"]
    moved = map_tokens(inputs, lambda t: t.to(dtype))
    ln_weight, ln_bias = spec.ln_weight.to(dtype), spec.ln_bias.to(dtype)
    return with_spec(moved, token_factor=spec.token_factor.to(dtype), ln_weight=ln_weight, ln_bias=ln_bias)


def initial_state(params: tuple, batch: int) -> TTTState:
    return TTTState.initial(params, batch)


def max_diff(a, b) -> float:
    if isinstance(a, (tuple, list)):
        return max((max_diff(x, y) for x, y in zip(a, b) if x is not None), default=0.0)
    return (a - b).abs().max().item() if a.numel() else 0.0


def rel_diff(a, b) -> float:
    """Largest |a − b| relative to the size of b (per tensor, floor 1): for gradients that reach 1e3."""
    if isinstance(a, (tuple, list)):
        return max((rel_diff(x, y) for x, y in zip(a, b) if x is not None), default=0.0)
    return max_diff(a, b) / max(1.0, b.abs().max().item() if b.numel() else 0.0)
