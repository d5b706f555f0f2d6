"""Per-head LayerNorm, its backward fused with the L2 reconstruction loss, and tanh-GELU with its derivative.

LayerNorm over the last dim (head_dim), biased variance, as the official TTT code:

    LN(z) = γ ⊙ (z − μ) / sqrt(σ² + ε) + β

Fused backward of the inner loss ℓ = ½ ‖LN(z) − t‖² with respect to z (x̂ the normalised z, D = head_dim):

    ĝ = γ ⊙ (LN(z) − t)
    ∂ℓ/∂z = (D ĝ − Σ ĝ − x̂ Σ(ĝ ⊙ x̂)) / (D · sqrt(σ² + ε))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TTT_LN_EPS = 1e-6


def _normalise(z: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    mu = z.mean(dim=-1, keepdim=True)
    var = z.var(dim=-1, keepdim=True, unbiased=False)
    std = torch.sqrt(var + eps)
    return (z - mu) / std, std


def ln_fwd(z: Tensor, weight: Tensor, bias: Tensor, eps: float = TTT_LN_EPS) -> Tensor:
    """LN(z) over the last dim; `weight`/`bias` broadcast against `z` (e.g. [H, 1, D] for z [B, H, N, D])."""
    x_hat, _ = _normalise(z, eps)
    return weight * x_hat + bias


def ln_fused_l2_bwd(z: Tensor, target: Tensor, weight: Tensor, bias: Tensor, eps: float = TTT_LN_EPS) -> Tensor:
    """∂/∂z of ½‖LN(z) − target‖² (summed over the last dim), computed analytically. Same shape as z."""
    d = z.shape[-1]
    x_hat, std = _normalise(z, eps)
    grad_x_hat = (weight * x_hat + bias - target) * weight
    return (
        d * grad_x_hat - grad_x_hat.sum(dim=-1, keepdim=True) - x_hat * (grad_x_hat * x_hat).sum(dim=-1, keepdim=True)
    ) / (d * std)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation: ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))."""
    return F.gelu(x, approximate="tanh")


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def gelu_tanh_bwd(x: Tensor) -> Tensor:
    """d gelu_tanh(x) / dx = ½(1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3·0.044715 x²), u = √(2/π)(x + 0.044715 x³).

    The official code truncates √(2/π) to 0.79788456 here (relative change ~1e-10); we use the exact derivative of
    the forward, which is what the naive autograd oracle checks.
    """
    tanh_u = torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
    return 0.5 * (1.0 + tanh_u) + 0.5 * x * (1.0 - tanh_u * tanh_u) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
