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
[B, H, N, D] on the grid of `ops/grid.py`, lr [B, H, N], states [B, H, D, D] and [B, H, D].
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _ln_stats(z, D: tl.constexpr, eps):
    """x̂ = (z − μ) / σ and σ = sqrt(var + ε) over the last dim of z [M, D] (biased variance, as `ops/ln.py`)."""
    mu = tl.sum(z, axis=1) / D
    centred = z - mu[:, None]
    std = tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
    return centred / std[:, None], std


@triton.jit
def _ln_bwd(dy, x_hat, std, D: tl.constexpr):
    """∂/∂z of the normalisation x̂(z), given dy = ∂/∂x̂ [M, D]."""
    mean_dy = tl.sum(dy, axis=1) / D
    mean_dy_x = tl.sum(dy * x_hat, axis=1) / D
    return (dy - mean_dy[:, None] - x_hat * mean_dy_x[:, None]) / std[:, None]


@triton.jit
def _ln_l2_grad(x_hat, std, target, gamma, beta, D: tl.constexpr):
    """ĝ = γ ⊙ (LN(z) − t) and g = ∂/∂z ½‖LN(z) − t‖² (`ops/ln.py: ln_fused_l2_bwd`), for z [M, D]."""
    g_hat = (gamma[None, :] * x_hat + beta[None, :] - target) * gamma[None, :]
    sum_g = tl.sum(g_hat, axis=1)
    sum_gx = tl.sum(g_hat * x_hat, axis=1)
    g = (D * g_hat - sum_g[:, None] - x_hat * sum_gx[:, None]) / (D * std[:, None])
    return g_hat, g


@triton.jit
def _ln_l2_grad_bwd(dg, g, g_hat, x_hat, std, target, gamma, beta, D: tl.constexpr):
    """Backward of `_ln_l2_grad` (second order in z): from dg = ∂/∂g, the gradients of z, t, γ and β.

    g = (ĝ − mean ĝ − x̂ mean(ĝ x̂)) / σ with ĝ = γ ⊙ (γ x̂ + β − t); σ enters g directly (∂σ/∂z = x̂ / D) and
    through x̂ (`_ln_bwd`)."""
    a = dg / std[:, None]
    mean_a = tl.sum(a, axis=1) / D
    mean_ax = tl.sum(a * x_hat, axis=1) / D
    mean_gx = tl.sum(g_hat * x_hat, axis=1) / D
    d_g_hat = a - mean_a[:, None] - x_hat * mean_ax[:, None]
    d_x_hat = -mean_gx[:, None] * a - g_hat * mean_ax[:, None] + d_g_hat * gamma[None, :] * gamma[None, :]
    d_std = -tl.sum(a * g, axis=1)
    dz = _ln_bwd(d_x_hat, x_hat, std, D) + d_std[:, None] * x_hat / D
    d_target = -d_g_hat * gamma[None, :]
    d_gamma = tl.sum(d_g_hat * (2.0 * gamma[None, :] * x_hat + beta[None, :] - target), axis=0)
    d_beta = tl.sum(d_g_hat * gamma[None, :], axis=0)
    return dz, d_target, d_gamma, d_beta


