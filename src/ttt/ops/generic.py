"""Mini-batch TTT with any `nn.Module` as the inner model ("hidden states can be any model").

Same η semantics as TTT-Linear / TTT-MLP, with the inner gradients from torch.func (functional_call + grad + vmap)
instead of hand-written backward passes. Per head h, the module's parameters θ_h start at the learned θ0_h; within a
mini-batch every gradient is taken at the mini-batch's start θ, token i reads out with

    θ_i = θ − tf_i Σ_{j ≤ i} lr_j ∇ℓ_j(θ),     z_i = q_i + LN(f(q_i; θ_i)),     ℓ_j = ½‖LN(f(k_j; θ)) − (v_j − k_j)‖²

and the next mini-batch starts from θ_{b−1}. It materialises θ_i for every token (b copies of the inner
parameters per head), so it is slower and larger than the specialised forms, which it is tested equal to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .spec import InnerSpec


def _ln(z: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return F.layer_norm(z, z.shape[-1:], eps=eps) * weight + bias


def ttt_generic(
    module: nn.Module,
    params: dict[str, Tensor],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
) -> tuple[Tensor, dict[str, Tensor]]:
    """module: the inner model for one head ([D] -> [D]); params: its initial parameters per head, name -> [H, ...];
    q, k, v: [B, T, H, D]; lr: [B, T, H]; spec: token factors [b] and the inner LN (`spec.py`). Returns
    z [B, T, H, D] and the final parameters name -> [B, H, ...] (after the last complete mini-batch; a trailing partial
    mini-batch is read out but, as at the end of a sequence in training, not carried).

    Raises ValueError for a spec other than the paper's loss (inner LN, residual, GD)."""
    ln_weight, ln_bias, token_factor, eps = spec.ln_weight, spec.ln_bias, spec.token_factor, spec.eps
    if ln_weight is None or ln_bias is None or not spec.residual or spec.optimizer.name != "gd":
        raise ValueError("ttt_generic runs the paper's inner loop only: inner LN, residual, GD")
    batch, seq_len, heads, dim = q.shape
    b = token_factor.shape[0]
    n_mb = max(1, math.ceil(seq_len / b))
    pad = n_mb * b - seq_len

    def grid(x: Tensor) -> Tensor:  # [B, T, H, ...] -> [n_mb, B, H, b, ...]
        x = F.pad(x, [0, 0] * (x.dim() - 2) + [0, pad])
        return x.unflatten(1, (n_mb, b)).transpose(2, 3).movedim(1, 0)

    qs, ks, vs = grid(q), grid(k), grid(v)
    lrs = grid(lr.unsqueeze(-1)).squeeze(-1)  # [n_mb, B, H, b]

    def loss(theta, k_j, v_j, gamma, beta):
        z = functional_call(module, theta, (k_j,))
        return 0.5 * (_ln(z, gamma, beta, eps) - (v_j - k_j)).pow(2).sum()

    def read_out(theta, q_i, gamma, beta):
        return q_i + _ln(functional_call(module, theta, (q_i,)), gamma, beta, eps)

    # per (row, head): gradients for each token of a mini-batch, read-outs with per-token parameters
    token_grads = vmap(vmap(vmap(grad(loss), in_dims=(None, 0, 0, None, None)), in_dims=(0, 0, 0, 0, 0)))
    token_reads = vmap(vmap(vmap(read_out, in_dims=(0, 0, None, None)), in_dims=(0, 0, 0, 0)))
    gamma = ln_weight.expand(batch, heads, dim)
    beta = ln_bias.expand(batch, heads, dim)
    theta = {name: p.unsqueeze(0).expand(batch, *p.shape) for name, p in params.items()}
    outs = []
    for m in range(n_mb):
        grads = token_grads(theta, ks[m], vs[m], gamma, beta)  # name -> [B, H, b, ...]
        per_token = {}
        for name, g in grads.items():
            weighted = lrs[m].view(*lrs[m].shape, *[1] * (g.dim() - 3)) * g
            tf = token_factor.view(b, *[1] * (g.dim() - 3))
            per_token[name] = theta[name].unsqueeze(2) - tf * weighted.cumsum(2)
        outs.append(token_reads(per_token, qs[m], gamma, beta))  # [B, H, b, D]
        if (m + 1) * b <= seq_len:
            theta = {name: p[:, :, -1] for name, p in per_token.items()}
    out = torch.stack(outs, 1).transpose(2, 3).flatten(1, 2)[:, :seq_len]  # [B, T, H, D]
    return out, theta
