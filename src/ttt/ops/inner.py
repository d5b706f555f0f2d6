"""The inner model f, its self-supervised loss and read-out, and closing a mini-batch: the math every form shares.

The inner model is a stack of affine maps with tanh-GELU between them, per head:

    TTT-Linear: f(x) = x W1 + b1                       params (W1 [D, D], b1 [1, D])
    TTT-MLP:    f(x) = gelu(x W1 + b1) W2 + b2         params (W1 [D, 4D], b1 [1, 4D], W2 [4D, D], b2 [1, D])

A bias may be None (an inner model without bias, as in the paper's Theorem 1); every function here keeps it None.

The loss and read-out (`ln` = (γ, β) [H, 1, D] or None for no LayerNorm, `residual` as in the official code):

    ℓ(W; k, v) = ½ ‖LN(f(k)) − (v − k)‖²         z = q + LN(f(q; W))          (residual, LN: the default)
    ℓ(W; k, v) = ½ ‖f(k) − v‖²                   z = f(q; W)                  (no residual, no LN)

Mini-batch TTT with mini-batch size b takes every gradient of a mini-batch at its start weights W. Token i of a
mini-batch (0-based position in it) reads out with

    W_i = W − tf_i · Σ_{j ≤ i} lr_j ∇ℓ_j(W),     tf_i = max(0, 1/(i+1) + learnable_token_idx[i])

and the next mini-batch starts from W_{b−1}. The state after any prefix of the sequence is therefore
(W, G = Σ_{j seen in this mini-batch} lr_j ∇ℓ_j(W), offset = tokens seen in this mini-batch), per batch row.
Other inner optimizers and weight decay (`inner_optim.py`) add the optimizer's buffers, the number of closed
mini-batches and the retention accumulated in the current mini-batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .inner_optim import InnerOptimizer
from .ln import gelu_tanh, gelu_tanh_bwd, ln_fused_l2_bwd, ln_fwd
from .state import Params, TTTState, layer_weight, tmap


def affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x @ weight if bias is None else x @ weight + bias


def num_layers(params: Params) -> int:
    return len(params) // 2


def forward_keys(params: Params, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Run f on a mini-batch of keys, keeping what the backward needs.

    x: [B, H, N, D]. Returns the input X_l and the pre-activation Z_l = X_l W_l + b_l of every layer l.
    """
    inputs: list[Tensor] = []
    preacts: list[Tensor] = []
    for layer in range(num_layers(params)):
        if layer > 0:
            x = gelu_tanh(preacts[-1])
        inputs.append(x)
        preacts.append(affine(x, layer_weight(params, layer), params[2 * layer + 1]))
    return inputs, preacts


def backward_keys(params: Params, preacts: list[Tensor], grad_out: Tensor) -> list[Tensor]:
    """∂ℓ/∂Z_l for every layer, from ∂ℓ/∂Z_last: ∂ℓ/∂Z_{l−1} = (∂ℓ/∂Z_l W_lᵀ) ⊙ gelu'(Z_{l−1})."""
    grads = [grad_out]
    for layer in range(num_layers(params) - 1, 0, -1):
        grads.insert(0, (grads[0] @ layer_weight(params, layer).transpose(-1, -2)) * gelu_tanh_bwd(preacts[layer - 1]))
    return grads


def weight_grads(params: Params, inputs: list[Tensor], grads_z: list[Tensor], lr: Tensor) -> Params:
    """Σ_j lr_j ∇ℓ_j for every inner parameter: (X_lᵀ (lr ⊙ ∂ℓ/∂Z_l), Σ_j lr_j ∂ℓ/∂Z_l,j) per layer.

    inputs/grads_z: [B, H, N, ·]; lr: [B, H, N]. Returns tensors shaped like the state params (None for no bias),
    in the state's dtype: under bf16 autocast the read-outs run in bf16 but the update stays in fp32.
    """
    out: list[Tensor | None] = []
    for layer, (x, g) in enumerate(zip(inputs, grads_z)):
        dtype = layer_weight(params, layer).dtype
        weighted = (lr.unsqueeze(-1) * g).to(dtype)
        with torch.autocast(x.device.type, enabled=False):
            out.append(x.to(dtype).transpose(-1, -2) @ weighted)
        out.append(None if params[2 * layer + 1] is None else weighted.sum(dim=-2, keepdim=True))
    return tuple(out)