@triton.jit
def ttt_linear_fwd_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, W0, B0, GW0, GB0, ENDS,
    OUT, W_OUT, B_OUT, GW_OUT, GB_OUT, W_SAVE, B_SAVE,
    H, N, N_MB, eps,
    D: tl.constexpr, MB: tl.constexpr, SAVE: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """One program per (row, head): the mini-batches of the row up to ENDS[row], then the final state.
    SAVE: store W, b at each mini-batch start into W_SAVE [B, H, N_MB, D, D], B_SAVE [B, H, N_MB, D]."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    bh = row * H + head
    rd = tl.arange(0, D)
    rm = tl.arange(0, MB)
    dd = rd[:, None] * D + rd[None, :]
    w = tl.load(W0 + bh * D * D + dd)
    bias = tl.load(B0 + bh * D + rd)
    gw = tl.load(GW0 + bh * D * D + dd)
    gb = tl.load(GB0 + bh * D + rd)
    gamma = tl.load(LN_W + head * D + rd).to(tl.float32)
    beta = tl.load(LN_B + head * D + rd).to(tl.float32)
    tf = tl.load(TF + rm).to(tl.float32)
    tf_last = tl.load(TF + MB - 1).to(tl.float32)
    end = tl.load(ENDS + row)
    causal = rm[:, None] >= rm[None, :]
    for m in range(0, tl.cdiv(end, MB)):
        if SAVE:
            tl.store(W_SAVE + (bh * N_MB + m) * D * D + dd, w)
            tl.store(B_SAVE + (bh * N_MB + m) * D + rd, bias)
        tok = bh * N + m * MB + rm
        md = tok[:, None] * D + rd[None, :]
        x = tl.load(K + md).to(tl.float32)
        xq = tl.load(Q + md).to(tl.float32)
        val = tl.load(V + md).to(tl.float32)
        lr = tl.load(LR + tok).to(tl.float32)
        x_hat, std = _ln_stats(tl.dot(x, w, input_precision=PREC) + bias[None, :], D, eps)
        _, g = _ln_l2_grad(x_hat, std, val - x, gamma, beta, D)
        eta = tl.where(causal, tf[:, None] * lr[None, :], 0.0)
        attn = tl.dot(xq, tl.trans(x), input_precision=PREC) + 1.0
        carried = tl.dot(xq, gw, input_precision=PREC) + gb[None, :]
        zq = tl.dot(xq, w, input_precision=PREC) + bias[None, :] - tf[:, None] * carried
        zq -= tl.dot(eta * attn, g, input_precision=PREC)
        zq_hat, _ = _ln_stats(zq, D, eps)
        tl.store(OUT + md, (xq + gamma[None, :] * zq_hat + beta[None, :]).to(OUT.dtype.element_ty))
        p = lr[:, None] * g
        gw += tl.dot(tl.trans(x), p, input_precision=PREC)
        gb += tl.sum(p, axis=0)
        close = tl.where((m + 1) * MB <= end, 1.0, 0.0)
        w -= close * tf_last * gw
        bias -= close * tf_last * gb
        gw *= 1.0 - close
        gb *= 1.0 - close
    tl.store(W_OUT + bh * D * D + dd, w)
    tl.store(B_OUT + bh * D + rd, bias)
    tl.store(GW_OUT + bh * D * D + dd, gw)
    tl.store(GB_OUT + bh * D + rd, gb)


@triton.jit
def ttt_linear_bwd_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, GW0, GB0, ENDS, W_SAVE, B_SAVE,
    D_OUT, D_W, D_B, D_GW, D_GB,
    DQ, DK, DV, DLR, DTF, DLN_W, DLN_B, DW0, DB0, DGW0, DGB0,
    H, N, N_MB, eps,
    D: tl.constexpr, MB: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """Backward of `ttt_linear_fwd_kernel`, one program per (row, head), mini-batches in reverse.

    In: the forward's inputs, the saved mini-batch-start weights and the gradients of the output and the final
    state. Out: dq, dk, dv [B, H, N, D], dlr [B, H, N] and, per (row, head), the partial gradients of the token
    factors [MB], the LN's γ and β [D] (summed over rows by the caller) and of the initial state."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    bh = row * H + head
    rd = tl.arange(0, D)
    rm = tl.arange(0, MB)
    dd = rd[:, None] * D + rd[None, :]
    gw0 = tl.load(GW0 + bh * D * D + dd)
    gb0 = tl.load(GB0 + bh * D + rd)
    gamma = tl.load(LN_W + head * D + rd).to(tl.float32)
    beta = tl.load(LN_B + head * D + rd).to(tl.float32)
    tf = tl.load(TF + rm).to(tl.float32)
    tf_last = tl.load(TF + MB - 1).to(tl.float32)
    end = tl.load(ENDS + row)
    causal = rm[:, None] >= rm[None, :]
    # gradients of the state after the mini-batch being walked (first: the final state's)
    dw = tl.load(D_W + bh * D * D + dd)
    db = tl.load(D_B + bh * D + rd)
    dgw = tl.load(D_GW + bh * D * D + dd)
    dgb = tl.load(D_GB + bh * D + rd)
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
        w = tl.load(W_SAVE + (bh * N_MB + m) * D * D + dd)
        bias = tl.load(B_SAVE + (bh * N_MB + m) * D + rd)
        tok = bh * N + m * MB + rm
        md = tok[:, None] * D + rd[None, :]
        x = tl.load(K + md).to(tl.float32)
        xq = tl.load(Q + md).to(tl.float32)
        val = tl.load(V + md).to(tl.float32)
        lr = tl.load(LR + tok).to(tl.float32)
        d_out = tl.load(D_OUT + md).to(tl.float32)
        # recompute the forward of this mini-batch
        target = val - x
        x_hat, std = _ln_stats(tl.dot(x, w, input_precision=PREC) + bias[None, :], D, eps)
        g_hat, g = _ln_l2_grad(x_hat, std, target, gamma, beta, D)
        eta = tl.where(causal, tf[:, None] * lr[None, :], 0.0)
        attn = tl.dot(xq, tl.trans(x), input_precision=PREC) + 1.0
        carried = tl.dot(xq, gw_in, input_precision=PREC) + gb_in[None, :]
        zq = tl.dot(xq, w, input_precision=PREC) + bias[None, :] - tf[:, None] * carried
        zq -= tl.dot(eta * attn, g, input_precision=PREC)
        zq_hat, zq_std = _ln_stats(zq, D, eps)
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
        dzq = _ln_bwd(d_out * gamma[None, :], zq_hat, zq_std, D)
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
        dz, d_target, d_gamma_g, d_beta_g = _ln_l2_grad_bwd(dg, g, g_hat, x_hat, std, target, gamma, beta, D)
        d_gamma += d_gamma_g
        d_beta += d_beta_g
        dx += tl.dot(dz, tl.trans(w), input_precision=PREC) - d_target
        dw += tl.dot(tl.trans(x), dz, input_precision=PREC)
        db += tl.sum(dz, axis=0)
        tl.store(DQ + md, dxq.to(DQ.dtype.element_ty))
        tl.store(DK + md, dx.to(DK.dtype.element_ty))
        tl.store(DV + md, d_target.to(DV.dtype.element_ty))
        tl.store(DLR + tok, dlr.to(DLR.dtype.element_ty))
    d_tf += tl.where(rm == MB - 1, d_tf_last, 0.0)
    tl.store(DTF + bh * MB + rm, d_tf)
    tl.store(DLN_W + bh * D + rd, d_gamma)
    tl.store(DLN_B + bh * D + rd, d_beta)
    tl.store(DW0 + bh * D * D + dd, dw)
    tl.store(DB0 + bh * D + rd, db)
    tl.store(DGW0 + bh * D * D + dd, dgw)
    tl.store(DGB0 + bh * D + rd, dgb)


