"""What a TTT layer's inner loop is, apart from its tokens: one frozen object every form takes.

The per-token inputs (q, k, v, lr, and the retention r_t when there is one) and the carried `TTTState` change with
every call; the rest (the token factors, the LayerNorm inside the loss, the residual convention, the inner
optimizer) is fixed by the layer. `InnerSpec` holds that rest, so the forms (`naive.py`, `driver.py`, `primal.py`,
`forms.py`) share one signature: `form(q, k, v, lr, spec, state, ...)`.

The paper's plain TTT-Linear / TTT-MLP is `InnerSpec(token_factor)` with an LN: residual on, GD, no retention.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .inner import Norm
from .inner_optim import GD, InnerOptimizer
from .ln import TTT_LN_EPS


def check_triton_tiles(mini_batch_size: int, head_dim: int) -> None:
    """The Triton kernels' tiles (`tl.dot`): raise ValueError unless mini_batch_size and head_dim are powers of two
    >= 16. Here, not in `triton/`, so the layer config checks it without importing triton."""
    for name, value in (("mini_batch_size", mini_batch_size), ("head_dim", head_dim)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"ttt_implementation='triton' needs a power of two >= 16 for {name}, got {value}")


@dataclass(frozen=True)
class InnerSpec:
    """The fixed part of a TTT inner loop.

    token_factor: [b] tf_i, the factor of token i of a mini-batch (its length is the mini-batch size b);
    ln_weight, ln_bias: [H, D] γ, β of the per-head LayerNorm inside the loss, or both None for no LN;
    residual: the official code's convention, target v − k and output q + LN(f(q)) (False: target v, output LN(f(q)));
    eps: the LN's epsilon; optimizer: the inner optimizer (the paper's GD by default, `inner_optim.py`).

    Raises ValueError when token_factor is not 1-D or only one of ln_weight / ln_bias is given.
    Made by a layer with `TTTBase.inner_spec()`.
    """

    token_factor: Tensor
    ln_weight: Tensor | None = None
    ln_bias: Tensor | None = None
    residual: bool = True
    eps: float = TTT_LN_EPS
    optimizer: InnerOptimizer = GD

    def __post_init__(self) -> None:
        if self.token_factor.dim() != 1:
            raise ValueError(f"token_factor must be 1-D [mini_batch_size], got shape {tuple(self.token_factor.shape)}")
        if (self.ln_weight is None) != (self.ln_bias is None):
            raise ValueError("ln_weight and ln_bias go together: give both (an LN) or neither (no LN)")

    @property
    def mini_batch_size(self) -> int:
        """b, the number of tokens whose gradients are taken at the same weights."""
        return self.token_factor.shape[0]

    @property
    def norm(self) -> Norm:
        """(γ, β) as [H, 1, D], broadcasting over the tokens of a head, or None without LN."""
        if self.ln_weight is None or self.ln_bias is None:
            return None
        return self.ln_weight.unsqueeze(1), self.ln_bias.unsqueeze(1)
