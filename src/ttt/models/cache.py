"""`TTTCache`: the model's fixed-size inference state, one `TTTLayerState` per block, on transformers' Cache API.

Per layer: the inner weights W, b (and W2, b2) at the start of the current mini-batch, the η-weighted gradient sums,
the offset in the mini-batch per row, and the conv states. It does not grow with the context.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from ..layers.state import TTTLayerState


class TTTCache(Cache):
    def __init__(self, layers: list[TTTLayerState]):
        if not layers or not all(isinstance(layer, TTTLayerState) for layer in layers):
            raise TypeError("TTTCache takes a non-empty list of TTTLayerState (see TTTCache.from_model)")
        super().__init__(layers=list(layers))

    @classmethod
    def from_model(cls, model, batch_size: int, dtype: torch.dtype | None = None, device=None) -> TTTCache:
        """A fresh cache for `batch_size` sequences of a `TTTModel` / `TTTForCausalLM`."""
        base = getattr(model, "model", model)
        return cls([block.allocate_inference_cache(batch_size, dtype, device) for block in base.layers])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].num_positions

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.layers[layer_idx].get_mask_sizes(query_length)

    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = None) -> bool:
        return self.layers[layer_idx or 0].num_positions > 0

    @property
    def batch_size(self) -> int:
        return self.layers[0].batch_size

    def nbytes(self) -> int:
        """Bytes held by the cache (constant in the context length)."""
        return sum(layer.nbytes() for layer in self.layers)

    def __repr__(self) -> str:
        return f"TTTCache(layers={len(self.layers)}, batch_size={self.batch_size}, seen={self.get_seq_length()})"