@triton.jit
def ttt_linear_step_kernel(
    Q, K, V, LR, TF, LN_W, LN_B, W, B, GW, GB, OFFSET, VALID,
    OUT, W_NEW, B_NEW, GW_NEW, GB_NEW,
    H, eps,
    D: tl.constexpr, MB: tl.constexpr,
):  # fmt: skip
    """The primal step for one token per (row, head): q, k, v [B, H, D], lr [B, H], OFFSET [B] (the token's
    position in its mini-batch), VALID [B] (0: a padding token, output 0 and state kept). Writes the output and the
    new state (W, b closed when the token fills its mini-batch)."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    bh = row * H + head
    rd = tl.arange(0, D)
    dd = rd[:, None] * D + rd[None, :]
    w = tl.load(W + bh * D * D + dd)
    bias = tl.load(B + bh * D + rd)[None, :]
    gw = tl.load(GW + bh * D * D + dd)
    gb = tl.load(GB + bh * D + rd)[None, :]
    gamma = tl.load(LN_W + head * D + rd).to(tl.float32)
    beta = tl.load(LN_B + head * D + rd).to(tl.float32)
    x = tl.load(K + bh * D + rd).to(tl.float32)
    xq = tl.load(Q + bh * D + rd).to(tl.float32)
    val = tl.load(V + bh * D + rd).to(tl.float32)
    valid = tl.load(VALID + row).to(tl.float32)
    lr = tl.load(LR + bh).to(tl.float32) * valid
    offset = tl.load(OFFSET + row)
    tf = tl.load(TF + offset).to(tl.float32)
    tf_last = tl.load(TF + MB - 1).to(tl.float32)
    # [1, D] rows: a vector-matrix product is a broadcast and a sum over the input dim
    z = tl.sum(x[:, None] * w, axis=0)[None, :] + bias
    x_hat, std = _ln_stats(z, D, eps)
    _, g = _ln_l2_grad(x_hat, std, (val - x)[None, :], gamma, beta, D)
    p = lr * g
    gw += x[:, None] * p
    gb += p
    zq = tl.sum(xq[:, None] * w, axis=0)[None, :] + bias - tf * (tl.sum(xq[:, None] * gw, axis=0)[None, :] + gb)
    zq_hat, _ = _ln_stats(zq, D, eps)
    out = valid * (xq[None, :] + gamma[None, :] * zq_hat + beta[None, :])
    tl.store(OUT + bh * D + rd[None, :], out.to(OUT.dtype.element_ty))
    close = tl.where(offset + valid.to(tl.int64) == MB, 1.0, 0.0)
    tl.store(W_NEW + bh * D * D + dd, w - close * tf_last * gw)
    tl.store(B_NEW + bh * D + rd[None, :], bias - close * tf_last * gb)
    tl.store(GW_NEW + bh * D * D + dd, (1.0 - close) * gw)
    tl.store(GB_NEW + bh * D + rd[None, :], (1.0 - close) * gb)
