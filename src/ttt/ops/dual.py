"""Mini-batch TTT in the dual form: the parallel form for prefill and training.

Within a mini-batch every gradient is taken at the start weights W, so the read-out of token i needs no per-token
weights. Per layer l of f, with X_l / X̄_l the key-side / query-side inputs, g_l = ∂ℓ/∂Z_l at W,
η[i, j] = tf_i lr_j for j ≤ i (0 above the diagonal) and (G_W, G_b) the gradient sums carried in from earlier calls:

    Z̄_l = X̄_l W_l + b_l − tf ⊙ (X̄_l G_W + G_b) − (η ⊙ (X̄_l X_lᵀ + 1)) g_l           # [B, H, b, F]
    X̄_{l+1} = gelu(Z̄_l),   z = q + LN(Z̄_last)

and the state moves on by G ← G + Σ_j lr_j ∇ℓ_j; a mini-batch that a row completes closes with W ← W − tf_{b−1} G,
G ← 0. Rows may start at different offsets inside a mini-batch (cache) and hold different numbers of real
tokens (padding): tokens are laid out on a grid aligned to each row's mini-batch boundaries, empty slots get
lr = 0, and a mini-batch closes only for the rows that fill it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .ln import TTT_LN_EPS, gelu_tanh
from .state import (
    Norm,
    TTTState,
    affine,
    backward_keys,
    forward_keys,
    loss_grad,
    num_layers,
    read_out,
    tmap,
    weight_grads,
)

# Per mini-batch: True (every row completes it), False (none does) or a [B] bool tensor.
Completion = bool | Tensor


def dual_mini_batch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    token_factor: Tensor,
    ln: Norm,
    params: tuple[Tensor, ...],
    grad_sums: tuple[Tensor, ...] | None,
    complete: Completion,
    residual: bool = True,
    eps: float = TTT_LN_EPS,
) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...] | None]:
    """One mini-batch. q, k, v: [B, H, b, D]; lr: [B, H, b]; token_factor: [b]; ln: ([H, 1, D], [H, 1, D]) or None."""
    inputs, preacts = forward_keys(params, k)
    grads_z = backward_keys(params, preacts, loss_grad(preacts[-1], k, v, ln, residual, eps))

    tf = token_factor.unsqueeze(-1)  # [b, 1]
    eta = torch.tril(tf * lr.unsqueeze(-2))  # [B, H, b, b]
    x = q
    for layer in range(num_layers(params)):
        attn = x @ inputs[layer].transpose(-1, -2)  # [B, H, b, b]
        has_bias = params[2 * layer + 1] is not None
        # the bias's gradient enters every read-out with weight 1: (X̄ Xᵀ + 1)
        z = (
            affine(x, params[2 * layer], params[2 * layer + 1])
            - (eta * (attn + 1.0 if has_bias else attn)) @ grads_z[layer]
        )
        if grad_sums is not None:
            z = z - tf * affine(x, grad_sums[2 * layer], grad_sums[2 * layer + 1])
        if layer + 1 < num_layers(params):
            x = gelu_tanh(z)
    out = read_out(q, z, ln, residual, eps)

    new_sums = weight_grads(params, inputs, grads_z, lr)
    if grad_sums is not None:
        new_sums = tmap(torch.add, grad_sums, new_sums)
    last = token_factor[-1]
    if complete is True:
        return out, tmap(lambda p, g: p - last * g, params, new_sums), None
    if complete is False:
        return out, params, new_sums
    c = complete.view(-1, 1, 1, 1)
    closed = tmap(lambda p, g: torch.where(c, p - last * g, p), params, new_sums)
    return out, closed, tmap(lambda g: torch.where(c, torch.zeros_like(g), g), new_sums)


def _to_grid(x: Tensor, slots: Tensor | None, front: int, grid_len: int) -> Tensor:
    """Lay x [B, T, ...] out on the aligned grid [B, grid_len, ...] (zeros in empty slots)."""
    if slots is None:
        pad = [0, 0] * (x.dim() - 2) + [front, grid_len - front - x.shape[1]]
        return F.pad(x, pad)
    grid = x.new_zeros((x.shape[0], grid_len + 1) + x.shape[2:])
    index = slots.view(slots.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return grid.scatter(1, index, x)[:, :grid_len]


def _from_grid(y: Tensor, slots: Tensor | None, front: int, seq_len: int) -> Tensor:
    if slots is None:
        return y[:, front : front + seq_len]
    index = slots.clamp(max=y.shape[1] - 1)
    return y.gather(1, index.view(index.shape + (1,) * (y.dim() - 2)).expand(index.shape + y.shape[2:]))


def ttt_dual(
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
    remat_mini_batch_group_size: int = 0,
    eps: float = TTT_LN_EPS,
) -> tuple[Tensor, TTTState]:
    """q, k, v: [B, T, H, D]; lr: [B, T, H]; token_factor: [b]; ln_weight, ln_bias: [H, D] (None: no LN);
    lengths: [B] or None.

    Row r uses its first lengths[r] tokens (the rest are padding: output 0, no effect on the state). With
    `remat_mini_batch_group_size` = g > 0 and autograd on, each group of g mini-batches is recomputed in backward.
    Returns z [B, T, H, D] and the state after each row's tokens.
    """
    batch, seq_len, heads, head_dim = q.shape
    b = token_factor.shape[0]
    if seq_len == 0:
        return q.new_zeros(q.shape), state
    offsets = state.offset.tolist()
    counts = [seq_len] * batch if lengths is None else [int(n) for n in lengths.tolist()]
    ends = [o + n for o, n in zip(offsets, counts)]
    n_mb = max(1, math.ceil(max(ends) / b))
    grid_len = n_mb * b

    uniform = len(set(offsets)) == 1 and all(n == seq_len for n in counts)
    slots, front = None, offsets[0]
    if not uniform:
        steps = torch.arange(seq_len, device=q.device)
        real = steps.unsqueeze(0) < torch.tensor(counts, device=q.device).unsqueeze(1)
        # padding tokens go to a scratch slot past the grid
        slots = torch.where(real, state.offset.unsqueeze(1) + steps.unsqueeze(0), grid_len)

    def mini_batches(x: Tensor) -> tuple[Tensor, ...]:
        # [B, grid_len, H, ...] -> n_mb × [B, H, b, ...]
        x = _to_grid(x, slots, front, grid_len)
        x = x.view(batch, n_mb, b, heads, -1).permute(1, 0, 3, 2, 4)
        return x.unbind(0)

    qs, ks, vs = mini_batches(q), mini_batches(k), mini_batches(v)
    lrs = tuple(x.squeeze(-1) for x in mini_batches(lr.unsqueeze(-1)))
    ln = None if ln_weight is None else (ln_weight.unsqueeze(1), ln_bias.unsqueeze(1))

    completions: list[Completion] = []
    for m in range(n_mb):
        done = [(m + 1) * b <= e for e in ends]
        completions.append(all(done) or (any(done) and torch.tensor(done, device=q.device)))

    def run(first: int, last: int, params, grad_sums):
        outs = []
        for m in range(first, last):
            out, params, grad_sums = dual_mini_batch(
                qs[m], ks[m], vs[m], lrs[m], token_factor, ln, params, grad_sums, completions[m], residual, eps
            )
            outs.append(out)
        return outs, params, grad_sums

    params, grad_sums = state.params, state.grad_sums
    group = remat_mini_batch_group_size if remat_mini_batch_group_size > 0 and torch.is_grad_enabled() else n_mb
    outs: list[Tensor] = []
    for first in range(0, n_mb, group):
        last = min(first + group, n_mb)
        if group < n_mb:
            chunk, params, grad_sums = checkpoint(run, first, last, params, grad_sums, use_reentrant=False)
        else:
            chunk, params, grad_sums = run(first, last, params, grad_sums)
        outs.extend(chunk)

    # n_mb × [B, H, b, D] -> [B, grid_len, H, D]
    out = torch.stack(outs, dim=1).permute(0, 1, 3, 2, 4).reshape(batch, grid_len, heads, head_dim)
    out = _from_grid(out, slots, front, seq_len)
    if slots is not None:
        out = out * (slots < grid_len).unsqueeze(-1).unsqueeze(-1).to(out.dtype)
    new_offset = torch.tensor([e % b for e in ends], dtype=torch.long, device=q.device)
    return out, TTTState(params, grad_sums, new_offset)
