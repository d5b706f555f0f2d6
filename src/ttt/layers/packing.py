"""Padding-aware layout: move each row's real tokens (attention_mask = 1) to the front, in order.

Padding can then never reach a convolution state or the inner model: every mixer sees row r as its first
lengths[r] tokens, wherever the padding was (left, right, or between chunks of a cached sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Packing:
    valid: Tensor  # [B, T] bool: real tokens
    rank: Tensor  # [B, T] int64: slot of each real token in the packed layout
    lengths: Tensor  # [B] int64: real tokens per row

    @classmethod
    def from_mask(cls, mask: Tensor | None, batch_size: int, seq_len: int, device=None) -> Packing | None:
        """`mask` [B, ≥T] of 0/1 (the HF 2-D attention mask; its last T columns are this call's tokens). None when
        every token is real, so the common case costs nothing."""
        if mask is None:
            return None
        if mask.dim() != 2 or mask.shape[0] != batch_size:
            raise ValueError(
                f"attention_mask must be 2-D [batch={batch_size}, seq_len] of 0/1, got shape {tuple(mask.shape)}"
            )
        if mask.shape[1] < seq_len:
            raise ValueError(f"attention_mask has {mask.shape[1]} columns, fewer than the {seq_len} input tokens")
        mask = (
            mask[:, mask.shape[1] - seq_len :].to(device) if device is not None else mask[:, mask.shape[1] - seq_len :]
        )
        if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
            raise ValueError("attention_mask must hold 0 (padding) and 1 (real token) only, not an additive mask")
        valid = mask.bool()
        if bool(valid.all()):
            return None
        rank = valid.long().cumsum(1) - 1
        return cls(valid, rank, valid.sum(1))

    def pack(self, x: Tensor) -> Tensor:
        """x: [B, T, ...] -> same shape, real tokens first, zeros after."""
        seq_len = x.shape[1]
        slots = torch.where(self.valid, self.rank, seq_len)
        out = x.new_zeros((x.shape[0], seq_len + 1) + x.shape[2:])
        index = slots.view(slots.shape + (1,) * (x.dim() - 2)).expand_as(x)
        return out.scatter(1, index, x)[:, :seq_len]

    def unpack(self, y: Tensor) -> Tensor:
        """Inverse of `pack`: back to the original positions, zeros at padding."""
        index = self.rank.clamp(min=0)
        index = index.view(index.shape + (1,) * (y.dim() - 2)).expand_as(y)
        mask = self.valid.view(self.valid.shape + (1,) * (y.dim() - 2)).to(y.dtype)
        return y.gather(1, index) * mask
