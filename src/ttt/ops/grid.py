"""The mini-batch grid: where each token of a call sits among the mini-batches of its row.

Rows may start at different offsets inside a mini-batch (a cache) and hold different numbers of real tokens
(padding). Tokens are laid out on a grid aligned to each row's mini-batch boundaries: token t of row r goes to
slot offset_r + t, empty slots hold zeros (so lr = 0 there: no effect on the state) and a mini-batch closes only
for the rows that fill it. The dual-form driver (`driver.py`) and the Triton kernels (`triton/`) share this layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Grid:
    """The layout of a call of T tokens per row on n_mb mini-batches of size b.

    ends: [B] (Python ints) the slot after each row's last real token (offset + length);
    slots: [B, T] int64 slot of each token (padding tokens: the scratch slot grid_len), None when every row starts at
    the same offset `front` and has T real tokens (then the grid is a plain pad)."""

    mini_batch_size: int
    n_mb: int
    ends: tuple[int, ...]
    front: int
    slots: Tensor | None

    @classmethod
    def build(cls, offset: Tensor, lengths: Tensor | None, seq_len: int, mini_batch_size: int) -> Grid:
        """offset: [B] int64, the tokens each row has seen in its current mini-batch; lengths: [B] real tokens per
        row (None: all seq_len)."""
        b = mini_batch_size
        offsets = offset.tolist()
        counts = [seq_len] * len(offsets) if lengths is None else [int(n) for n in lengths.tolist()]
        ends = tuple(o + n for o, n in zip(offsets, counts))
        n_mb = max(1, math.ceil(max(ends) / b))
        slots = None
        if len(set(offsets)) != 1 or any(n != seq_len for n in counts):
            steps = torch.arange(seq_len, device=offset.device)
            real = steps.unsqueeze(0) < torch.tensor(counts, device=offset.device).unsqueeze(1)
            # padding tokens go to a scratch slot past the grid
            slots = torch.where(real, offset.unsqueeze(1) + steps.unsqueeze(0), n_mb * b)
        return cls(b, n_mb, ends, offsets[0], slots)

    @property
    def grid_len(self) -> int:
        return self.n_mb * self.mini_batch_size

    def place(self, x: Tensor) -> Tensor:
        """x [B, T, ...] on the grid: [B, grid_len, ...], zeros in empty slots."""
        if self.slots is None:
            pad = [0, 0] * (x.dim() - 2) + [self.front, self.grid_len - self.front - x.shape[1]]
            return F.pad(x, pad)
        grid = x.new_zeros((x.shape[0], self.grid_len + 1) + x.shape[2:])
        index = self.slots.view(self.slots.shape + (1,) * (x.dim() - 2)).expand_as(x)
        return grid.scatter(1, index, x)[:, : self.grid_len]

    def take(self, y: Tensor, seq_len: int) -> Tensor:
        """Inverse of `place` for y [B, grid_len, ...]: [B, seq_len, ...], padding tokens zero."""
        if self.slots is None:
            return y[:, self.front : self.front + seq_len]
        index = self.slots.clamp(max=y.shape[1] - 1)
        out = y.gather(1, index.view(index.shape + (1,) * (y.dim() - 2)).expand(index.shape + y.shape[2:]))
        real = (self.slots < self.grid_len).view(self.slots.shape + (1,) * (y.dim() - 2))
        return out * real.to(out.dtype)

    def completes(self, m: int) -> list[bool]:
        """Per row: does row r fill mini-batch m (so closes it)?"""
        return [(m + 1) * self.mini_batch_size <= e for e in self.ends]

    def next_offset(self, device: torch.device) -> Tensor:
        """[B] int64, each row's offset in its mini-batch after the call."""
        return torch.tensor([e % self.mini_batch_size for e in self.ends], dtype=torch.long, device=device)