Norm = tuple[Tensor, Tensor] | None


def loss_grad(z: Tensor, k: Tensor, v: Tensor, ln: Norm, residual: bool, eps: float) -> Tensor:
    """∂ℓ/∂f(k) for the reconstruction loss above, given z = f(k)."""
    target = v - k if residual else v
    return z - target if ln is None else ln_fused_l2_bwd(z, target, ln[0], ln[1], eps)


def read_out(q: Tensor, z: Tensor, ln: Norm, residual: bool, eps: float) -> Tensor:
    """The layer's output token from z = f(q; W_t)."""
    y = z if ln is None else ln_fwd(z, ln[0], ln[1], eps)
    return q + y if residual else y


def retention_within(carried: Tensor | None, retention: Tensor | None) -> Tensor | None:
    """c_i = c_in · Π_{j ≤ i} r_j for each slot of a mini-batch: carried [B, H] or None, retention [B, H, N] or None.
    Returns [B, H, N] or None (all ones)."""
    if retention is None:
        return None if carried is None else carried.unsqueeze(-1).expand(*carried.shape, 1)
    running = torch.cumprod(retention, dim=-1)
    return running if carried is None else carried.unsqueeze(-1) * running


def close_mini_batch(
    carry: TTTState,
    new_sums: Params,
    decay: Tensor | None,
    complete: bool | Tensor,
    last_factor: Tensor,
    optimizer: InnerOptimizer,
    update: tuple[Params, tuple[Params, ...]] | None = None,
) -> TTTState:
    """The state after a mini-batch whose gradient sum is now `new_sums` (G_{b−1}) and retention `decay` [B, H]
    (c_{b−1}, None for 1). Rows that complete it (complete: True, False or [B] bool) close it:
    W ← c W − tf_{b−1} U(G; S, n), G ← 0, c ← 1, S ← advance(S), n ← n + 1. `carry.offset` is passed through.
    `update`: (U, next buffers) when the caller has computed them already (the primal step reads out with U)."""
    if complete is False:
        return TTTState(carry.params, new_sums, carry.offset, carry.buffers, carry.steps, decay)
    buffers = carry.buffers_or_zeros(len(optimizer.buffer_names))
    steps = carry.steps_or_zeros()
    if update is None:
        update = optimizer.update(new_sums, buffers, steps.view(-1, 1, 1, 1))
    step, next_buffers = update
    c = None if decay is None else decay.unsqueeze(-1).unsqueeze(-1)
    closed = tmap(lambda p, u: (p if c is None else c * p) - last_factor * u, carry.params, step)
    if complete is True:
        closed_steps = steps + 1 if optimizer.needs_steps else None
        return TTTState(closed, None, carry.offset, next_buffers, closed_steps, None)
    shut = complete.view(-1, 1, 1, 1)

    def pick(new: Tensor, old: Tensor) -> Tensor:
        return torch.where(shut, new, old)

    return TTTState(
        params=tmap(pick, closed, carry.params),
        grad_sums=tmap(lambda g: torch.where(shut, torch.zeros_like(g), g), new_sums),
        offset=carry.offset,
        buffers=tuple(tmap(pick, n, o) for n, o in zip(next_buffers, buffers)),
        steps=steps + complete.long() if optimizer.needs_steps else None,
        retention=None if decay is None else torch.where(complete.unsqueeze(-1), torch.ones_like(decay), decay),
    )
