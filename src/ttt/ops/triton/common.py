"""Tile helpers the Triton kernels share: the per-head LayerNorm, its backward fused with the L2 loss (first and
second order) and tanh-GELU with its first and second derivatives; the torch versions are in `ops/ln.py`.

Every LN helper works on a tile z [M, D] (rows: tokens, D: head_dim), over its last dim, biased variance.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def ln_stats(z, D: tl.constexpr, eps):
    """x̂ = (z − μ) / σ and σ = sqrt(var + ε) over the last dim of z [M, D] (biased variance, as `ops/ln.py`)."""
    mu = tl.sum(z, axis=1) / D
    centred = z - mu[:, None]
    std = tl.sqrt(tl.sum(centred * centred, axis=1) / D + eps)
    return centred / std[:, None], std


@triton.jit
def ln_bwd(dy, x_hat, std, D: tl.constexpr):
    """∂/∂z of the normalisation x̂(z), given dy = ∂/∂x̂ [M, D]."""
    mean_dy = tl.sum(dy, axis=1) / D
    mean_dy_x = tl.sum(dy * x_hat, axis=1) / D
    return (dy - mean_dy[:, None] - x_hat * mean_dy_x[:, None]) / std[:, None]


@triton.jit
def ln_l2_grad(x_hat, std, target, gamma, beta, D: tl.constexpr):
    """ĝ = γ ⊙ (LN(z) − t) and g = ∂/∂z ½‖LN(z) − t‖² (`ops/ln.py: ln_fused_l2_bwd`), for z [M, D]."""
    g_hat = (gamma[None, :] * x_hat + beta[None, :] - target) * gamma[None, :]
    sum_g = tl.sum(g_hat, axis=1)
    sum_gx = tl.sum(g_hat * x_hat, axis=1)
    g = (D * g_hat - sum_g[:, None] - x_hat * sum_gx[:, None]) / (D * std[:, None])
    return g_hat, g


@triton.jit
def ln_l2_grad_bwd(dg, g, g_hat, x_hat, std, target, gamma, beta, D: tl.constexpr):
    """Backward of `ln_l2_grad` (second order in z): from dg = ∂/∂g, the gradients of z, t, γ and β.

    g = (ĝ − mean ĝ − x̂ mean(ĝ x̂)) / σ with ĝ = γ ⊙ (γ x̂ + β − t); σ enters g directly (∂σ/∂z = x̂ / D) and
    through x̂ (`ln_bwd`)."""
    a = dg / std[:, None]
    mean_a = tl.sum(a, axis=1) / D
    mean_ax = tl.sum(a * x_hat, axis=1) / D
    mean_gx = tl.sum(g_hat * x_hat, axis=1) / D
    d_g_hat = a - mean_a[:, None] - x_hat * mean_ax[:, None]
    d_x_hat = -mean_gx[:, None] * a - g_hat * mean_ax[:, None] + d_g_hat * gamma[None, :] * gamma[None, :]
    d_std = -tl.sum(a * g, axis=1)
    dz = ln_bwd(d_x_hat, x_hat, std, D) + d_std[:, None] * x_hat / D
    d_target = -d_g_hat * gamma[None, :]
    d_gamma = tl.sum(d_g_hat * (2.0 * gamma[None, :] * x_hat + beta[None, :] - target), axis=0)
    d_beta = tl.sum(d_g_hat * gamma[None, :], axis=0)
    return dz, d_target, d_gamma, d_beta


@triton.jit
def tanh(u):
    # tanh u = 1 − 2 / (e^{2u} + 1), with 2u capped at 40 (tanh 20 = 1 in fp32) so e^{2u} stays finite
    return 1.0 - 2.0 / (tl.exp(tl.minimum(2.0 * u, 40.0)) + 1.0)


@triton.jit
def gelu(x):
    """(√(2/π) = 0.7978845608028654, exact: the official code truncates it to 0.79788456 in its GELU backward;
    `ops/ln.py` explains.) gelu_tanh(x) = ½ x (1 + tanh u), u = √(2/π) (x + 0.044715 x³)."""
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@triton.jit
def gelu_grad(x):
    """gelu_tanh'(x) = ½ (1 + t) + ½ x (1 − t²) u′ and gelu_tanh''(x) = (1 − t²) u′ + ½ x (1 − t²) (u″ − 2 t u′²),
    with t = tanh u, u′ = √(2/π) (1 + 3·0.044715 x²), u″ = 6·0.044715 √(2/π) x."""
    t = tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
    du = 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x)
    d2u = 6.0 * 0.044715 * 0.7978845608028654 * x
    sech2 = 1.0 - t * t
    first = 0.5 * (1.0 + t) + 0.5 * x * sech2 * du
    second = sech2 * du + 0.5 * x * sech2 * (d2u - 2.0 * t * du * du)
    return first, second


@triton.jit
def program_setup(TF, LN_W, LN_B, ENDS, H, D: tl.constexpr, MB: tl.constexpr):
    """What a sequence kernel's program reads once: its row, its (row, head) index bh, the LN's γ, β [D] of its head,
    the token factors tf [MB] (and tf_{b−1}) and ENDS[row], the slot after the row's last real token."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    rd = tl.arange(0, D)
    gamma = tl.load(LN_W + head * D + rd).to(tl.float32)
    beta = tl.load(LN_B + head * D + rd).to(tl.float32)
    tf = tl.load(TF + tl.arange(0, MB)).to(tl.float32)
    tf_last = tl.load(TF + MB - 1).to(tl.float32)
    return row, row * H + head, gamma, beta, tf, tf_last, tl.load(ENDS + row)


