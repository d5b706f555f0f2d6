"""Mini-batch TTT with per-token inner weights: the form for any inner optimizer (Adam and Muon are not linear in
the gradient sum, so the dual form's trick does not apply).

Per mini-batch, with every gradient at the start weights W (per layer l: X_l the key-side inputs, g_l = ∂ℓ/∂Z_l):

    G_i = G_in + Σ_{j ≤ i} lr_j ∇ℓ_j         ∇_{W_l} ℓ_j = X_l,jᵀ g_l,j,  ∇_{b_l} ℓ_j = g_l,j    # [B, H, b, ...]
    W_i = c_i W − tf_i U(G_i; S, n)                                                              # per token
    z_i = q_i + LN(f(q_i; W_i))

It holds b copies of the inner weights per head and applies them with batched matrix-vector products, so it costs
O(b · |W|) memory per head and mini-batch and is slower than the dual form, which it equals for GD (tested).
"""

from __future__ import annotations

from torch import Tensor

from .inner import (
    backward_keys,
    close_mini_batch,
    forward_keys,
    loss_grad,
    num_layers,
    read_out,
    retention_within,
)
from .ln import gelu_tanh
from .spec import InnerSpec
from .state import Params, TTTState, layer_weight, tmap


def token_gradient_sums(params: Params, inputs: list[Tensor], grads_z: list[Tensor], lr: Tensor) -> Params:
    """Σ_{j ≤ i} lr_j ∇ℓ_j for every token i: per layer X_jᵀ (lr_j g_j) and lr_j g_j, running sums over the slots.

    inputs/grads_z: [B, H, b, ·]; lr: [B, H, b]. Returns per parameter [B, H, b, ...] (None for no bias)."""
    out: list[Tensor | None] = []
    for layer, (x, g) in enumerate(zip(inputs, grads_z)):
        weighted = lr.unsqueeze(-1) * g  # [B, H, b, F]
        out.append((x.unsqueeze(-1) * weighted.unsqueeze(-2)).cumsum(2))  # [B, H, b, D_in, F]
        out.append(None if params[2 * layer + 1] is None else weighted.unsqueeze(-2).cumsum(2))  # [B, H, b, 1, F]
    return tuple(out)


def materialized_mini_batch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    retention: Tensor | None,
    spec: InnerSpec,
    carry: TTTState,
    complete: bool | Tensor,
) -> tuple[Tensor, TTTState]:
    """One mini-batch, same contract as `dual.dual_mini_batch`, for any optimizer."""
    optimizer, ln, residual, eps = spec.optimizer, spec.norm, spec.residual, spec.eps
    params = carry.params
    slots = q.shape[-2]
    inputs, preacts = forward_keys(params, k)
    grads_z = backward_keys(params, preacts, loss_grad(preacts[-1], k, v, ln, residual, eps))

    running = token_gradient_sums(params, inputs, grads_z, lr)
    if carry.grad_sums is not None:
        running = tmap(lambda r, g: r + g.unsqueeze(2), running, carry.grad_sums)
    buffers = carry.buffers_or_zeros(len(optimizer.buffer_names))
    per_token_buffers = tuple(tmap(lambda t: t.unsqueeze(2), kind) for kind in buffers)
    steps = carry.steps_or_zeros().view(-1, 1, 1, 1, 1)
    update, _ = optimizer.update(running, per_token_buffers, steps)

    decay = retention_within(carry.retention, retention)  # [B, H, b] or None
    c = None if decay is None else decay.unsqueeze(-1).unsqueeze(-1)  # [B, H, b, 1, 1]
    tf = spec.token_factor.view(slots, 1, 1)

    def weights(p: Tensor, u: Tensor) -> Tensor:
        start = p.unsqueeze(2)
        return (start if c is None else c * start) - tf * u

    per_token = tmap(weights, params, update)  # [B, H, b, ...]
    x = q.unsqueeze(-2)  # [B, H, b, 1, D]
    for layer in range(num_layers(params)):
        z = x @ layer_weight(per_token, layer)
        bias = per_token[2 * layer + 1]
        if bias is not None:
            z = z + bias
        if layer + 1 < num_layers(params):
            x = gelu_tanh(z)
    out = read_out(q, z.squeeze(-2), ln, residual, eps)

    new_sums = tmap(lambda r: r[:, :, -1], running)
    last = None if decay is None else decay[..., -1]
    return out, close_mini_batch(carry, new_sums, last, complete, spec.token_factor[-1], optimizer)
