"""Which form computes a TTT layer's inner loop: the one place that maps an implementation name to a form.

auto       the primal step for one token (decode), the dual form for several (prefill, training)
compiled   the same, each through torch.compile (the decode step unless already inside a compiled graph)
dual       the mini-batch driver with the dual (or, for a non-linear optimizer, per-token-weights) kernel
primal     the primal step token by token
naive      the token-by-token oracle with autograd inner gradients (slow; the reference)
triton     the fused Triton kernels (`triton/`, TTT-Linear and TTT-MLP; needs the triton package and CUDA tensors, or
           Triton's CPU interpreter): one launch per call over every mini-batch, the fused step for one token in
           inference
"""

from __future__ import annotations

import torch
from torch import Tensor

from .compiled import compiled
from .driver import ttt_dual
from .naive import ttt_naive
from .primal import ttt_primal, ttt_primal_step
from .spec import InnerSpec
from .state import TTTState

IMPLEMENTATIONS = ("auto", "dual", "primal", "naive", "compiled", "triton")


def ttt_forward(
    implementation: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    lengths: Tensor | None = None,
    retention: Tensor | None = None,
    remat_mini_batch_group_size: int = 0,
) -> tuple[Tensor, TTTState]:
    """z [B, T, H, D] and the new state for q, k, v [B, T, H, D], lr [B, T, H], in the form `implementation` names
    (see the module docstring; the arguments are those of `ttt_dual`). Raises ValueError for an unknown name."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    seq_len = q.shape[1]
    if implementation == "triton":
        # imported here: triton is an optional dependency
        from .triton import ttt_triton, ttt_triton_step

        if seq_len == 1 and not torch.is_grad_enabled():
            valid = None if lengths is None else lengths > 0
            r = None if retention is None else retention[:, 0]
            z, new_state = ttt_triton_step(q[:, 0], k[:, 0], v[:, 0], lr[:, 0], spec, state, valid, r)
            return z.unsqueeze(1), new_state
        return ttt_triton(q, k, v, lr, spec, state, lengths, retention)
    if implementation == "auto":
        implementation = "primal" if seq_len == 1 else "dual"
    if implementation in ("primal", "compiled") and seq_len == 1:
        valid = None if lengths is None else lengths > 0
        # (inside the compiled decode graph the step is traced as part of it)
        fast = implementation == "compiled" and not torch.compiler.is_compiling()
        step = compiled(ttt_primal_step) if fast else ttt_primal_step
        r = None if retention is None else retention[:, 0]
        z, new_state = step(q[:, 0], k[:, 0], v[:, 0], lr[:, 0], spec, state, valid, r)
        return z.unsqueeze(1), new_state
    if implementation == "primal":
        return ttt_primal(q, k, v, lr, spec, state, lengths, retention)
    if implementation == "naive":
        return ttt_naive(q, k, v, lr, spec, state, lengths, retention)
    return ttt_dual(
        q,
        k,
        v,
        lr,
        spec,
        state,
        lengths,
        retention,
        remat_mini_batch_group_size=remat_mini_batch_group_size,
        compile_mini_batch=implementation == "compiled",
    )
