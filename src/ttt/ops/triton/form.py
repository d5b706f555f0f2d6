"""The Triton forms of TTT-Linear and TTT-MLP, with the common signature
`form(q, k, v, lr, spec, state, lengths, retention)`.

`ttt_triton` is the dual form over a whole call (prefill, training): the tokens go on the mini-batch grid of
`ops/grid.py` (so per-row offsets and padding work as in `ttt_dual`) and one kernel launch per direction runs every
mini-batch of every (row, head). `ttt_triton_step` is the primal decode step (`ops/primal.py`) as one launch.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..grid import Grid
from ..spec import InnerSpec, check_triton_tiles
from ..state import Params, TTTState, layer_weight
from .function import KERNELS, TTTFunction, step

PAPER_LAYER = (
    "the paper's TTT-Linear / TTT-MLP (inner_optimizer='gd', inner_norm, inner_residual, inner_bias, no retention)"
)


def check_supported(spec: InnerSpec, state: TTTState, q: Tensor, retention: Tensor | None) -> None:
    """Raise ValueError (naming what differs) unless the kernels compute this inner loop and these inputs."""
    problems = []
    if len(state.params) not in (2, 4):
        problems.append(f"an inner model of {len(state.params) // 2} layers (the kernels: TTT-Linear, TTT-MLP)")
    elif any(bias is None for bias in state.params[1::2]):
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
    check_triton_tiles(spec.mini_batch_size, q.shape[-1])
    if q.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"ttt_implementation='triton' takes float32 or bfloat16 inputs, got {q.dtype}")
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"ttt_implementation='triton' needs CUDA tensors, got device {q.device.type!r} (set TRITON_INTERPRET=1 "
            "before importing triton to run the kernels in Triton's CPU interpreter: slow, meant for tests)"
        )


def _kind(state: TTTState) -> str:
    return "linear" if len(state.params) == 2 else "mlp"


def _pack(params: Params, kind: str, batch: int, heads: int, dim: int) -> Tensor:
    """The inner tensors (each [B or 1, H, rows, cols], a W0 possibly expanded over rows) as one [B, H, P] fp32."""
    flat = []
    for p, (rows, cols) in zip(params, KERNELS[kind].sizes(dim)):
        assert p is not None
        flat.append(p.expand(batch, heads, rows, cols).reshape(batch, heads, rows * cols))
    return torch.cat(flat, dim=-1).float().contiguous()


def _unpack(packed: Tensor, kind: str, dim: int, dtype: torch.dtype) -> Params:
    """Inverse of `_pack`: [B, H, P] -> the inner tensors [B, H, rows, cols] in `dtype`."""
    batch, heads, _ = packed.shape
    sizes = KERNELS[kind].sizes(dim)
    parts = packed.split([rows * cols for rows, cols in sizes], dim=-1)
    return tuple(t.view(batch, heads, rows, cols).to(dtype) for t, (rows, cols) in zip(parts, sizes))


def _new_state(kind: str, packed: tuple[Tensor, Tensor], dim: int, dtype: torch.dtype, offset: Tensor) -> TTTState:
    return TTTState(_unpack(packed[0], kind, dim, dtype), _unpack(packed[1], kind, dim, dtype), offset)


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
    kind = _kind(state)
    s0 = _pack(state.params, kind, batch, heads, dim)
    g0 = _pack(state.grad_sums_or_zeros(), kind, batch, heads, dim)
    tf = spec.token_factor.contiguous()
    out, s, g = TTTFunction.apply(
        kind, lay(q), lay(k), lay(v), lay(lr.to(q.dtype)), tf, *_norm(spec), s0, g0, ends, spec.eps
    )
    new_state = _new_state(kind, (s, g), dim, layer_weight(state.params, 0).dtype, grid.next_offset(q.device))
    return grid.take(out.transpose(1, 2), seq_len), new_state


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
    kind = _kind(state)
    packed = (_pack(state.params, kind, batch, heads, dim), _pack(state.grad_sums_or_zeros(), kind, batch, heads, dim))
    out, s, g = step(
        kind,
        q.contiguous(),
        k.contiguous(),
        v.contiguous(),
        lr.to(q.dtype).contiguous(),
        spec.token_factor.detach().contiguous(),
        ln_weight.detach(),
        ln_bias.detach(),
        packed,
        state.offset.contiguous(),
        keep,
        spec.eps,
    )
    offset = (state.offset + keep.long()) % spec.mini_batch_size
    return out, _new_state(kind, (s, g), dim, layer_weight(state.params, 0).dtype, offset)
