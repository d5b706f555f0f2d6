"""Triton kernels for TTT-MLP: the whole sequence in one launch per (sequence, head), forward and backward, and
the fused decode step. The inner model is f(x) = gelu(x W1 + b1) W2 + b2 with hidden width F = 4D.

Per mini-batch (rows of X1 = keys, X̄1 = queries; `ops/dual.py` with two layers, the paper's dual form), with
η[i, j] = tf_i lr_j for j ≤ i:

    Z1 = X1 W1 + b1,  X2 = gelu(Z1),  Z2 = X2 W2 + b2                        (the keys through f at W)
    g2 = ∂/∂Z2 ½‖LN(Z2) − (V − X1)‖²,  g1 = (g2 W2ᵀ) ⊙ gelu′(Z1)
    Z̄1 = X̄1 W1 + b1 − tf ⊙ (X̄1 G_W1 + G_b1) − (η ⊙ (X̄1 X1ᵀ + 1)) g1,   X̄2 = gelu(Z̄1)
    Z̄2 = X̄2 W2 + b2 − tf ⊙ (X̄2 G_W2 + G_b2) − (η ⊙ (X̄2 X2ᵀ + 1)) g2,   out = X̄1 + LN(Z̄2)
    G_l ← G_l + (X_lᵀ (lr ⊙ g_l), Σ_j lr_j g_l,j);  a filled mini-batch closes: W ← W − tf_{b−1} G, G ← 0

Packed state per (row, head), P = 2·D·F + F + D: W1 [D, F], b1 [F], W2 [F, D], b2 [D], each row-major. The whole
hidden width is one tile: exact, and sized for Triton's interpreter and head_dim ≤ 32 on a GPU; at head_dim 64 the
state (4 × 64 KiB in the backward) exceeds a GPU's registers, so it spills (not measured; docs/triton.md).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import (
    causal_eta,
    gelu,
    gelu_grad,
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
    """(W1 [D, F], b1 [F], W2 [F, D], b2 [D]) from the packed vector at PTR + base."""
    F: tl.constexpr = 4 * D
    rd = tl.arange(0, D)
    rf = tl.arange(0, F)
    w1 = tl.load(PTR + base + rd[:, None] * F + rf[None, :])
    b1 = tl.load(PTR + base + D * F + rf)
    w2 = tl.load(PTR + base + D * F + F + rf[:, None] * D + rd[None, :])
    b2 = tl.load(PTR + base + 2 * D * F + F + rd)
    return w1, b1, w2, b2


@triton.jit
def _store(PTR, base, w1, b1, w2, b2, D: tl.constexpr):
    F: tl.constexpr = 4 * D
    rd = tl.arange(0, D)
    rf = tl.arange(0, F)
    tl.store(PTR + base + rd[:, None] * F + rf[None, :], w1)
    tl.store(PTR + base + D * F + rf, b1)
    tl.store(PTR + base + D * F + F + rf[:, None] * D + rd[None, :], w2)
    tl.store(PTR + base + 2 * D * F + F + rd, b2)


@triton.jit
def _keys(x1, val, w1, b1, w2, b2, gamma, beta, eps, D: tl.constexpr, PREC: tl.constexpr):
    """The keys of one mini-batch through f at its start weights and the reconstruction gradients g2, g1 (the
    module docstring's first two lines), with the intermediates the backward reuses."""
    z1 = tl.dot(x1, w1, input_precision=PREC) + b1[None, :]
    x2 = gelu(z1)
    x_hat, std = ln_stats(tl.dot(x2, w2, input_precision=PREC) + b2[None, :], D, eps)
    g_hat, g2 = ln_l2_grad(x_hat, std, val - x1, gamma, beta, D)
    gelu1, gelu1_2 = gelu_grad(z1)
    h = tl.dot(g2, tl.trans(w2), input_precision=PREC)
    return x2, x_hat, std, g_hat, g2, gelu1, gelu1_2, h, h * gelu1


@triton.jit
def _queries(xq, x1, x2, g1, g2, w1, b1, w2, b2, gw1, gb1, gw2, gb2, eta, tf, PREC: tl.constexpr):
    """The queries' read-out inputs Z̄1, Z̄2 of one mini-batch (the module docstring's third and fourth lines), with
    the intermediates the backward reuses."""
    attn1 = tl.dot(xq, tl.trans(x1), input_precision=PREC) + 1.0
    carried1 = tl.dot(xq, gw1, input_precision=PREC) + gb1[None, :]
    zq1 = tl.dot(xq, w1, input_precision=PREC) + b1[None, :] - tf[:, None] * carried1
    zq1 -= tl.dot(eta * attn1, g1, input_precision=PREC)
    xq2 = gelu(zq1)
    attn2 = tl.dot(xq2, tl.trans(x2), input_precision=PREC) + 1.0
    carried2 = tl.dot(xq2, gw2, input_precision=PREC) + gb2[None, :]
    zq2 = tl.dot(xq2, w2, input_precision=PREC) + b2[None, :] - tf[:, None] * carried2
    zq2 -= tl.dot(eta * attn2, g2, input_precision=PREC)
    return attn1, carried1, zq1, xq2, attn2, carried2, zq2


@triton.jit
def ttt_mlp_fwd_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, S0, G0, ENDS,
    OUT, S_OUT, G_OUT, S_SAVE,
    H, N, N_MB, eps,
    D: tl.constexpr, MB: tl.constexpr, SAVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program per (row, head): the mini-batches of the row up to ENDS[row], then the final state.
    SAVE: store the weights at each mini-batch start into S_SAVE [B, H, N_MB, P]."""
    F: tl.constexpr = 4 * D
    P: tl.constexpr = 2 * D * F + F + D
    _, bh, gamma, beta, tf, tf_last, end = program_setup(TF, LN_W, LN_B, ENDS, H, D, MB)
    w1, b1, w2, b2 = _load(S0, bh * P, D)
    gw1, gb1, gw2, gb2 = _load(G0, bh * P, D)
    for m in range(0, tl.cdiv(end, MB)):
        if SAVE:
            _store(S_SAVE, (bh * N_MB + m) * P, w1, b1, w2, b2, D)
        _, md, x1, xq, val, lr = load_tokens(Q, K, V, LR, bh, N, m, D, MB)
        x2, _, _, _, g2, _, _, _, g1 = _keys(x1, val, w1, b1, w2, b2, gamma, beta, eps, D, PREC)
        _, eta = causal_eta(tf, lr, MB)
        _, _, _, _, _, _, zq2 = _queries(xq, x1, x2, g1, g2, w1, b1, w2, b2, gw1, gb1, gw2, gb2, eta, tf, PREC)
        zq_hat, _ = ln_stats(zq2, D, eps)
        tl.store(OUT + md, (xq + gamma[None, :] * zq_hat + beta[None, :]).to(OUT.dtype.element_ty))
        p1 = lr[:, None] * g1
        p2 = lr[:, None] * g2
        gw1 += tl.dot(tl.trans(x1), p1, input_precision=PREC)
        gb1 += tl.sum(p1, axis=0)
        gw2 += tl.dot(tl.trans(x2), p2, input_precision=PREC)
        gb2 += tl.sum(p2, axis=0)
        close = tl.where((m + 1) * MB <= end, 1.0, 0.0)
        w1 -= close * tf_last * gw1
        b1 -= close * tf_last * gb1
        w2 -= close * tf_last * gw2
        b2 -= close * tf_last * gb2
        gw1 *= 1.0 - close
        gb1 *= 1.0 - close
        gw2 *= 1.0 - close
        gb2 *= 1.0 - close
    _store(S_OUT, bh * P, w1, b1, w2, b2, D)
    _store(G_OUT, bh * P, gw1, gb1, gw2, gb2, D)


@triton.jit
def ttt_mlp_bwd_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, G0, ENDS, S_SAVE,
    D_OUT, D_S, D_G,
    DQ, DK, DV, DLR, DTF, DLN_W, DLN_B, DS0, DG0,
    H, N, N_MB, eps,
    D: tl.constexpr, MB: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Backward of `ttt_mlp_fwd_kernel`, one program per (row, head), mini-batches in reverse (the same contract
    as `linear.py: ttt_linear_bwd_kernel`)."""
    F: tl.constexpr = 4 * D
    P: tl.constexpr = 2 * D * F + F + D
    _, bh, gamma, beta, tf, tf_last, end = program_setup(TF, LN_W, LN_B, ENDS, H, D, MB)
    gw1_0, gb1_0, gw2_0, gb2_0 = _load(G0, bh * P, D)
    # gradients of the state after the mini-batch being walked (first: the final state's)
    dw1, db1, dw2, db2 = _load(D_S, bh * P, D)
    dgw1, dgb1, dgw2, dgb2 = _load(D_G, bh * P, D)
    d_gamma = tl.zeros((D,), dtype=tl.float32)
    d_beta = tl.zeros((D,), dtype=tl.float32)
    d_tf = tl.zeros((MB,), dtype=tl.float32)
    d_tf_last = 0.0
    n_mb = tl.cdiv(end, MB)
    for i in range(0, n_mb):
        m = n_mb - 1 - i
        # only the first mini-batch starts with carried sums: every later one follows a closed mini-batch
        first = tl.where(m == 0, 1.0, 0.0)
        gw1_in = first * gw1_0
        gb1_in = first * gb1_0
        gw2_in = first * gw2_0
        gb2_in = first * gb2_0
        w1, b1, w2, b2 = _load(S_SAVE, (bh * N_MB + m) * P, D)
        tok, md, x1, xq, val, lr = load_tokens(Q, K, V, LR, bh, N, m, D, MB)
        d_out = tl.load(D_OUT + md).to(tl.float32)
        # recompute the forward of this mini-batch
        x2, x_hat, std, g_hat, g2, gelu1, gelu1_2, h, g1 = _keys(x1, val, w1, b1, w2, b2, gamma, beta, eps, D, PREC)
        causal, eta = causal_eta(tf, lr, MB)
        attn1, carried1, zq1, xq2, attn2, carried2, zq2 = _queries(
            xq, x1, x2, g1, g2, w1, b1, w2, b2, gw1_in, gb1_in, gw2_in, gb2_in, eta, tf, PREC
        )
        zq_hat, zq_std = ln_stats(zq2, D, eps)
        p1 = lr[:, None] * g1
        p2 = lr[:, None] * g2
        gw1_end = gw1_in + tl.dot(tl.trans(x1), p1, input_precision=PREC)
        gb1_end = gb1_in + tl.sum(p1, axis=0)
        gw2_end = gw2_in + tl.dot(tl.trans(x2), p2, input_precision=PREC)
        gb2_end = gb2_in + tl.sum(p2, axis=0)
        close = tl.where((m + 1) * MB <= end, 1.0, 0.0)
        # the close: W' = W − close tf_last G_end, G' = (1 − close) G_end
        dgw1_end = (1.0 - close) * dgw1 - close * tf_last * dw1
        dgb1_end = (1.0 - close) * dgb1 - close * tf_last * db1
        dgw2_end = (1.0 - close) * dgw2 - close * tf_last * dw2
        dgb2_end = (1.0 - close) * dgb2 - close * tf_last * db2
        closing = tl.sum(tl.sum(gw1_end * dw1, axis=1), axis=0) + tl.sum(gb1_end * db1, axis=0)
        closing += tl.sum(tl.sum(gw2_end * dw2, axis=1), axis=0) + tl.sum(gb2_end * db2, axis=0)
        d_tf_last -= close * closing
        # G_l,end = G_l,in + X_lᵀ p_l,  p_l = lr ⊙ g_l
        dp1 = tl.dot(x1, dgw1_end, input_precision=PREC) + dgb1_end[None, :]
        dp2 = tl.dot(x2, dgw2_end, input_precision=PREC) + dgb2_end[None, :]
        dx1 = tl.dot(p1, tl.trans(dgw1_end), input_precision=PREC)
        dx2 = tl.dot(p2, tl.trans(dgw2_end), input_precision=PREC)
        dlr = tl.sum(dp1 * g1, axis=1) + tl.sum(dp2 * g2, axis=1)
        dg1 = lr[:, None] * dp1
        dg2 = lr[:, None] * dp2
        # out = X̄1 + LN(Z̄2)
        d_gamma += tl.sum(d_out * zq_hat, axis=0)
        d_beta += tl.sum(d_out, axis=0)
        dzq2 = ln_bwd(d_out * gamma[None, :], zq_hat, zq_std, D)
        # Z̄2 = X̄2 W2 + b2 − tf ⊙ (X̄2 G_W2 + G_b2) − (η ⊙ A2) g2,  A2 = X̄2 X2ᵀ + 1
        tf_dzq2 = tf[:, None] * dzq2
        dxq2 = tl.dot(dzq2, tl.trans(w2), input_precision=PREC)
        dxq2 -= tl.dot(tf_dzq2, tl.trans(gw2_in), input_precision=PREC)
        dw2 += tl.dot(tl.trans(xq2), dzq2, input_precision=PREC)
        db2 += tl.sum(dzq2, axis=0)
        dgw2 = dgw2_end - tl.dot(tl.trans(xq2), tf_dzq2, input_precision=PREC)
        dgb2 = dgb2_end - tl.sum(tf_dzq2, axis=0)
        d_tf -= tl.sum(dzq2 * carried2, axis=1)
        d_m2 = -tl.dot(dzq2, tl.trans(g2), input_precision=PREC)
        dg2 -= tl.dot(tl.trans(eta * attn2), dzq2, input_precision=PREC)
        d_eta = tl.where(causal, d_m2 * attn2, 0.0)
        d_attn2 = d_m2 * eta
        dxq2 += tl.dot(d_attn2, x2, input_precision=PREC)
        dx2 += tl.dot(tl.trans(d_attn2), xq2, input_precision=PREC)
        # X̄2 = gelu(Z̄1);  Z̄1 = X̄1 W1 + b1 − tf ⊙ (X̄1 G_W1 + G_b1) − (η ⊙ A1) g1,  A1 = X̄1 X1ᵀ + 1
        gelu_q1, _ = gelu_grad(zq1)
        dzq1 = dxq2 * gelu_q1
        tf_dzq1 = tf[:, None] * dzq1
        dxq = d_out + tl.dot(dzq1, tl.trans(w1), input_precision=PREC)
        dxq -= tl.dot(tf_dzq1, tl.trans(gw1_in), input_precision=PREC)
        dw1 += tl.dot(tl.trans(xq), dzq1, input_precision=PREC)
        db1 += tl.sum(dzq1, axis=0)
        dgw1 = dgw1_end - tl.dot(tl.trans(xq), tf_dzq1, input_precision=PREC)
        dgb1 = dgb1_end - tl.sum(tf_dzq1, axis=0)
        d_tf -= tl.sum(dzq1 * carried1, axis=1)
        d_m1 = -tl.dot(dzq1, tl.trans(g1), input_precision=PREC)
        dg1 -= tl.dot(tl.trans(eta * attn1), dzq1, input_precision=PREC)
        d_eta += tl.where(causal, d_m1 * attn1, 0.0)
        d_attn1 = d_m1 * eta
        dxq += tl.dot(d_attn1, x1, input_precision=PREC)
        dx1 += tl.dot(tl.trans(d_attn1), xq, input_precision=PREC)
        d_tf += tl.sum(d_eta * lr[None, :], axis=1)
        dlr += tl.sum(d_eta * tf[:, None], axis=0)
        # g1 = h ⊙ gelu′(Z1),  h = g2 W2ᵀ
        dh = dg1 * gelu1
        dz1 = dg1 * h * gelu1_2
        dg2 += tl.dot(dh, w2, input_precision=PREC)
        dw2 += tl.dot(tl.trans(dh), g2, input_precision=PREC)
        # g2 = ∂/∂Z2 ½‖LN(Z2) − (V − X1)‖²,  Z2 = X2 W2 + b2,  X2 = gelu(Z1),  Z1 = X1 W1 + b1
        dz2, d_target, d_gamma_g, d_beta_g = ln_l2_grad_bwd(dg2, g2, g_hat, x_hat, std, val - x1, gamma, beta, D)
        d_gamma += d_gamma_g
        d_beta += d_beta_g
        dx2 += tl.dot(dz2, tl.trans(w2), input_precision=PREC)
        dw2 += tl.dot(tl.trans(x2), dz2, input_precision=PREC)
        db2 += tl.sum(dz2, axis=0)
        dz1 += dx2 * gelu1
        dx1 += tl.dot(dz1, tl.trans(w1), input_precision=PREC) - d_target
        dw1 += tl.dot(tl.trans(x1), dz1, input_precision=PREC)
        db1 += tl.sum(dz1, axis=0)
        tl.store(DQ + md, dxq.to(DQ.dtype.element_ty))
        tl.store(DK + md, dx1.to(DK.dtype.element_ty))
        tl.store(DV + md, d_target.to(DV.dtype.element_ty))
        tl.store(DLR + tok, dlr.to(DLR.dtype.element_ty))
    store_shared_grads(DTF, DLN_W, DLN_B, bh, d_tf, d_tf_last, d_gamma, d_beta, D, MB)
    _store(DS0, bh * P, dw1, db1, dw2, db2, D)
    _store(DG0, bh * P, dgw1, dgb1, dgw2, dgb2, D)


@triton.jit
def ttt_mlp_step_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, S, G, OFFSET, VALID,
    OUT, S_NEW, G_NEW,
    H, eps,
    D: tl.constexpr, MB: tl.constexpr,
):  # fmt: skip
    """The primal step for one token per (row, head) (the contract of `linear.py: ttt_linear_step_kernel`)."""
    F: tl.constexpr = 4 * D
    P: tl.constexpr = 2 * D * F + F + D
    bh, gamma, beta, x1, xq, val, valid, lr, offset, tf, tf_last = step_setup(
        Q, K, V, LR, TF, LN_W, LN_B, OFFSET, VALID, H, D, MB
    )
    w1, b1, w2, b2 = _load(S, bh * P, D)
    gw1, gb1, gw2, gb2 = _load(G, bh * P, D)
    # a vector-matrix product is a broadcast and a sum over the input dim; the LN helpers take [1, D] rows
    z1 = tl.sum(x1[:, None] * w1, axis=0) + b1
    x2 = gelu(z1)
    z2 = tl.sum(x2[:, None] * w2, axis=0) + b2
    x_hat, std = ln_stats(z2[None, :], D, eps)
    _, g2_row = ln_l2_grad(x_hat, std, (val - x1)[None, :], gamma, beta, D)
    g2 = tl.sum(g2_row, axis=0)
    gelu1, _ = gelu_grad(z1)
    g1 = tl.sum(w2 * g2[None, :], axis=1) * gelu1
    gw1 += lr * x1[:, None] * g1[None, :]
    gb1 += lr * g1
    gw2 += lr * x2[:, None] * g2[None, :]
    gb2 += lr * g2
    zq1 = tl.sum(xq[:, None] * w1, axis=0) + b1 - tf * (tl.sum(xq[:, None] * gw1, axis=0) + gb1)
    xq2 = gelu(zq1)
    zq2 = tl.sum(xq2[:, None] * w2, axis=0) + b2 - tf * (tl.sum(xq2[:, None] * gw2, axis=0) + gb2)
    zq_hat, _ = ln_stats(zq2[None, :], D, eps)
    out = valid * (xq + gamma * tl.sum(zq_hat, axis=0) + beta)
    tl.store(OUT + bh * D + tl.arange(0, D), out.to(OUT.dtype.element_ty))
    close = tl.where(offset + valid.to(tl.int64) == MB, 1.0, 0.0)
    keep = tf_last * close
    _store(S_NEW, bh * P, w1 - keep * gw1, b1 - keep * gb1, w2 - keep * gw2, b2 - keep * gb2, D)
    _store(G_NEW, bh * P, (1.0 - close) * gw1, (1.0 - close) * gb1, (1.0 - close) * gw2, (1.0 - close) * gb2, D)
