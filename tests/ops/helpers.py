"""Random inputs for the op tests (float64, tiny dims)."""

from __future__ import annotations

import torch

from ttt.ops import TTTState


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
        token_factor=(1.0 / torch.arange(1, b + 1, dtype=dtype) + 0.05 * torch.randn(b, dtype=dtype)).clamp_min(0),
        ln_weight=1 + 0.1 * torch.randn(heads, dim, dtype=dtype),
        ln_bias=0.1 * torch.randn(heads, dim, dtype=dtype),
    )


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
