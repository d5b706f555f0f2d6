"""The TTT math, `[B, T, H, D]` layout: one computation in several forms, each its own file.

spec.py (InnerSpec: the fixed part of an inner loop), state.py (the carried state), inner.py (the inner model, its
loss and read-out: the paper's equations), naive.py (token-by-token oracle), dual.py (one mini-batch in the dual
form) + driver.py (mini-batches over a sequence, remat, compile), materialized.py (per-token weights, for non-linear
inner optimizers), primal.py (the decode step), forms.py (which form an implementation name runs), inner_optim.py,
ln.py, generic.py, nadaraya_watson.py.

Every form takes `(q, k, v, lr, spec, state, ...)`."""

from .driver import ttt_dual
from .forms import IMPLEMENTATIONS, ttt_forward
from .generic import ttt_generic
from .inner import forward_keys, read_out
from .inner_optim import BUFFERS, OPTIMIZERS, InnerOptimizer
from .ln import gelu_tanh, gelu_tanh_bwd, ln_fused_l2_bwd, ln_fwd
from .nadaraya_watson import ttt_nadaraya_watson
from .naive import ttt_naive
from .primal import ttt_primal, ttt_primal_step
from .spec import InnerSpec, check_triton_tiles
from .state import Params, TTTState, layer_weight

__all__ = [
    "BUFFERS",
    "IMPLEMENTATIONS",
    "OPTIMIZERS",
    "InnerOptimizer",
    "InnerSpec",
    "check_triton_tiles",
    "Params",
    "TTTState",
    "forward_keys",
    "read_out",
    "gelu_tanh",
    "layer_weight",
    "gelu_tanh_bwd",
    "ln_fused_l2_bwd",
    "ln_fwd",
    "ttt_dual",
    "ttt_forward",
    "ttt_generic",
    "ttt_nadaraya_watson",
    "ttt_naive",
    "ttt_primal",
    "ttt_primal_step",
]
