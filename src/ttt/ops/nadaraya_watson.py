"""A TTT layer whose inner learner is the Nadaraya-Watson estimator (the paper's Theorem 2).

The learner "trains" on token s by storing the pair (k_s, v_s) and predicts by kernel regression with the kernel
κ(k, q) = exp(scale · kᵀq):

    f(q_t) = Σ_{s ≤ t} κ(k_s, q_t) v_s / Σ_{s ≤ t} κ(k_s, q_t)

which is causal softmax attention, softmax(scale · q Kᵀ) V. Its state is the set of pairs seen so far: it grows
with the context, the one documented exception to the fixed-size TTT state. Written token by token, as a learner;
the test compares it with torch's scaled_dot_product_attention.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def ttt_nadaraya_watson(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None) -> Tensor:
    """q, k, v: [B, T, H, D] -> z [B, T, H, D]; scale defaults to 1 / sqrt(D)."""
    batch, seq_len, heads, dim = q.shape
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    keys: list[Tensor] = []
    values: list[Tensor] = []
    outputs = []
    for t in range(seq_len):
        # train: the non-parametric learner memorises (k_t, v_t)
        keys.append(k[:, t])
        values.append(v[:, t])
        memory_k, memory_v = torch.stack(keys, 1), torch.stack(values, 1)  # [B, t+1, H, D]
        # predict: kernel-weighted average, computed stably (subtract the max exponent)
        logits = scale * torch.einsum("bshd,bhd->bsh", memory_k, q[:, t])
        weights = torch.exp(logits - logits.amax(1, keepdim=True))
        outputs.append(torch.einsum("bsh,bshd->bhd", weights, memory_v) / weights.sum(1).unsqueeze(-1))
    return torch.stack(outputs, 1) if outputs else q.new_zeros(q.shape)
