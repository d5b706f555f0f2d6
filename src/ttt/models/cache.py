"""`TTTCache`: the model's fixed-size inference state, one `TTTLayerState` per block, on transformers' Cache API.

Per layer: the inner weights W, b (and W2, b2) at the start of the current mini-batch, the η-weighted gradient sums,
the offset in the mini-batch per row, and the conv states. It does not grow with the context.
"""

from __future__ import annotations

import weakref
from typing import Any, cast

import torch
from torch import Tensor
from transformers.cache_utils import Cache

from ..layers import TTTLayerState


class TTTCache(Cache):
    """The fixed-size inference state of a whole model (transformers' `Cache` API): one `TTTLayerState` per block.

    Made by `TTTCache.from_model(model, batch_size)` (or by the model on its first cached call); passed to the model
    as `cache=` (or `past_key_values=`) and updated in place; its size does not grow with the context
    (`nbytes()`). Supports beam search / `num_return_sequences` (reorder, repeat), `clone()` for forks and
    `save`/`load` for sessions; it cannot be cropped (assisted decoding), since tokens are folded into the inner
    weights. Raises TypeError when built from anything but TTTLayerStates."""

    # transformers types `layers` as its own layer classes; TTTLayerState implements their protocol without
    # subclassing them (it holds no keys / values), so the stub's type is too narrow here
    layers: list[TTTLayerState]  # type: ignore[assignment]
    input_ids: Tensor | None  # the tokens so far, set by `load` (None when the session had none)
    rng_state: Tensor | None  # the sampler's RNG state, set by `load`
    _model_ref: weakref.ref[Any] | None  # the model made for (`from_model`), for `save`

    def __init__(self, layers: list[TTTLayerState]):
        if not layers or not all(isinstance(layer, TTTLayerState) for layer in layers):
            raise TypeError("TTTCache takes a non-empty list of TTTLayerState (see TTTCache.from_model)")
        super().__init__(layers=cast("list[Any]", list(layers)))
        self.input_ids = self.rng_state = None
        self._model_ref = None

    @classmethod
    def from_model(cls, model, batch_size: int, dtype: torch.dtype | None = None, device=None) -> TTTCache:
        """A fresh cache for `batch_size` sequences of a `TTTModel` / `TTTForCausalLM`."""
        base = getattr(model, "model", model)
        cache = cls([block.allocate_inference_cache(batch_size, dtype, device) for block in base.layers])
        cache._model_ref = weakref.ref(base)
        return cache

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].num_positions

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.layers[layer_idx].get_mask_sizes(query_length)

    def has_previous_state(self, layer_idx: int | None = None, state_idx: int | None = None) -> bool:
        return self.layers[layer_idx or 0].num_positions > 0

    @property
    def batch_size(self) -> int:
        return self.layers[0].batch_size

    def save(self, path, model=None, input_ids=None, rng_state=None):
        """Write this cache to a session file (see `ttt.models.session`): `model` defaults to the one it was made for;
        `input_ids` (the tokens so far) and `rng_state` (the sampler's) travel with it when given."""
        from .session import save_session

        if model is None and self._model_ref is not None:
            model = self._model_ref()
        if model is None:
            raise ValueError("TTTCache.save needs the model this cache belongs to: pass model=")
        return save_session(self, path, model, input_ids, rng_state)

    @classmethod
    def load(cls, path, model) -> TTTCache:
        """The cache saved in a session file, checked against `model` (also sets `.input_ids` and `.rng_state`)."""
        from .session import load_session

        cache, input_ids, rng_state = load_session(path, model)
        cache.input_ids, cache.rng_state = input_ids, rng_state
        return cache

    def clone(self) -> TTTCache:
        """An independent copy (fork a session into several continuations; or `batch_repeat_interleave(n)`)."""
        return type(self)([layer.clone() for layer in self.layers])

    def nbytes(self) -> int:
        """Bytes held by the cache (constant in the context length)."""
        return sum(layer.nbytes() for layer in self.layers)

    def __repr__(self) -> str:
        return f"TTTCache(layers={len(self.layers)}, batch_size={self.batch_size}, seen={self.get_seq_length()})"
