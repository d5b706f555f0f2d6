"""An exact, faster stand-in for transformers' Mamba mixer forward on CPUs without mamba_ssm / causal_conv1d.

Without those kernels, transformers 5 runs Mamba's reference PyTorch fallback, which takes seconds per step even for
tiny models here (6.5 s for the forward and backward of one d = 64 mixer on 64 × 64 tokens). `selective_ssm` computes
the same function from the same parameters with a plain sequential scan (tests/experiments/test_mqar.py checks it
against the mixer's own forward); `fast_mamba_scan()` swaps it into `MambaMixer.forward` for calls without a cache
or padding (training and evaluation forwards), and restores the original on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from transformers.models.mamba.modeling_mamba import MambaMixer


def selective_ssm(m: MambaMixer, x: Tensor) -> Tensor:
    """Mamba's block with the parameters of a transformers MambaMixer `m`, x [B, T, d] -> [B, T, d]:

    (u, g) = x W_in;  u ← silu(causal_conv(u));  (δ, B, C) = u W_x;  Δ = softplus(δ W_dt + b_dt)      # [B, T, E]
    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t u_t,  A = −exp(A_log)                                        # [B, E, N]
    y_t = C_t h_t + D u_t;  out = (y ⊙ silu(g)) W_out"""
    seq_len = x.shape[1]
    u, gate = m.in_proj(x).chunk(2, dim=-1)  # [B, T, E] each
    u = F.silu(m.conv1d(u.transpose(1, 2))[..., :seq_len]).transpose(1, 2)
    delta, B, C = torch.split(m.x_proj(u), [m.time_step_rank, m.ssm_state_size, m.ssm_state_size], dim=-1)
    dt = F.softplus(m.dt_proj(delta))  # [B, T, E]
    A = -torch.exp(m.A_log.float())  # [E, N]
    # time-major and contiguous, so each step of the scan reads one dense [B, E, N] block
    dt_t, u_t = dt.transpose(0, 1).contiguous(), u.transpose(0, 1).contiguous()  # [T, B, E]
    decay = torch.exp(dt_t.unsqueeze(-1) * A)  # [T, B, E, N]
    drive = (dt_t * u_t).unsqueeze(-1) * B.transpose(0, 1).unsqueeze(2)  # [T, B, E, N]
    h = torch.zeros_like(drive[0])
    ys = []
    for a_t, b_t, c_t in zip(decay.unbind(0), drive.unbind(0), C.transpose(0, 1).unbind(0)):
        h = a_t * h + b_t
        ys.append(h @ c_t.unsqueeze(-1))  # [B, E, 1]
    y = torch.cat(ys, -1).transpose(1, 2) + u * m.D  # [B, T, E]
    return m.out_proj(y * F.silu(gate))


@contextmanager
def fast_mamba_scan() -> Iterator[None]:
    """Within the block, transformers' MambaMixer runs `selective_ssm` when it gets no cache and no padding."""
    from transformers.models.mamba.modeling_mamba import MambaMixer

    original = MambaMixer.forward

    def forward(self, hidden_states: Tensor, attention_mask=None, **kwargs) -> Tensor:
        # the cache arrives as cache= (transformers >= 5.24) or cache_params= (earlier releases)
        has_cache = kwargs.get("cache") is not None or kwargs.get("cache_params") is not None
        if not has_cache and (attention_mask is None or bool(attention_mask.all())):
            return selective_ssm(self, hidden_states)
        return original(self, hidden_states, attention_mask=attention_mask, **kwargs)

    setattr(MambaMixer, "forward", forward)  # noqa: B010 (assigning a method: mypy refuses the attribute form)
    try:
        yield
    finally:
        setattr(MambaMixer, "forward", original)  # noqa: B010
