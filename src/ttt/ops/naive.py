"""Naive TTT: the oracle. One token at a time, one batch row at a time, explicit per-token inner weights, inner
gradients from autograd. Written to be read, not to be fast; every other form is tested against it.

For token t of row r, at position i in its mini-batch (i counts from the cached offset):

    ℓ_t(W) = ½ Σ_h ‖LN_h(f_h(k_t; W)) − (v_t − k_t)‖²
    G     ← G + lr_t ∇_W ℓ_t(W)                 (W: weights at the start of the mini-batch)
    c     ← c · r_t                             (retention: weight decay / forget gate; 1 when off)
    W_t   = c W − tf_i U(G; S, n)               (U = G for the paper's GD; other optimizers in inner_optim.py)
    z_t   = q_t + LN(f(q_t; W_t))
    if i = b − 1:  W ← W_t, G ← 0, c ← 1, S ← advance(G; S), n ← n + 1
                                                (the next mini-batch starts from the last token's weights)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .ln import gelu_tanh
from .spec import InnerSpec
from .state import Params, TTTState, layer_weight, tmap


def _inner(params: Sequence[Tensor | None], x: Tensor) -> Tensor:
    """f(x) per head. x: [H, 1, D]; params W [H, Din, Dout], b [H, 1, Dout] or None."""
    for layer in range(len(params) // 2):
        if layer > 0:
            x = gelu_tanh(x)
        x = x @ layer_weight(params, layer)
        bias = params[2 * layer + 1]
        if bias is not None:
            x = x + bias
    return x


def _weights_at(W: Sequence[Tensor | None], U: Params, c: Tensor, token_factor: Tensor, i: int) -> list[Tensor | None]:
    """W_t = c W − tf_i U per inner parameter (None for an absent bias). W: [H, ...] each; c: [H]."""
    return list(tmap(lambda w, u: c.view(-1, 1, 1) * w - token_factor[i] * u, tuple(W), U))


def _layer_norm(z: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """Per-head LN (identity without one: `InnerSpec` gives both weight and bias or neither). z: [H, 1, D];
    weight, bias: [H, D]."""
    if weight is None or bias is None:
        return z
    return F.layer_norm(z, z.shape[-1:], eps=eps) * weight.unsqueeze(1) + bias.unsqueeze(1)


def ttt_naive(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    lengths: Tensor | None = None,
    retention: Tensor | None = None,
) -> tuple[Tensor, TTTState]:
    """q, k, v: [B, T, H, D]; lr: [B, T, H]; spec: the loop's fixed part (`spec.py`: token factors [b], LN γ, β
    [H, D] or none, residual — False: target v instead of v − k and output LN(f(q)) instead of q + LN(f(q)) — and
    the inner optimizer); retention: [B, T, H] per-token r_t (None: 1).

    Row r uses its first lengths[r] tokens (all when None); the rest are padding: output 0, state untouched.
    Returns z [B, T, H, D] and the state after each row's tokens.
    """
    token_factor, ln_weight, ln_bias = spec.token_factor, spec.ln_weight, spec.ln_bias
    residual, eps, optimizer = spec.residual, spec.eps, spec.optimizer
    batch, seq_len, heads = q.shape[:3]
    b = token_factor.shape[0]
    outer_grad = torch.is_grad_enabled()
    grad_sums = state.grad_sums_or_zeros()
    n_buffers = len(optimizer.buffer_names)
    buffers = state.buffers_or_zeros(n_buffers)
    steps = state.steps_or_zeros()
    decays = state.retention if state.retention is not None else q.new_ones(batch, heads)
    rows_out, rows_params, rows_grads, rows_offset = [], [], [], []
    rows_buffers, rows_steps, rows_decay = [], [], []

    def zeros(ts: list[Tensor | None]) -> list[Tensor | None]:
        return [None if t is None else torch.zeros_like(t) for t in ts]

    for r in range(batch):
        n_tokens = seq_len if lengths is None else int(lengths[r])
        W = [None if p is None else p[r] for p in state.params]
        G = [None if g is None else g[r] for g in grad_sums]
        S = [[None if t is None else t[r] for t in kind] for kind in buffers]
        n = steps[r]
        c = decays[r]  # [H]
        i = int(state.offset[r])
        outputs = []
        for t in range(seq_len):
            if t >= n_tokens:
                outputs.append(torch.zeros_like(q[r, t]))
                continue
            with torch.enable_grad():
                # views made under no_grad still report requires_grad, so decide from the outer mode
                W_leaf = [
                    w if w is None or (outer_grad and w.requires_grad) else w.detach().requires_grad_(True) for w in W
                ]
                k_t = k[r, t].unsqueeze(1)  # [H, 1, D]
                target = v[r, t].unsqueeze(1) - (k_t if residual else 0.0)
                loss = 0.5 * (_layer_norm(_inner(W_leaf, k_t), ln_weight, ln_bias, eps) - target).pow(2).sum()
                present = [w for w in W_leaf if w is not None]
                grads = iter(torch.autograd.grad(loss, present, create_graph=outer_grad))
            lr_t = lr[r, t].view(-1, 1, 1)  # [H, 1, 1]
            G = [None if g is None else g + lr_t * next(grads) for g in G]
            if retention is not None:
                c = c * retention[r, t]
            U, S_next = optimizer.update(tuple(G), tuple(tuple(kind) for kind in S), n)
            W_t = _weights_at(W, U, c, token_factor, i)
            q_t = q[r, t].unsqueeze(1)
            y = _layer_norm(_inner(W_t, q_t), ln_weight, ln_bias, eps)
            outputs.append((q_t + y if residual else y).squeeze(1))
            i += 1
            if i == b:
                W, G, S, n, c, i = W_t, zeros(G), [list(kind) for kind in S_next], n + 1, torch.ones_like(c), 0
        rows_out.append(torch.stack(outputs) if outputs else q[r, :0])
        rows_params.append(W)
        rows_grads.append(G)
        rows_offset.append(i)
        rows_buffers.append(S)
        rows_steps.append(n)
        rows_decay.append(c)
    out = torch.stack(rows_out)

    def stack(rows: list[list[Tensor | None]], j: int) -> Tensor | None:
        column = [row[j] for row in rows]
        present = [t for t in column if t is not None]
        if not present:
            return None
        # every row starts from the same state, so the rows agree on which biases are absent
        assert len(present) == len(column)
        return torch.stack(present)

    n_params = len(state.params)
    new_state = TTTState(
        params=tuple(stack(rows_params, j) for j in range(n_params)),
        grad_sums=tuple(stack(rows_grads, j) for j in range(n_params)),
        offset=torch.tensor(rows_offset, dtype=torch.long, device=q.device),
        buffers=tuple(
            tuple(stack([row[kind] for row in rows_buffers], j) for j in range(n_params)) for kind in range(n_buffers)
        ),
        steps=torch.stack(rows_steps) if optimizer.needs_steps else None,
        retention=torch.stack(rows_decay) if retention is not None or state.retention is not None else None,
    )
    return out, new_state
