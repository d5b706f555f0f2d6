"""Independent references for the two classic special cases of TTT-Linear, written from their own formulas.

Causal linear attention (Theorem 1's form, no feature map, no normaliser), per head:

    z_t = Σ_{s ≤ t} η_s (q_t · k_s) v_s              Z = (Q Kᵀ ⊙ causal ⊙ η_s) V

The delta rule (online GD on ½‖k W − v‖², one token per step), per head, W_0 = 0:

    W_t = W_{t−1} − η_t k_tᵀ (k_t W_{t−1} − v_t),     z_t = q_t W_t

`delta_rule_recurrent` runs it token by token (the oracle); `delta_rule_chunked` computes the same numbers a chunk of
c tokens at a time: with S the weights at the chunk start and u_t = η_t (v_t − k_t W_{t−1}) (so W_t = S + Σ_{s≤t}
k_sᵀ u_s), the u solve a unit lower-triangular system

    (I + diag(η) tril(K Kᵀ, −1)) U = diag(η) (V − K S),     Z = Q S + tril(Q Kᵀ) U,     S ← S + Kᵀ U

TTT-Linear reduces to them (tests/experiments/test_mixers.py, float64) with no inner bias, LN or residual, W0 = 0,
a constant η = ttt_base_lr / head_dim and token factor 1: mini-batch ≥ T gives linear attention, mini-batch 1 the
delta rule. `LinearAttentionLayer` and `DeltaRuleLayer` keep TTTLinear's projections, RoPE, output norm and output
projection (`TTTBase.views`, `TTTBase._mix`) and replace only the inner loop by these formulas; they run training
and evaluation forwards (no cache, no padding masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers import TTTLinear, register_ttt_layer

# the switches that make TTTLinear one of the special cases
SPECIAL_CASE = dict(
    inner_bias=False, inner_norm=False, inner_residual=False, learnable_init=False, lr_gate=False, token_factor="one"
)


def _per_token(eta: float | Tensor, q: Tensor) -> Tensor:
    """η as a [B, T, H] tensor."""
    if isinstance(eta, Tensor):
        return eta.to(q.dtype).expand(q.shape[:3])
    return q.new_full(q.shape[:3], float(eta))


def linear_attention(q: Tensor, k: Tensor, v: Tensor, eta: float | Tensor = 1.0) -> Tensor:
    """z_t = Σ_{s≤t} η_s (q_t·k_s) v_s. q, k, v: [B, T, H, D]; eta: a number or [B, T, H]. Returns [B, T, H, D]."""
    eta = _per_token(eta, q)
    scores = torch.einsum("bihd,bjhd->bhij", q, k).tril()  # [B, H, T, T]
    scores = scores * eta.permute(0, 2, 1).unsqueeze(2)  # η_s weights column s
    return torch.einsum("bhij,bjhd->bihd", scores, v)


def delta_rule_recurrent(
    q: Tensor, k: Tensor, v: Tensor, eta: float | Tensor = 1.0, w0: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The delta rule token by token: W_t = W_{t−1} − η_t k_tᵀ(k_t W_{t−1} − v_t), z_t = q_t W_t.
    q, k, v: [B, T, H, D]; w0: [B, H, D, D] or None (zeros). Returns z [B, T, H, D] and W_T [B, H, D, D]."""
    batch, seq_len, heads, dim = q.shape
    eta = _per_token(eta, q)
    W = q.new_zeros(batch, heads, dim, dim) if w0 is None else w0
    out = []
    for t in range(seq_len):
        kt, vt, qt = k[:, t].unsqueeze(-2), v[:, t].unsqueeze(-2), q[:, t].unsqueeze(-2)  # [B, H, 1, D]
        W = W - eta[:, t, :, None, None] * kt.transpose(-1, -2) @ (kt @ W - vt)
        out.append((qt @ W).squeeze(-2))
    return torch.stack(out, 1), W


