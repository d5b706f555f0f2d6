"""The TTT hidden state carried between calls, and the inner model f applied to a mini-batch.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .ln import gelu_tanh, gelu_tanh_bwd, ln_fused_l2_bwd, ln_fwd


@dataclass
class TTTState:
    """Inner-model state of one TTT layer for a batch of sequences.

    params:    (W1, b1[, W2, b2]), each [B, H, ...]: the inner weights at the start of the current mini-batch.
    grad_sums: same shapes, Σ_j lr_j ∇ℓ_j over the tokens already seen in the current mini-batch; None means zero.
    offset:    [B] int64, how many tokens of the current mini-batch each row has seen (0 ≤ offset < b).
    """

    params: tuple[Tensor, ...]
    grad_sums: tuple[Tensor, ...] | None
    offset: Tensor

    @classmethod
    def initial(cls, params: tuple[Tensor, ...], batch_size: int) -> TTTState:
        """State at the start of a sequence: the learned W0 (each [H, ...]) for every row, no gradients yet."""
        device = params[0].device
        expanded = tmap(lambda p: p.unsqueeze(0).expand(batch_size, *p.shape), params)
        return cls(expanded, None, torch.zeros(batch_size, dtype=torch.long, device=device))

    @property
    def batch_size(self) -> int:
        return self.params[0].shape[0]

    def grad_sums_or_zeros(self) -> tuple[Tensor, ...]:
        if self.grad_sums is not None:
            return self.grad_sums
        return tmap(torch.zeros_like, self.params)

    def map(self, fn) -> TTTState:
        """Apply `fn` to every tensor (e.g. index_select on the batch dim, `.to(device)`, `.detach()`)."""
        grads = None if self.grad_sums is None else tmap(fn, self.grad_sums)
        return TTTState(tmap(fn, self.params), grads, fn(self.offset))


def tmap(fn, first: tuple, *rest: tuple) -> tuple:
    """Apply fn elementwise over parallel tuples of tensors, keeping None (an absent bias) as None."""
    return tuple(None if a is None else fn(a, *others) for a, *others in zip(first, *rest))


def affine(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x @ weight if bias is None else x @ weight + bias


def num_layers(params: tuple[Tensor, ...]) -> int:
    return len(params) // 2


def forward_keys(params: tuple[Tensor, ...], x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Run f on a mini-batch of keys, keeping what the backward needs.

    x: [B, H, N, D]. Returns the input X_l and the pre-activation Z_l = X_l W_l + b_l of every layer l.
    """
    inputs, preacts = [], []
    for layer in range(num_layers(params)):
        if layer > 0:
            x = gelu_tanh(preacts[-1])
        inputs.append(x)
        preacts.append(affine(x, params[2 * layer], params[2 * layer + 1]))
    return inputs, preacts


def backward_keys(params: tuple[Tensor, ...], preacts: list[Tensor], grad_out: Tensor) -> list[Tensor]:
    """∂ℓ/∂Z_l for every layer, from ∂ℓ/∂Z_last: ∂ℓ/∂Z_{l−1} = (∂ℓ/∂Z_l W_lᵀ) ⊙ gelu'(Z_{l−1})."""
    grads = [grad_out]
    for layer in range(num_layers(params) - 1, 0, -1):
        grads.insert(0, (grads[0] @ params[2 * layer].transpose(-1, -2)) * gelu_tanh_bwd(preacts[layer - 1]))
    return grads


def weight_grads(
    params: tuple[Tensor, ...], inputs: list[Tensor], grads_z: list[Tensor], lr: Tensor
) -> tuple[Tensor, ...]:
    """Σ_j lr_j ∇ℓ_j for every inner parameter: (X_lᵀ (lr ⊙ ∂ℓ/∂Z_l), Σ_j lr_j ∂ℓ/∂Z_l,j) per layer.

    inputs/grads_z: [B, H, N, ·]; lr: [B, H, N]. Returns tensors shaped like the state params (None for no bias).
    """
    out = []
    for layer, (x, g) in enumerate(zip(inputs, grads_z)):
        weighted = lr.unsqueeze(-1) * g
        out.append(x.transpose(-1, -2) @ weighted)
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