@triton.jit
def load_tokens(Q, K, V, LR, bh, N, m, D: tl.constexpr, MB: tl.constexpr):
    """Mini-batch m of program bh: the token slots tok [MB], their [MB, D] offsets md, and keys, queries, values
    [MB, D] and learning rates [MB] in fp32."""
    tok = bh * N + m * MB + tl.arange(0, MB)
    md = tok[:, None] * D + tl.arange(0, D)[None, :]
    keys = tl.load(K + md).to(tl.float32)
    queries = tl.load(Q + md).to(tl.float32)
    values = tl.load(V + md).to(tl.float32)
    return tok, md, keys, queries, values, tl.load(LR + tok).to(tl.float32)


@triton.jit
def causal_eta(tf, lr, MB: tl.constexpr):
    """The lower-triangular mask [MB, MB] (j ≤ i) and η[i, j] = tf_i lr_j under it."""
    rm = tl.arange(0, MB)
    causal = rm[:, None] >= rm[None, :]
    return causal, tl.where(causal, tf[:, None] * lr[None, :], 0.0)


@triton.jit
def store_shared_grads(DTF, DLN_W, DLN_B, bh, d_tf, d_tf_last, d_gamma, d_beta, D: tl.constexpr, MB: tl.constexpr):
    """A backward program's partial gradients of the token factors (d_tf_last added to tf_{b−1}'s) and of γ, β."""
    rm = tl.arange(0, MB)
    rd = tl.arange(0, D)
    tl.store(DTF + bh * MB + rm, d_tf + tl.where(rm == MB - 1, d_tf_last, 0.0))
    tl.store(DLN_W + bh * D + rd, d_gamma)
    tl.store(DLN_B + bh * D + rd, d_beta)


@triton.jit
def step_setup(Q, K, V, LR, TF, LN_W, LN_B, OFFSET, VALID, H, D: tl.constexpr, MB: tl.constexpr):
    """What a step kernel's program reads: its row, bh, γ, β [D], the token's key, query, value [D] in fp32, valid
    (1.0, or 0.0 for a padding token), its learning rate (0 when padding), its offset in the mini-batch, tf at that
    offset and tf_{b−1}."""
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    bh = row * H + head
    rd = tl.arange(0, D)
    gamma = tl.load(LN_W + head * D + rd).to(tl.float32)
    beta = tl.load(LN_B + head * D + rd).to(tl.float32)
    keys = tl.load(K + bh * D + rd).to(tl.float32)
    queries = tl.load(Q + bh * D + rd).to(tl.float32)
    values = tl.load(V + bh * D + rd).to(tl.float32)
    valid = tl.load(VALID + row).to(tl.float32)
    lr = tl.load(LR + bh).to(tl.float32) * valid
    offset = tl.load(OFFSET + row)
    tf = tl.load(TF + offset).to(tl.float32)
    tf_last = tl.load(TF + MB - 1).to(tl.float32)
    return bh, gamma, beta, keys, queries, values, valid, lr, offset, tf, tf_last