def delta_rule_chunked(
    q: Tensor, k: Tensor, v: Tensor, eta: float | Tensor = 1.0, w0: Tensor | None = None, chunk: int = 16
) -> tuple[Tensor, Tensor]:
    """The same function as `delta_rule_recurrent`, a chunk of `chunk` tokens per step (see the module docstring).
    Returns z [B, T, H, D] and W_T [B, H, D, D]."""
    batch, seq_len, heads, dim = q.shape
    eta = _per_token(eta, q)
    pad = -seq_len % chunk
    # zero-padded tokens have k = 0 and η = 0, so u = 0 and they change nothing
    q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    eta = F.pad(eta, (0, 0, 0, pad))
    n = (seq_len + pad) // chunk
    # [n, B, H, c, D] and [n, B, H, c, 1]
    qc, kc, vc = (t.view(batch, n, chunk, heads, dim).permute(1, 0, 3, 2, 4) for t in (q, k, v))
    ec = eta.view(batch, n, chunk, heads).permute(1, 0, 3, 2).unsqueeze(-1)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    S = q.new_zeros(batch, heads, dim, dim) if w0 is None else w0
    out = []
    for qi, ki, vi, ei in zip(qc.unbind(0), kc.unbind(0), vc.unbind(0), ec.unbind(0)):
        kk = ki @ ki.transpose(-1, -2)  # [B, H, c, c]
        A = eye + ei * kk.tril(-1)
        U = torch.linalg.solve_triangular(A, ei * (vi - ki @ S), upper=False, unitriangular=True)  # [B, H, c, D]
        out.append(qi @ S + (qi @ ki.transpose(-1, -2)).tril() @ U)
        S = S + ki.transpose(-1, -2) @ U
    z = torch.stack(out, 1)  # [B, n, H, c, D]
    z = z.permute(0, 1, 3, 2, 4).reshape(batch, n * chunk, heads, dim)[:, :seq_len]
    return z, S


class _FormulaLayer(TTTLinear):
    """TTTLinear with the special-case switches fixed and the inner loop replaced by a formula; no cache."""

    supports_cache = False

    def __init__(self, hidden_size: int, num_heads: int, **kwargs) -> None:
        for name, value in SPECIAL_CASE.items():
            if kwargs.get(name, value) != value:
                raise ValueError(f"{type(self).__name__} is a fixed special case: {name} must stay {value!r}")
        kwargs.update(SPECIAL_CASE)
        super().__init__(hidden_size, num_heads, **kwargs)

    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None):
        raise NotImplementedError(f"{type(self).__name__} runs training and evaluation forwards only (no cache)")

    def _check_state(self, state, batch: int, dtype=None) -> None:
        self.allocate_inference_cache(batch)

    def _check_lengths(self, lengths: Tensor | None) -> None:
        if lengths is not None:
            raise NotImplementedError(f"{type(self).__name__} does not take padding masks; give unpadded batches")


class LinearAttentionLayer(_FormulaLayer):
    """Causal linear attention z = η tril(Q Kᵀ) V with η = ttt_base_lr / head_dim, inside TTTLinear's projections.
    RoPE is applied at position mod mini_batch_size, as in the TTT layer: give mini_batch_size ≥ the length."""

    def inner_loop(self, x, q, k, v, lr, ttt_state, lengths):
        self._check_lengths(lengths)
        return linear_attention(q, k, v, lr), ttt_state


class DeltaRuleLayer(_FormulaLayer):
    """The delta rule with η = ttt_base_lr / head_dim, inside TTTLinear's projections (chunked form, exact).
    mini_batch_size is fixed to 1, so RoPE sees position 0 everywhere (the identity), as in TTTLinear(b=1)."""

    def __init__(self, hidden_size: int, num_heads: int, chunk: int = 16, **kwargs) -> None:
        if kwargs.get("mini_batch_size", 1) != 1:
            raise ValueError("DeltaRuleLayer is mini-batch TTT with mini_batch_size 1")
        kwargs["mini_batch_size"] = 1
        super().__init__(hidden_size, num_heads, **kwargs)
        self.chunk = chunk

    def inner_loop(self, x, q, k, v, lr, ttt_state, lengths):
        self._check_lengths(lengths)
        z, _ = delta_rule_chunked(q, k, v, lr, chunk=self.chunk)
        return z, ttt_state


def register_linear_attention_layer() -> None:
    """Make `ttt_layer_type="linear_attention"` buildable by TTTConfig / TTTForCausalLM in this process (the
    ladder's first row). Idempotent."""
    register_ttt_layer("linear_attention", LinearAttentionLayer)
