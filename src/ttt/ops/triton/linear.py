"""Triton kernels for TTT-Linear: the whole sequence in one launch per (sequence, head), forward and backward, and
the fused decode step.

Each program holds its head's inner state in fp32 for the whole loop: W [D, D], b [D] (the weights at the start of
the current mini-batch) and the gradient sums G_W [D, D], G_b [D]. Per mini-batch of b tokens (rows of X = keys,
X̄ = queries, as in `ops/dual.py`, the paper's dual form, Sec. 2.5), with η[i, j] = tf_i lr_j for j ≤ i:

    g  = ∂/∂Z ½‖LN(Z) − (V − X)‖²,   Z = X W + b                       (the keys' reconstruction gradient at W)
    Z̄  = X̄ W + b − tf ⊙ (X̄ G_W + G_b) − (η ⊙ (X̄ Xᵀ + 1)) g
    out = X̄ + LN(Z̄)
    G  ← G + (Xᵀ (lr ⊙ g), Σ_j lr_j g_j)
    a mini-batch the row fills closes: W ← W − tf_{b−1} G_W, b ← b − tf_{b−1} G_b, G ← 0

The backward kernel walks the mini-batches in reverse from the weights saved at each mini-batch start and recomputes
the rest (as the dual form's remat does). The step kernel is the primal step (`ops/primal.py`) for one token.
Tiles: tokens × head_dim with b and D powers of two ≥ 16 (`tl.dot`). Tensors are contiguous: q, k, v, out
[B, H, N, D] on the grid of `ops/grid.py`, lr [B, H, N]; the weights and the gradient sums are packed per (row, head)
as [B, H, P] with P = D·D + D: W row-major, then b.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    causal_eta,
    ln_bwd,
    ln_l2_grad,
    ln_l2_grad_bwd,
    ln_stats,
    load_tokens,
    program_setup,
    step_setup,
    store_shared_grads,
)


@triton.jit
def _load(PTR, base, D: tl.constexpr):
    """(W [D, D], b [D]) from the packed vector at PTR + base."""
    rd = tl.arange(0, D)
    return tl.load(PTR + base + rd[:, None] * D + rd[None, :]), tl.load(PTR + base + D * D + rd)


@triton.jit
def _store(PTR, base, w, b, D: tl.constexpr):
    rd = tl.arange(0, D)
    tl.store(PTR + base + rd[:, None] * D + rd[None, :], w)
    tl.store(PTR + base + D * D + rd, b)


@triton.jit
def _mini_batch(x, xq, val, lr, w, bias, gw, gb, gamma, beta, tf, eps, D: tl.constexpr, MB: tl.constexpr, PREC):
    """The forward of one mini-batch (the module docstring's equations) from the weights (w, bias) at its start and
    the gradient sums (gw, gb) carried in: the intermediates the backward reuses and the read-out's input Z̄."""
    x_hat, std = ln_stats(tl.dot(x, w, input_precision=PREC) + bias[None, :], D, eps)
    g_hat, g = ln_l2_grad(x_hat, std, val - x, gamma, beta, D)
    causal, eta = causal_eta(tf, lr, MB)
    attn = tl.dot(xq, tl.trans(x), input_precision=PREC) + 1.0
    carried = tl.dot(xq, gw, input_precision=PREC) + gb[None, :]
    zq = tl.dot(xq, w, input_precision=PREC) + bias[None, :] - tf[:, None] * carried
    zq -= tl.dot(eta * attn, g, input_precision=PREC)
    return x_hat, std, g_hat, g, causal, eta, attn, carried, zq


@triton.jit
def ttt_linear_fwd_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, S0, G0, ENDS,
    OUT, S_OUT, G_OUT, S_SAVE,
    H, N, N_MB, eps,
    D: tl.constexpr, MB: tl.constexpr, SAVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program per (row, head): the mini-batches of the row up to ENDS[row], then the final state.
    SAVE: store the weights at each mini-batch start into S_SAVE [B, H, N_MB, P]."""
    P: tl.constexpr = D * D + D
    _, bh, gamma, beta, tf, tf_last, end = program_setup(TF, LN_W, LN_B, ENDS, H, D, MB)
    w, bias = _load(S0, bh * P, D)
    gw, gb = _load(G0, bh * P, D)
    for m in range(0, tl.cdiv(end, MB)):
        if SAVE:
            _store(S_SAVE, (bh * N_MB + m) * P, w, bias, D)
        _, md, x, xq, val, lr = load_tokens(Q, K, V, LR, bh, N, m, D, MB)
        _, _, _, g, _, _, _, _, zq = _mini_batch(x, xq, val, lr, w, bias, gw, gb, gamma, beta, tf, eps, D, MB, PREC)
        zq_hat, _ = ln_stats(zq, D, eps)
        tl.store(OUT + md, (xq + gamma[None, :] * zq_hat + beta[None, :]).to(OUT.dtype.element_ty))
        p = lr[:, None] * g
        gw += tl.dot(tl.trans(x), p, input_precision=PREC)
        gb += tl.sum(p, axis=0)
        close = tl.where((m + 1) * MB <= end, 1.0, 0.0)
        w -= close * tf_last * gw
        bias -= close * tf_last * gb
        gw *= 1.0 - close
        gb *= 1.0 - close
    _store(S_OUT, bh * P, w, bias, D)
    _store(G_OUT, bh * P, gw, gb, D)


@triton.jit
def ttt_linear_bwd_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, G0, ENDS, S_SAVE,
    D_OUT, D_S, D_G,
    DQ, DK, DV, DLR, DTF, DLN_W, DLN_B, DS0, DG0,
    H, N, N_MB, eps,
    D: tl.constexpr, MB: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Backward of `ttt_linear_fwd_kernel`, one program per (row, head), mini-batches in reverse.

    In: the forward's inputs, the saved mini-batch-start weights and the gradients of the output and the final
    state. Out: dq, dk, dv [B, H, N, D], dlr [B, H, N] and, per (row, head), the partial gradients of the token
    factors [MB], the LN's γ and β [D] (summed over rows by the caller) and of the initial state."""
    P: tl.constexpr = D * D + D
    _, bh, gamma, beta, tf, tf_last, end = program_setup(TF, LN_W, LN_B, ENDS, H, D, MB)
    gw0, gb0 = _load(G0, bh * P, D)
    # gradients of the state after the mini-batch being walked (first: the final state's)
    dw, db = _load(D_S, bh * P, D)
    dgw, dgb = _load(D_G, bh * P, D)
    d_gamma = tl.zeros((D,), dtype=tl.float32)
    d_beta = tl.zeros((D,), dtype=tl.float32)
    d_tf = tl.zeros((MB,), dtype=tl.float32)
    d_tf_last = 0.0
    n_mb = tl.cdiv(end, MB)
    for i in range(0, n_mb):
        m = n_mb - 1 - i
        # only the first mini-batch starts with carried sums: every later one follows a closed mini-batch
        first = tl.where(m == 0, 1.0, 0.0)
        gw_in = first * gw0
        gb_in = first * gb0
        w, bias = _load(S_SAVE, (bh * N_MB + m) * P, D)
        tok, md, x, xq, val, lr = load_tokens(Q, K, V, LR, bh, N, m, D, MB)
        d_out = tl.load(D_OUT + md).to(tl.float32)
        # recompute the forward of this mini-batch
        x_hat, std, g_hat, g, causal, eta, attn, carried, zq = _mini_batch(
            x, xq, val, lr, w, bias, gw_in, gb_in, gamma, beta, tf, eps, D, MB, PREC
        )
        zq_hat, zq_std = ln_stats(zq, D, eps)
        p = lr[:, None] * g
        gw_end = gw_in + tl.dot(tl.trans(x), p, input_precision=PREC)
        gb_end = gb_in + tl.sum(p, axis=0)
        close = tl.where((m + 1) * MB <= end, 1.0, 0.0)
        # the close: W' = W − close tf_last G_end, G' = (1 − close) G_end
        dgw_end = (1.0 - close) * dgw - close * tf_last * dw
        dgb_end = (1.0 - close) * dgb - close * tf_last * db
        d_tf_last -= close * (tl.sum(tl.sum(gw_end * dw, axis=1), axis=0) + tl.sum(gb_end * db, axis=0))
        # G_end = G_in + Xᵀ p,  p = lr ⊙ g
        dp = tl.dot(x, dgw_end, input_precision=PREC) + dgb_end[None, :]
        dx = tl.dot(p, tl.trans(dgw_end), input_precision=PREC)
        dlr = tl.sum(dp * g, axis=1)
        dg = lr[:, None] * dp
        # out = X̄ + LN(Z̄)
        d_gamma += tl.sum(d_out * zq_hat, axis=0)
        d_beta += tl.sum(d_out, axis=0)
        dzq = ln_bwd(d_out * gamma[None, :], zq_hat, zq_std, D)
        # Z̄ = X̄ W + b − tf ⊙ (X̄ G_W + G_b) − (η ⊙ A) g,  A = X̄ Xᵀ + 1
        tf_dzq = tf[:, None] * dzq
        dxq = d_out + tl.dot(dzq, tl.trans(w), input_precision=PREC)
        dxq -= tl.dot(tf_dzq, tl.trans(gw_in), input_precision=PREC)
        dw += tl.dot(tl.trans(xq), dzq, input_precision=PREC)
        db += tl.sum(dzq, axis=0)
        dgw = dgw_end - tl.dot(tl.trans(xq), tf_dzq, input_precision=PREC)
        dgb = dgb_end - tl.sum(tf_dzq, axis=0)
        d_tf -= tl.sum(dzq * carried, axis=1)
        d_m = -tl.dot(dzq, tl.trans(g), input_precision=PREC)
        dg -= tl.dot(tl.trans(eta * attn), dzq, input_precision=PREC)
        d_eta = tl.where(causal, d_m * attn, 0.0)
        d_attn = d_m * eta
        dxq += tl.dot(d_attn, x, input_precision=PREC)
        dx += tl.dot(tl.trans(d_attn), xq, input_precision=PREC)
        d_tf += tl.sum(d_eta * lr[None, :], axis=1)
        dlr += tl.sum(d_eta * tf[:, None], axis=0)
        # g = ∂/∂Z ½‖LN(Z) − (V − X)‖²,  Z = X W + b
        dz, d_target, d_gamma_g, d_beta_g = ln_l2_grad_bwd(dg, g, g_hat, x_hat, std, val - x, gamma, beta, D)
        d_gamma += d_gamma_g
        d_beta += d_beta_g
        dx += tl.dot(dz, tl.trans(w), input_precision=PREC) - d_target
        dw += tl.dot(tl.trans(x), dz, input_precision=PREC)
        db += tl.sum(dz, axis=0)
        tl.store(DQ + md, dxq.to(DQ.dtype.element_ty))
        tl.store(DK + md, dx.to(DK.dtype.element_ty))
        tl.store(DV + md, d_target.to(DV.dtype.element_ty))
        tl.store(DLR + tok, dlr.to(DLR.dtype.element_ty))
    store_shared_grads(DTF, DLN_W, DLN_B, bh, d_tf, d_tf_last, d_gamma, d_beta, D, MB)
    _store(DS0, bh * P, dw, db, D)
    _store(DG0, bh * P, dgw, dgb, D)


@triton.jit
def ttt_linear_step_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, S, G, OFFSET, VALID,
    OUT, S_NEW, G_NEW,
    H, eps,
    D: tl.constexpr, MB: tl.constexpr,
):  # fmt: skip
    """The primal step for one token per (row, head): q, k, v [B, H, D], lr [B, H], OFFSET [B] (the token's
    position in its mini-batch), VALID [B] (0: a padding token, output 0 and state kept). Writes the output and the
    new state (W, b closed when the token fills its mini-batch)."""
    P: tl.constexpr = D * D + D
    bh, gamma, beta, x, xq, val, valid, lr, offset, tf, tf_last = step_setup(
        Q, K, V, LR, TF, LN_W, LN_B, OFFSET, VALID, H, D, MB
    )
    w, bias = _load(S, bh * P, D)
    gw, gb = _load(G, bh * P, D)
    # a vector-matrix product is a broadcast and a sum over the input dim; the LN helpers take [1, D] rows
    x_hat, std = ln_stats((tl.sum(x[:, None] * w, axis=0) + bias)[None, :], D, eps)
    _, g_row = ln_l2_grad(x_hat, std, (val - x)[None, :], gamma, beta, D)
    p = lr * tl.sum(g_row, axis=0)
    gw += x[:, None] * p[None, :]
    gb += p
    zq = tl.sum(xq[:, None] * w, axis=0) + bias - tf * (tl.sum(xq[:, None] * gw, axis=0) + gb)
    zq_hat, _ = ln_stats(zq[None, :], D, eps)
    out = valid * (xq + gamma * tl.sum(zq_hat, axis=0) + beta)
    tl.store(OUT + bh * D + tl.arange(0, D), out.to(OUT.dtype.element_ty))
    close = tl.where(offset + valid.to(tl.int64) == MB, 1.0, 0.0)
    _store(S_NEW, bh * P, w - close * tf_last * gw, bias - close * tf_last * gb, D)
    _store(G_NEW, bh * P, (1.0 - close) * gw, (1.0 - close) * gb, D)
