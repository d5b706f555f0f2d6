"""torch.compile'd steps of the TTT forms: the fast path on CPU (and the same code on CUDA).

Compiling the whole sequence loop unrolls it (minutes of compile for long T, then slower); compiling one step —
a mini-batch of the dual form, or the primal decode step — fuses its ~15 small ops into a few kernels and removes
most of the per-op dispatch overhead, with the Python loop over mini-batches left outside. Shapes are static per
step ([B, H, b, D]), so a model compiles once per batch size and variant (first call: ~15-50 s on this CPU).
The compiled functions are the reference functions themselves (`dual_mini_batch`, `ttt_primal_step`), so they
compute the same math; tests compare them with the eager forms.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch


@cache
def compiled(fn: Callable) -> Callable:
    """`torch.compile(fn)` with static shapes, made once per function."""
    return torch.compile(fn, dynamic=False)
