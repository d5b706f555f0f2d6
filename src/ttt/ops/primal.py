"""Primal TTT step: the decode form. One token per row, explicit gradient sums, any per-row offset.

For the token at position i = offset of its row (all ops per head):

    G   ← G + lr ∇ℓ(W; k, v)                      (gradient at the mini-batch start weights W)
    z   = q + LN(f(q; W − tf_i G))                 (computed as x W + b − tf_i (x G_W + G_b) per layer)
    if i = b − 1:  W ← W − tf_{b−1} G,  G ← 0,  offset ← 0;  else offset ← i + 1
"""

from __future__ import annotations

import torch
from torch import Tensor

from .ln import TTT_LN_EPS, gelu_tanh
from .state import TTTState, affine, backward_keys, forward_keys, loss_grad, num_layers, read_out, tmap, weight_grads


def ttt_primal_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    token_factor: Tensor,
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    state: TTTState,
    valid: Tensor | None = None,
    residual: bool = True,
    eps: float = TTT_LN_EPS,
) -> tuple[Tensor, TTTState]:
    """q, k, v: [B, H, D]; lr: [B, H]; token_factor: [b]; ln_*: [H, D]; valid: [B] bool (False: a padding token,
    output 0 and state untouched). Returns z [B, H, D] and the new state."""
    batch = q.shape[0]
    b = token_factor.shape[0]
    params = state.params
    ln = None if ln_weight is None else (ln_weight.unsqueeze(1), ln_bias.unsqueeze(1))
    if valid is not None:
        lr = lr * valid.to(lr.dtype).unsqueeze(-1)

    inputs, preacts = forward_keys(params, k.unsqueeze(-2))  # [B, H, 1, ·]
    grad_out = loss_grad(preacts[-1], k.unsqueeze(-2), v.unsqueeze(-2), ln, residual, eps)
    grads_z = backward_keys(params, preacts, grad_out)
    new_sums = weight_grads(params, inputs, grads_z, lr.unsqueeze(-1))
    if state.grad_sums is not None:
        new_sums = tmap(torch.add, state.grad_sums, new_sums)

    tf = token_factor[state.offset].view(batch, 1, 1, 1)
    x = q.unsqueeze(-2)
    for layer in range(num_layers(params)):
        z = affine(x, params[2 * layer], params[2 * layer + 1]) - tf * affine(
            x, new_sums[2 * layer], new_sums[2 * layer + 1]
        )
        if layer + 1 < num_layers(params):
            x = gelu_tanh(z)
    out = read_out(q.unsqueeze(-2), z, ln, residual, eps).squeeze(-2)

    advance = torch.ones_like(state.offset) if valid is None else valid.long()
    offset = state.offset + advance
    close = offset == b
    c = close.view(batch, 1, 1, 1)
    params = tmap(lambda p, g: torch.where(c, p - token_factor[-1] * g, p), params, new_sums)
    new_sums = tmap(lambda g: torch.where(c, torch.zeros_like(g), g), new_sums)
    if valid is not None:
        out = out * valid.to(out.dtype).view(batch, 1, 1)
    return out, TTTState(params, new_sums, torch.where(close, torch.zeros_like(offset), offset))


def ttt_primal(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    token_factor: Tensor,
    ln_weight: Tensor | None,
    ln_bias: Tensor | None,
    state: TTTState,
    lengths: Tensor | None = None,
    residual: bool = True,
    eps: float = TTT_LN_EPS,
) -> tuple[Tensor, TTTState]:
    """The primal step applied token by token over q, k, v [B, T, H, D] (same contract as `ttt_dual`)."""
    seq_len = q.shape[1]
    outs = []
    for t in range(seq_len):
        valid = None if lengths is None else lengths > t
        out, state = ttt_primal_step(
            q[:, t], k[:, t], v[:, t], lr[:, t], token_factor, ln_weight, ln_bias, state, valid, residual, eps
        )
        outs.append(out)
    if not outs:
        return q.new_zeros(q.shape), state
    return torch.stack(outs, dim=1), state
