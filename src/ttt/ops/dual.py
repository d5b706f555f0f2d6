"""Mini-batch TTT in the dual form: the parallel form for prefill and training.

Within a mini-batch every gradient is taken at the start weights W, so the read-out of token i needs no per-token
weights. Per layer l of f, with X_l / X̄_l the key-side / query-side inputs, g_l = ∂ℓ/∂Z_l at W,
η[i, j] = tf_i lr_j for j ≤ i (0 above the diagonal) and (G_W, G_b) the gradient sums carried in from earlier calls:

    Z̄_l = X̄_l W_l + b_l − tf ⊙ (X̄_l G_W + G_b) − (η ⊙ (X̄_l X_lᵀ + 1)) g_l           # [B, H, b, F]
    X̄_{l+1} = gelu(Z̄_l),   z = q + LN(Z̄_last)

and the state moves on by G ← G + Σ_j lr_j ∇ℓ_j; a mini-batch that a row completes closes with W ← W − tf_{b−1} G,
G ← 0. This file is the kernel for one mini-batch (the paper's dual form, Sec. 2.5); `driver.py` lays a sequence
out in mini-batches and runs them (`ttt_dual`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .inner import (
    affine,
    backward_keys,
    close_mini_batch,
    forward_keys,
    loss_grad,
    num_layers,
    read_out,
    retention_within,
    weight_grads,
)
from .ln import gelu_tanh
from .spec import InnerSpec
from .state import TTTState, layer_weight, tmap

# Per mini-batch: True (every row completes it), False (none does) or a [B] bool tensor.
Completion = bool | Tensor


def dual_mini_batch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    retention: Tensor | None,
    spec: InnerSpec,
    carry: TTTState,
    complete: Completion,
) -> tuple[Tensor, TTTState]:
    """One mini-batch for an optimizer linear in G (gd, momentum: U(G_in + ΔG) = U(G_in) + ΔG).

    q, k, v: [B, H, b, D]; lr: [B, H, b]; retention: [B, H, b] or None; spec: the loop's fixed part (token factors
    [b], LN, residual, optimizer). Returns the output [B, H, b, D] and the state after the mini-batch.
    Raises ValueError for an optimizer not linear in the gradients (Adam, Muon: `materialized.py`).
    """
    optimizer, ln, residual, eps = spec.optimizer, spec.norm, spec.residual, spec.eps
    if not optimizer.is_linear:
        raise ValueError(f"the dual form needs an optimizer linear in the gradients, not {optimizer.name!r}")
    params, grad_sums = carry.params, carry.grad_sums
    inputs, preacts = forward_keys(params, k)
    grads_z = backward_keys(params, preacts, loss_grad(preacts[-1], k, v, ln, residual, eps))

    # what the read-outs see from before this call: U(G_in; S) (G_in for GD, β M + G_in with momentum)
    carried = grad_sums
    if optimizer.name != "gd":
        buffers = carry.buffers_or_zeros(len(optimizer.buffer_names))
        carried = optimizer.update(carry.grad_sums_or_zeros(), buffers, None)[0]
    decay = retention_within(carry.retention, retention)  # [B, H, b] or None
    c = None if decay is None else decay.unsqueeze(-1)

    tf = spec.token_factor.unsqueeze(-1)  # [b, 1]
    eta = torch.tril(tf * lr.unsqueeze(-2))  # [B, H, b, b]
    x = q
    for layer in range(num_layers(params)):
        attn = x @ inputs[layer].transpose(-1, -2)  # [B, H, b, b]
        has_bias = params[2 * layer + 1] is not None
        base = affine(x, layer_weight(params, layer), params[2 * layer + 1])
        # the bias's gradient enters every read-out with weight 1: (X̄ Xᵀ + 1)
        z = (base if c is None else c * base) - (eta * (attn + 1.0 if has_bias else attn)) @ grads_z[layer]
        if carried is not None:
            z = z - tf * affine(x, layer_weight(carried, layer), carried[2 * layer + 1])
        if layer + 1 < num_layers(params):
            x = gelu_tanh(z)
    out = read_out(q, z, ln, residual, eps)

    new_sums = weight_grads(params, inputs, grads_z, lr)
    if grad_sums is not None:
        new_sums = tmap(torch.add, grad_sums, new_sums)
    last = None if decay is None else decay[..., -1]
    return out, close_mini_batch(carry, new_sums, last, complete, spec.token_factor[-1], optimizer)
