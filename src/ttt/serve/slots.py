"""The slot pool: one `TTTCache` of `size` rows allocated once at start-up; a request holds one row (slot) while it
runs. Rows are gathered into a small cache for a forward and scattered back, so rows that do not take part in a step
are never touched and a failed step leaves the pool as it was.

A row's state is handled as `RowState`: per layer, the layer's `named_tensors()` for that row (each [1, ...]), the
same tensors a session file holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import TTTLayerState
from ..models import TTTCache


@dataclass
class RowState:
    """One sequence's state: `layers[i]` maps layer i's tensor names to [1, ...] tensors; `tokens`: tokens read."""

    layers: list[dict[str, Tensor]]
    tokens: int = 0

    def nbytes(self) -> int:
        """Bytes of the tensors (constant in the number of tokens read)."""
        return sum(t.numel() * t.element_size() for named in self.layers for t in named.values())

    def is_finite(self) -> bool:
        """Whether every floating-point tensor is finite (a state that has blown up is refused)."""
        return all(
            bool(torch.isfinite(t).all()) for named in self.layers for t in named.values() if t.is_floating_point()
        )


class SlotPool:
    """`size` state rows for `model` (a TTTForCausalLM), allocated once; `nbytes` is their memory.

    Raises ValueError from `load` when a row state does not fit the model (names, shapes or dtypes)."""

    def __init__(self, model: nn.Module, size: int) -> None:
        param = next(model.parameters())
        self.size = size
        self.cache = TTTCache.from_model(model, size, param.dtype, param.device)
        for layer in self.cache.layers:
            # the fresh state's weights are W0 expanded over the rows (stride 0): give every row its own memory
            layer.load_named(
                {n: t.detach().clone(memory_format=torch.contiguous_format) for n, t in layer.named_tensors().items()}
            )
        fresh = TTTCache.from_model(model, 1, param.dtype, param.device)
        self.fresh = RowState(
            [{n: t.detach().clone() for n, t in layer.named_tensors().items()} for layer in fresh.layers]
        )
        self.row_nbytes = self.fresh.nbytes()

    def nbytes(self) -> int:
        """Bytes held by the whole pool (size × row_nbytes)."""
        return self.cache.nbytes()

    def _named(self) -> list[dict[str, Tensor]]:
        return [layer.named_tensors() for layer in self.cache.layers]

    def load(self, slot: int, row: RowState | None) -> None:
        """Write `row` (None: a fresh state) into slot `slot`."""
        row = row or self.fresh
        if len(row.layers) != len(self.cache.layers):
            raise ValueError(f"the state has {len(row.layers)} layers, the model {len(self.cache.layers)}")
        for i, (mine, theirs) in enumerate(zip(self._named(), row.layers)):
            if set(mine) != set(theirs):
                raise ValueError(
                    f"the state's layer {i} tensors {sorted(theirs)} do not fit the model's {sorted(mine)}"
                )
            for name, t in mine.items():
                src = theirs[name]
                if src.shape[1:] != t.shape[1:] or src.shape[0] != 1 or src.dtype != t.dtype:
                    raise ValueError(f"the state's tensor layers.{i}.{name} does not fit the model")
                t[slot].copy_(src[0])

    def read(self, slot: int, tokens: int) -> RowState:
        """A copy of slot `slot` (detached from the pool), recorded as having read `tokens` tokens."""
        return RowState([{n: t[slot : slot + 1].clone() for n, t in named.items()} for named in self._named()], tokens)

    def gather(self, rows: Tensor) -> TTTCache:
        """A cache of the rows `rows` [R] (int64 slot indices; repeats allowed), for one forward."""
        layers = [
            TTTLayerState(
                ttt=layer.ttt.map(lambda t: t.index_select(0, rows)),
                conv={name: t.index_select(0, rows) for name, t in layer.conv.items()},
            )
            for layer in self.cache.layers
        ]
        return TTTCache(layers)

    def scatter(self, rows: Tensor, sub: TTTCache, n: int | None = None) -> None:
        """Write the first `n` rows of `sub` (all by default; `sub` from a gather, after a forward) back into the
        slots `rows` [n]: rows of `sub` past `n` (padding) are dropped."""
        n = sub.batch_size if n is None else n
        for mine, theirs in zip(self._named(), sub.layers):
            new = theirs.named_tensors()
            for name, t in mine.items():
                t.index_copy_(0, rows, new[name][:n].to(t.dtype))
