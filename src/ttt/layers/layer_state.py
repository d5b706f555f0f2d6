"""What one TTT layer keeps between calls: the inner-model state, its convolution states, and a position count.

Fixed size: it does not grow with the context. It also implements the per-layer methods transformers' `Cache`
calls (reorder for beam search, batch expansion and selection, reset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..ops import TTTState


@dataclass
class TTTLayerState:
    """What one TTT layer keeps between calls, for B sequences: `ttt` (the inner weights at the start of the current
    mini-batch, the gradient sums, per-row offsets, optimizer buffers: `TTTState`), `conv` (the causal convs' last
    K − 1 inputs, [B, C, K − 1] each), `num_positions` (tokens consumed) and `initial` (the state `reset` returns to).
    `named_tensors` / `load_named` are its one list of tensors (sessions, byte counts, copies)."""

    ttt: TTTState
    conv: dict[str, Tensor] = field(default_factory=dict)  # name -> [B, C, K − 1]
    num_positions: int = 0  # positions consumed, padding included (HF's get_seq_length)
    initial: TTTState | None = None  # the state to `reset` to

    is_compileable = False
    is_sliding = False
    is_croppable = False  # tokens are folded into the inner weights: no rollback
    supports_early_init = False

    @property
    def batch_size(self) -> int:
        return self.ttt.batch_size

    def named_tensors(self) -> dict[str, Tensor]:
        """Every tensor the layer keeps, by name: the TTT state's (`TTTState.named_tensors`, gradient sums at full
        size) and the conv states as conv.NAME. Sessions save exactly these; `nbytes` counts them."""
        return {**self.ttt.named_tensors(), **{f"conv.{name}": t for name, t in self.conv.items()}}

    def load_named(self, named: dict[str, Tensor]) -> None:
        """Replace this state's tensors by `named` (as `named_tensors` gives them), checked against this state's
        shapes and dtypes. Raises ValueError naming the first tensor that is missing, extra or does not fit."""
        mine = self.named_tensors()
        for name in sorted(set(mine) | set(named)):
            if name not in named or name not in mine:
                raise ValueError(f"state tensor {name!r} is {'missing' if name not in named else 'not expected'}")
            if named[name].shape != mine[name].shape or named[name].dtype != mine[name].dtype:
                raise ValueError(
                    f"state tensor {name!r} is {named[name].dtype} {tuple(named[name].shape)}, this state needs "
                    f"{mine[name].dtype} {tuple(mine[name].shape)}"
                )
        ttt = {name: t for name, t in named.items() if not name.startswith("conv.")}
        self.ttt = TTTState.from_named(ttt, len(self.ttt.params))
        self.conv = {name[len("conv.") :]: t for name, t in named.items() if name.startswith("conv.")}

    def clone(self) -> TTTLayerState:
        """An independent copy (the initial state is shared: it is never written)."""
        copy = TTTLayerState(ttt=self.ttt, conv=dict(self.conv), num_positions=self.num_positions, initial=self.initial)
        copy.load_named({name: t.clone() for name, t in self.named_tensors().items()})
        if self.ttt.grad_sums is None:  # keep "no gradient yet" as it was (the copy's sums are zeros otherwise)
            copy.ttt.grad_sums = None
        return copy

    def nbytes(self) -> int:
        """Bytes of the state, counting the gradient sums at full size even before the first token materialises
        them."""
        return sum(t.numel() * t.element_size() for t in self.named_tensors().values())

    def _map(self, fn) -> None:
        self.ttt = self.ttt.map(fn)
        self.conv = {name: fn(t) for name, t in self.conv.items()}
        if self.initial is not None:
            self.initial = self.initial.map(fn)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: Tensor) -> None:
        self._map(lambda t: t[indices])

    def reset(self) -> None:
        if self.initial is not None:
            self.ttt = self.initial
        self.conv = {name: torch.zeros_like(t) for name, t in self.conv.items()}
        self.num_positions = 0

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a TTT state cannot be cropped: the tokens are folded into the inner weights")

    def offload(self) -> None:
        self._map(lambda t: t.to("cpu"))

    def prefetch(self) -> None:
        pass

    def get_seq_length(self) -> int:
        return self.num_positions

    def get_max_length(self) -> int:
        return -1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.num_positions + query_length, 0
