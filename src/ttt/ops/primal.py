"""Primal TTT step: the decode form. One token per row, explicit gradient sums, any per-row offset.

For the token at position i = offset of its row (all ops per head; U = G for the paper's GD, see inner_optim.py):

    G   ← G + lr ∇ℓ(W; k, v)                      (gradient at the mini-batch start weights W)
    c   ← c · r                                    (retention, 1 when off)
    z   = q + LN(f(q; c W − tf_i U(G)))            (computed as c (x W + b) − tf_i (x U_W + U_b) per layer)
    if i = b − 1:  W ← c W − tf_{b−1} U,  G ← 0,  c ← 1,  S ← advance(S),  offset ← 0;  else offset ← i + 1
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .inner import affine, backward_keys, close_mini_batch, forward_keys, loss_grad, num_layers, read_out, weight_grads
from .ln import gelu_tanh
from .spec import InnerSpec
from .state import TTTState, layer_weight, tmap


def ttt_primal_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    valid: Tensor | None = None,
    retention: Tensor | None = None,
) -> tuple[Tensor, TTTState]:
    """q, k, v: [B, H, D]; lr: [B, H]; spec: the loop's fixed part (`spec.py`); valid: [B] bool (False: a padding
    token, output 0 and state untouched); retention: [B, H] or None. Returns z [B, H, D] and the new state."""
    token_factor, optimizer, ln, residual, eps = spec.token_factor, spec.optimizer, spec.norm, spec.residual, spec.eps
    batch = q.shape[0]
    b = spec.mini_batch_size
    params = state.params
    if valid is not None:
        lr = lr * valid.to(lr.dtype).unsqueeze(-1)

    inputs, preacts = forward_keys(params, k.unsqueeze(-2))  # [B, H, 1, ·]
    grad_out = loss_grad(preacts[-1], k.unsqueeze(-2), v.unsqueeze(-2), ln, residual, eps)
    grads_z = backward_keys(params, preacts, grad_out)
    new_sums = weight_grads(params, inputs, grads_z, lr.unsqueeze(-1))
    if state.grad_sums is not None:
        new_sums = tmap(torch.add, state.grad_sums, new_sums)

    decay = state.retention
    if retention is not None:
        r = retention if valid is None else torch.where(valid.unsqueeze(-1), retention, torch.ones_like(retention))
        decay = r if decay is None else decay * r
    buffers = state.buffers_or_zeros(len(optimizer.buffer_names))
    steps = state.steps_or_zeros()
    update, next_buffers = optimizer.update(new_sums, buffers, steps.view(batch, 1, 1, 1))

    tf = token_factor[state.offset].view(batch, 1, 1, 1)
    c = None if decay is None else decay.unsqueeze(-1).unsqueeze(-1)  # [B, H, 1, 1]
    x = q.unsqueeze(-2)
    for layer in range(num_layers(params)):
        base = affine(x, layer_weight(params, layer), params[2 * layer + 1])
        z = (base if c is None else c * base) - tf * affine(x, layer_weight(update, layer), update[2 * layer + 1])
        if layer + 1 < num_layers(params):
            x = gelu_tanh(z)
    out = read_out(q.unsqueeze(-2), z, ln, residual, eps).squeeze(-2)

    advance = torch.ones_like(state.offset) if valid is None else valid.long()
    offset = state.offset + advance
    close = offset == b
    if valid is not None:
        out = out * valid.to(out.dtype).view(batch, 1, 1)
    # the rows that filled their mini-batch close it with the update they just read out with; a padding token never
    # closes one, so it leaves the optimizer state as it was
    carry = dataclasses.replace(state, offset=torch.where(close, torch.zeros_like(offset), offset))
    new_state = close_mini_batch(carry, new_sums, decay, close, token_factor[-1], optimizer, (update, next_buffers))
    return out, new_state


def ttt_primal(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    lengths: Tensor | None = None,
    retention: Tensor | None = None,
) -> tuple[Tensor, TTTState]:
    """The primal step applied token by token over q, k, v [B, T, H, D] (same contract as `ttt_dual`)."""
    seq_len = q.shape[1]
    outs = []
    for t in range(seq_len):
        valid = None if lengths is None else lengths > t
        r_t = None if retention is None else retention[:, t]
        out, state = ttt_primal_step(q[:, t], k[:, t], v[:, t], lr[:, t], spec, state, valid, r_t)
        outs.append(out)
    if not outs:
        return q.new_zeros(q.shape), state
    return torch.stack(outs, dim=1), state
