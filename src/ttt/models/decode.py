"""The compiled decode step: one token per row through the whole model as one torch.compile'd graph.

Eager decoding is dispatch-bound (about 700 small ops per token and layer pair at d = 256). With
`ttt_implementation="compiled"`, `TTTModel.forward` routes single-token calls with a cache through
`decode_step`: blocks (pre-conv step, TTT primal step, MLP) → final norm, traced once per batch size into
fused kernels. The graph runs the modules' own forward code on stand-in per-layer states made fresh for the call,
so the Python counters of the real cache (positions) never enter the graph's guards; the new tensors are copied
back into the cache afterwards. Same math as the eager path (tested equal).
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor, nn

from ..layers import TTTLayerState


class _Layers:
    """The one thing the blocks read from a cache: `.layers[layer_idx]`."""

    def __init__(self, layers: list[TTTLayerState]) -> None:
        self.layers = layers


def _step(model: nn.Module, h: Tensor, layers: list[TTTLayerState]) -> Tensor:
    cache = _Layers(layers)
    for block in model.layers:
        h = block(h, None, cache)
    return model.norm(h)


@cache
def _compiled_step():
    return torch.compile(_step, dynamic=False)


def decode_step(model: nn.Module, h: Tensor, cache) -> Tensor:
    """Embedded tokens h [B, 1, C] through the blocks and final norm of `model` (a TTTModel) with `cache` (a
    TTTCache), updated in place. Returns the final hidden states [B, 1, C]."""
    fresh = [TTTLayerState(ttt=layer.ttt, conv=dict(layer.conv)) for layer in cache.layers]
    h = _compiled_step()(model, h, fresh)
    for layer, new in zip(cache.layers, fresh):
        layer.ttt, layer.conv = new.ttt, new.conv
        layer.num_positions += 1
    return h
