"""Rotary position embedding as the official TTT code applies it: on Q and K only, θ = 10000, the JAX interleaved
pair convention, and position = position mod mini_batch_size (so RoPE only orders tokens inside a mini-batch).

For each pair (x_{2i}, x_{2i+1}) and angle a = p · θ^(−2i/D):

    x'_{2i}   = x_{2i} cos a − x_{2i+1} sin a
    x'_{2i+1} = x_{2i+1} cos a + x_{2i} sin a
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_table(num_positions: int, head_dim: int, theta: float, dtype: torch.dtype, device) -> tuple[Tensor, Tensor]:
    """cos, sin: [num_positions, head_dim / 2], computed in float64 on the CPU (MPS has no float64), then cast."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1) * inv_freq
    return angles.cos().to(device=device, dtype=dtype), angles.sin().to(device=device, dtype=dtype)


def apply_rope(x: Tensor, positions: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [B, T, H, D]; positions: [B, T] int64 indices into the table."""
    c = cos[positions].unsqueeze(2)  # [B, T, 1, D/2]
    s = sin[positions].unsqueeze(2)
    even, odd = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((even * c - odd * s, odd * c + even * s), dim=-1).flatten(-2)
