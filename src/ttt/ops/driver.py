"""The mini-batch driver: lays a sequence out in mini-batches (`grid.py`) and runs them one after another.

Each mini-batch runs in the dual form (`dual.py`) when the inner optimizer is linear in the gradients, else with
per-token weights (`materialized.py`); optionally through torch.compile (`compiled.py`) and with groups of
mini-batches recomputed in backward (remat).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .compiled import compiled
from .dual import Completion, dual_mini_batch
from .grid import Grid
from .materialized import materialized_mini_batch
from .spec import InnerSpec
from .state import TTTState


def ttt_dual(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    spec: InnerSpec,
    state: TTTState,
    lengths: Tensor | None = None,
    retention: Tensor | None = None,
    remat_mini_batch_group_size: int = 0,
    materialize: bool | None = None,
    compile_mini_batch: bool = False,
) -> tuple[Tensor, TTTState]:
    """q, k, v: [B, T, H, D]; lr: [B, T, H]; spec: the loop's fixed part (token factors [b], LN, residual, inner
    optimizer: `spec.py`); state: the carried state; lengths: [B] or None; retention: [B, T, H] per-token r_t or None.

    Row r uses its first lengths[r] tokens (the rest are padding: output 0, no effect on the state). With
    `remat_mini_batch_group_size` = g > 0 and autograd on, each group of g mini-batches is recomputed in backward.
    Each mini-batch runs in the dual form when the optimizer is linear in G, else with per-token weights
    (`materialized.py`); `materialize=True` forces the latter. `compile_mini_batch`: run the per-mini-batch
    step through torch.compile (`compiled.py`). Returns z [B, T, H, D] and the state after each row's tokens.
    """
    if materialize is None:
        materialize = not spec.optimizer.is_linear
    mini_batch = materialized_mini_batch if materialize else dual_mini_batch
    if compile_mini_batch:
        mini_batch = compiled(mini_batch)
    batch, seq_len, heads, head_dim = q.shape
    b = spec.mini_batch_size
    if seq_len == 0:
        return q.new_zeros(q.shape), state
    grid = Grid.build(state.offset, lengths, seq_len, b)
    n_mb = grid.n_mb

    def mini_batches(x: Tensor) -> tuple[Tensor, ...]:
        # [B, grid_len, H, ...] -> n_mb × [B, H, b, ...], each contiguous: its strides then do not depend on the
        # sequence length, so a compiled mini-batch step (static shapes and strides) is not recompiled per length
        x = grid.place(x).view(batch, n_mb, b, heads, -1).permute(1, 0, 3, 2, 4).contiguous()
        return x.unbind(0)

    qs, ks, vs = mini_batches(q), mini_batches(k), mini_batches(v)
    lrs = tuple(x.squeeze(-1) for x in mini_batches(lr.unsqueeze(-1)))
    # empty grid slots keep r = 1 (no decay): shift by one so the grid's zeros mean 1
    rs: tuple[Tensor | None, ...] = (None,) * n_mb
    if retention is not None:
        rs = tuple(1 + x.squeeze(-1) for x in mini_batches(retention.unsqueeze(-1) - 1))

    completions: list[Completion] = []
    for m in range(n_mb):
        done = grid.completes(m)
        completions.append(all(done) or (any(done) and torch.tensor(done, device=q.device)))

    def run(first: int, last: int, carry: TTTState):
        outs = []
        for m in range(first, last):
            out, carry = mini_batch(qs[m], ks[m], vs[m], lrs[m], rs[m], spec, carry, completions[m])
            outs.append(out)
        return outs, carry

    carry = state
    group = remat_mini_batch_group_size if remat_mini_batch_group_size > 0 and torch.is_grad_enabled() else n_mb
    outs: list[Tensor] = []
    for first in range(0, n_mb, group):
        last = min(first + group, n_mb)
        if group < n_mb:
            chunk, carry = checkpoint(run, first, last, carry, use_reentrant=False)
        else:
            chunk, carry = run(first, last, carry)
        outs.extend(chunk)

    # n_mb × [B, H, b, D] -> [B, grid_len, H, D]
    out = torch.stack(outs, dim=1).permute(0, 1, 3, 2, 4).reshape(batch, grid.grid_len, heads, head_dim)
    return grid.take(out, seq_len), dataclasses.replace(carry, offset=grid.next_offset(q.device))
