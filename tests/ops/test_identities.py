"""The paper's equivalences, in float64.

Theorem 1: a linear inner model without bias, LN or residual, W0 = 0, batch GD (one mini-batch holding the whole
sequence) with a constant step and no token factor is causal linear attention: z = η tril(Q Kᵀ) V. With the code's
loss ½‖k W − v‖² the step that gives plain linear attention is η = 1 (with the paper's ‖k W − v‖², η = ½).
"""

from __future__ import annotations

import pytest
import torch

from ttt.ops import InnerSpec, TTTState, ttt_dual, ttt_naive, ttt_primal

from .helpers import max_diff

B, T, H, D = 2, 24, 2, 4


def plain_inputs(b: int, lr: float, w0: torch.Tensor | None = None):
    q, k, v = (torch.randn(B, T, H, D, dtype=torch.float64) for _ in range(3))
    w0 = torch.zeros(H, D, D, dtype=torch.float64) if w0 is None else w0
    state = TTTState.initial((w0, None), B)
    common = dict(
        lr=torch.full((B, T, H), lr, dtype=torch.float64),
        spec=InnerSpec(torch.ones(b, dtype=torch.float64), residual=False),
    )
    return q, k, v, state, common


@pytest.mark.parametrize("form", [ttt_naive, ttt_dual, ttt_primal], ids=lambda f: f.__name__)
def test_theorem1_linear_attention(form):
    q, k, v, state, common = plain_inputs(b=T, lr=1.0)
    z, _ = form(q, k, v, state=state, **common)
    scores = torch.einsum("bihd,bjhd->bhij", q, k).tril()
    linear_attention = torch.einsum("bhij,bjhd->bihd", scores, v)
    assert max_diff(z, linear_attention) < 1e-12


def test_theorem1_paper_loss_step():
    """Batch GD on the paper's loss ‖k W − v‖² (gradients by autograd) with η = ½ is linear attention, and equals
    our code-convention loss ½‖k W − v‖² at η = 1."""
    q, k, v, state, common = plain_inputs(b=T, lr=1.0)
    z_ours, _ = ttt_dual(q, k, v, state=state, **common)
    W = torch.zeros(B, H, D, D, dtype=torch.float64, requires_grad=True)
    expected = []
    for i in range(T):
        kj, vj = k[:, : i + 1].transpose(1, 2), v[:, : i + 1].transpose(1, 2)  # [B, H, i+1, D]
        paper_loss = (kj @ W - vj).pow(2).sum()
        (grad,) = torch.autograd.grad(paper_loss, W)
        W_i = W.detach() - 0.5 * grad
        expected.append((q[:, i].unsqueeze(-2) @ W_i).squeeze(-2))
    assert max_diff(z_ours, torch.stack(expected, 1)) < 1e-12


@pytest.mark.parametrize("form", [ttt_naive, ttt_dual, ttt_primal], ids=lambda f: f.__name__)
def test_mini_batch_one_is_the_delta_rule(form):
    """b = 1: online GD, W_t = W_{t−1} − η k_tᵀ (k_t W_{t−1} − v_t), z_t = q_t W_t."""
    w0 = 0.2 * torch.randn(H, D, D, dtype=torch.float64)
    q, k, v, state, common = plain_inputs(b=1, lr=0.3, w0=w0)
    z, final = form(q, k, v, state=state, **common)
    W = w0.expand(B, H, D, D)
    expected = []
    for t in range(T):
        kt, vt, qt = k[:, t].unsqueeze(-2), v[:, t].unsqueeze(-2), q[:, t].unsqueeze(-2)
        W = W - 0.3 * kt.transpose(-1, -2) @ (kt @ W - vt)
        expected.append((qt @ W).squeeze(-2))
    assert max_diff(z, torch.stack(expected, 1)) < 1e-12
    assert max_diff(final.params[0], W) < 1e-12


def test_mini_batch_whole_sequence_is_batch_gd():
    """b = T, full TTT-Linear (bias, LN, residual, learned rates): every token reads out from
    W0 − tf_i Σ_{j≤i} lr_j ∇ℓ_j(W0), gradients taken by autograd at W0 here."""
    w0 = (0.3 * torch.randn(H, D, D, dtype=torch.float64), 0.1 * torch.randn(H, 1, D, dtype=torch.float64))
    q, k, v = (torch.randn(1, T, H, D, dtype=torch.float64) for _ in range(3))
    lr = torch.rand(1, T, H, dtype=torch.float64)
    tf = 1.0 / torch.arange(1, T + 1, dtype=torch.float64)
    gamma, beta = 1 + 0.1 * torch.randn(H, D, dtype=torch.float64), 0.1 * torch.randn(H, D, dtype=torch.float64)
    z, _ = ttt_dual(q, k, v, lr, InnerSpec(tf, gamma, beta), TTTState.initial(w0, 1))

    def ln(x):
        return torch.nn.functional.layer_norm(x, (D,), eps=1e-6) * gamma.unsqueeze(1) + beta.unsqueeze(1)

    W, bias = (p.clone().requires_grad_() for p in w0)
    for i in range(T):
        kj, vj, lrj = k[0, : i + 1].transpose(0, 1), v[0, : i + 1].transpose(0, 1), lr[0, : i + 1].T  # [H, i+1, ·]
        per_token = 0.5 * (ln(kj @ W + bias) - (vj - kj)).pow(2).sum(-1)  # [H, i+1]
        gW, gb = torch.autograd.grad((lrj * per_token).sum(), (W, bias))
        qi = q[0, i].unsqueeze(1)
        expected = qi + ln(qi @ (W - tf[i] * gW) + (bias - tf[i] * gb))
        assert max_diff(z[0, i], expected.squeeze(1).detach()) < 1e-12


@pytest.mark.parametrize("scale", [None, 1.0], ids=["sqrt_d", "unit"])
def test_theorem2_nadaraya_watson_is_softmax_attention(scale):
    """The Nadaraya-Watson inner learner with kernel exp(scale · kᵀq) equals causal softmax attention."""
    from ttt.ops.nadaraya_watson import ttt_nadaraya_watson

    q, k, v = (torch.randn(B, T, H, D, dtype=torch.float64) for _ in range(3))
    z = ttt_nadaraya_watson(q, k, v, scale=scale)
    attention = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, scale=scale
    ).transpose(1, 2)
    assert max_diff(z, attention) < 1e-12
