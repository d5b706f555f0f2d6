"""The TTT math: one computation in three forms (naive oracle, dual, primal step), `[B, T, H, D]` layout."""

from .dual import ttt_dual
from .ln import gelu_tanh, gelu_tanh_bwd, ln_fused_l2_bwd, ln_fwd
from .naive import ttt_naive
from .primal import ttt_primal, ttt_primal_step
from .state import TTTState

TTT_IMPLEMENTATIONS = {"naive": ttt_naive, "dual": ttt_dual, "primal": ttt_primal}

__all__ = [
    "TTT_IMPLEMENTATIONS",
    "TTTState",
    "gelu_tanh",
    "gelu_tanh_bwd",
    "ln_fused_l2_bwd",
    "ln_fwd",
    "ttt_dual",
    "ttt_naive",
    "ttt_primal",
    "ttt_primal_step",
]
