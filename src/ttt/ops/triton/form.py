"""The Triton forms of TTT-Linear with the common signature `form(q, k, v, lr, spec, state, lengths, retention)`.

`ttt_triton` is the dual form over a whole call (prefill, training): the tokens go on the mini-batch grid of
`ops/grid.py` (so per-row offsets and padding work as in `ttt_dual`) and one kernel launch per direction runs every
mini-batch of every (row, head). `ttt_triton_step` is the primal decode step (`ops/primal.py`) as one launch.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..grid import Grid
from ..spec import InnerSpec
from ..state import TTTState
from .function import TTTLinearFunction, ttt_linear_step

PAPER_LAYER = "the paper's TTT-Linear (inner_optimizer='gd', inner_norm, inner_residual, inner_bias, no retention)"


def check_supported(spec: InnerSpec, state: TTTState, q: Tensor, retention: Tensor | None) -> None:
    """Raise ValueError (naming what differs) unless the kernels compute this inner loop and these inputs."""
    problems = []
    if len(state.params) != 2:
        problems.append("the inner model is an MLP (TTT-MLP has no Triton kernel yet)")
    elif state.params[1] is None:
        problems.append("inner_bias=False")
    if spec.optimizer.name != "gd":
        problems.append(f"inner_optimizer={spec.optimizer.name!r}")
    if spec.norm is None:
        problems.append("inner_norm=False")
    if not spec.residual:
        problems.append("inner_residual=False")
    if retention is not None or state.retention is not None:
        problems.append("retention (inner_weight_decay or forget_gate)")
    if problems:
        raise ValueError(f"ttt_implementation='triton' runs {PAPER_LAYER}; this layer has {', '.join(problems)}")
    b, dim = spec.mini_batch_size, q.shape[-1]
    for name, value in (("mini_batch_size", b), ("head_dim", dim)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"ttt_implementation='triton' needs a power of two >= 16 for {name}, got {value}")
    if q.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"ttt_implementation='triton' takes float32 or bfloat16 inputs, got {q.dtype}")
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"ttt_implementation='triton' needs CUDA tensors, got device {q.device.type!r} (set TRITON_INTERPRET=1 "
            "before importing triton to run the kernels in Triton's CPU interpreter: slow, meant for tests)"
        )


def _inner_state(state: TTTState, batch: int, heads: int, dim: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(W [B, H, D, D], b [B, H, D], G_W, G_b) in fp32, contiguous (a W0 expanded over rows is copied)."""
    w, b = state.params
    gw, gb = state.grad_sums_or_zeros()
    assert w is not None and b is not None and gw is not None and gb is not None
    square, row = (batch, heads, dim, dim), (batch, heads, dim)
    return (
        w.expand(square).float().contiguous(),
        b.expand(batch, heads, 1, dim).reshape(row).float().contiguous(),
        gw.expand(square).float().contiguous(),
        gb.expand(batch, heads, 1, dim).reshape(row).float().contiguous(),
    )


def _new_state(inner: tuple[Tensor, ...], dtype: torch.dtype, offset: Tensor) -> TTTState:
    w, b, gw, gb = (t.to(dtype) for t in inner)
    batch, heads, dim = b.shape
    return TTTState((w, b.view(batch, heads, 1, dim)), (gw, gb.view(batch, heads, 1, dim)), offset)


def _norm(spec: InnerSpec) -> tuple[Tensor, Tensor]:
    assert spec.ln_weight is not None and spec.ln_bias is not None
    return spec.ln_weight.contiguous(), spec.ln_bias.contiguous()


def ttt_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    lengths: Tensor | None = None,
    retention: Tensor | None = None,
) -> tuple[Tensor, TTTState]:
    """q, k, v: [B, T, H, D] fp32 or bf16; lr: [B, T, H]; the rest as `ttt_dual` (`ops/driver.py`), whose output
    and final state this equals; differentiable in every tensor input. Raises ValueError for a layer or input the
    kernels do not cover (`check_supported`). The state comes back in the dtype of the state's weights."""
    check_supported(spec, state, q, retention)
    batch, seq_len, heads, dim = q.shape
    if seq_len == 0:
        return q.new_zeros(q.shape), state
    grid = Grid.build(state.offset, lengths, seq_len, spec.mini_batch_size)

    def lay(x: Tensor) -> Tensor:  # [B, T, H, ...] -> [B, H, grid_len, ...]
        return grid.place(x).transpose(1, 2).contiguous()

    ends = torch.tensor(grid.ends, dtype=torch.long, device=q.device)
    inner = _inner_state(state, batch, heads, dim)
    out, *final = TTTLinearFunction.apply(
        lay(q), lay(k), lay(v), lay(lr.to(q.dtype)), spec.token_factor, *_norm(spec), *inner, ends, spec.eps
    )
    dtype = state.params[0].dtype if state.params[0] is not None else torch.float32
    return grid.take(out.transpose(1, 2), seq_len), _new_state(final, dtype, grid.next_offset(q.device))


def ttt_triton_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    valid: Tensor | None = None,
    retention: Tensor | None = None,
) -> tuple[Tensor, TTTState]:
    """The primal step (`ops/primal.py: ttt_primal_step`, same arguments: q, k, v [B, H, D], lr [B, H], valid [B]
    bool) in one kernel launch; no autograd (use `ttt_triton` to train through single tokens)."""
    check_supported(spec, state, q, retention)
    batch, heads, dim = q.shape
    keep = torch.ones(batch, device=q.device) if valid is None else valid.float()
    ln_weight, ln_bias = _norm(spec)
    out, inner = ttt_linear_step(
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        lr.to(q.dtype).contiguous(),
        spec.token_factor.detach().contiguous(),
        ln_weight.detach(),
        ln_bias.detach(),
        _inner_state(state, batch, heads, dim),
        state.offset.contiguous(),
        keep,
        spec.eps,
    )
    offset = (state.offset + keep.long()) % spec.mini_batch_size
    dtype = state.params[0].dtype if state.params[0] is not None else torch.float32
    return out, _new_state(inner, dtype, offset)
