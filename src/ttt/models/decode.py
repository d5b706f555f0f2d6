"""The compiled decode step: one token per row through the whole model as one torch.compile'd graph.

Eager decoding is dispatch-bound (about 700 small ops per token and layer pair at d = 256). With
`ttt_implementation="compiled"`, `TTTModel.forward` routes single-token calls with a cache through
`decode_step`: blocks (pre-conv step, TTT primal step, MLP) → final norm, traced once per batch size into
fused kernels. The graph runs the blocks' own forward code on per-layer states made fresh for the call (sharing the
cache's tensors), so the Python counters of the real cache (positions) never enter the graph's guards; the new
tensors are written back into the cache afterwards. Same math as the eager path (tested equal).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..layers import TTTLayerState

if TYPE_CHECKING:
    from .cache import TTTCache
    from .modeling import TTTModel


def _step(model: TTTModel, h: Tensor, states: list[TTTLayerState]) -> Tensor:
    for block, state in zip(model.layers, states):
        h = block(h, None, state)
    return model.norm(h)


@cache
def compiled_step():
    """The torch.compile'd graph of the blocks and final norm for one token: graph(model, h [B, 1, C], states)."""
    return torch.compile(_step, dynamic=False)


def decode_step(model: TTTModel, h: Tensor, cache: TTTCache) -> Tensor:
    """Embedded tokens h [B, 1, C] through the blocks and final norm of `model` (a TTTModel) with `cache` (a
    TTTCache), updated in place. Returns the final hidden states [B, 1, C]."""
    fresh = [TTTLayerState(ttt=layer.ttt, conv=dict(layer.conv)) for layer in cache.layers]
    h = compiled_step()(model, h, fresh)
    for layer, new in zip(cache.layers, fresh):
        layer.ttt, layer.conv = new.ttt, new.conv
        layer.num_positions += 1
    return h
