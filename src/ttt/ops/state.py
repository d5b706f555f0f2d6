"""The TTT hidden state carried between calls (per layer, for B sequences): the inner weights at the start of the
current mini-batch, the lr-weighted gradient sums of the tokens seen in it, the per-row offset in it, and the
inner optimizer's buffers. The math that moves it is in `inner.py` (the inner model and its loss) and in the forms
(`naive.py`, `dual.py` + `driver.py`, `primal.py`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import torch
from torch import Tensor

# The inner model's parameters (W1, b1[, W2, b2]), or anything shaped like them (gradient sums, updates, optimizer
# buffers): a bias is None for an inner model without bias; a weight is always a tensor (`layer_weight`).
Params = tuple[Tensor | None, ...]


@dataclass
class TTTState:
    """Inner-model state of one TTT layer for a batch of sequences.

    params:    (W1, b1[, W2, b2]), each [B, H, ...]: the inner weights at the start of the current mini-batch.
    grad_sums: same shapes, Σ_j lr_j ∇ℓ_j over the tokens already seen in the current mini-batch; None means zero.
    offset:    [B] int64, how many tokens of the current mini-batch each row has seen (0 ≤ offset < b).
    """

    params: Params
    grad_sums: Params | None
    offset: Tensor
    # inner optimizer state: one tuple per buffer kind (e.g. Adam's m, v), each shaped like params; () means zeros
    buffers: tuple[Params, ...] = ()
    steps: Tensor | None = None  # [B] int64, mini-batches closed so far (Adam's bias correction); None means 0
    retention: Tensor | None = None  # [B, H], Π r_j over the tokens seen in the current mini-batch; None means 1

    @classmethod
    def initial(cls, params: Params, batch_size: int, device: torch.device | None = None) -> TTTState:
        """State at the start of a sequence: the learned W0 (each [H, ...]) for every row, no gradients yet."""
        device = layer_weight(params, 0).device if params else device
        expanded = tmap(lambda p: p.unsqueeze(0).expand(batch_size, *p.shape), params)
        return cls(expanded, None, torch.zeros(batch_size, dtype=torch.long, device=device))

    @property
    def batch_size(self) -> int:
        return layer_weight(self.params, 0).shape[0]

    def grad_sums_or_zeros(self) -> Params:
        if self.grad_sums is not None:
            return self.grad_sums
        return tmap(torch.zeros_like, self.params)

    def buffers_or_zeros(self, count: int) -> tuple[Params, ...]:
        if self.buffers:
            return self.buffers
        return tuple(tmap(torch.zeros_like, self.params) for _ in range(count))

    def steps_or_zeros(self) -> Tensor:
        return torch.zeros_like(self.offset) if self.steps is None else self.steps

    def tensors(self) -> list[Tensor]:
        """Every tensor the state holds (for byte counts)."""
        out = [*self.params, *(self.grad_sums or ()), self.offset, *(t for kind in self.buffers for t in kind)]
        out += [t for t in (self.steps, self.retention) if t is not None]
        return [t for t in out if t is not None]

    def named_tensors(self) -> dict[str, Tensor]:
        """Every tensor of the state by name, the gradient sums at full size (zeros before the first token): the one
        list that sessions save, byte counts count and copies copy. Names: params.j, grad_sums.j, offset,
        buffers.k.j, steps, retention (absent biases, buffers and counters are left out)."""
        out: dict[str, Tensor] = {}
        for j, (p, g) in enumerate(zip(self.params, self.grad_sums_or_zeros())):
            if p is None:
                continue
            if g is None:
                raise ValueError(f"grad_sums.{j} is None but params.{j} is a tensor: grad_sums must mirror params")
            out[f"params.{j}"], out[f"grad_sums.{j}"] = p, g
        out["offset"] = self.offset
        for kind, buffer in enumerate(self.buffers):
            out.update({f"buffers.{kind}.{j}": t for j, t in enumerate(buffer) if t is not None})
        out.update({name: t for name, t in (("steps", self.steps), ("retention", self.retention)) if t is not None})
        return out

    @classmethod
    def from_named(cls, named: dict[str, Tensor], num_params: int) -> TTTState:
        """Inverse of `named_tensors` for a state with `num_params` inner tensors (W1, b1[, W2, b2])."""
        kinds = sorted({int(name.split(".")[1]) for name in named if name.startswith("buffers.")})
        return cls(
            params=tuple(named.get(f"params.{j}") for j in range(num_params)),
            grad_sums=tuple(named.get(f"grad_sums.{j}") for j in range(num_params)),
            offset=named["offset"],
            buffers=tuple(tuple(named.get(f"buffers.{k}.{j}") for j in range(num_params)) for k in kinds),
            steps=named.get("steps"),
            retention=named.get("retention"),
        )

    def map(self, fn) -> TTTState:
        """Apply `fn` to every tensor (e.g. index_select on the batch dim, `.to(device)`, `.detach()`)."""

        def opt(t: Tensor | None) -> Tensor | None:
            return None if t is None else fn(t)

        grads = None if self.grad_sums is None else tmap(fn, self.grad_sums)
        buffers = tuple(tmap(fn, kind) for kind in self.buffers)
        return TTTState(tmap(fn, self.params), grads, fn(self.offset), buffers, opt(self.steps), opt(self.retention))


def layer_weight(params: Sequence[Tensor | None], layer: int) -> Tensor:
    """W_{layer+1}, the weight of the inner model's layer `layer` (0-based) in `params` (or anything shaped like
    them). Raises ValueError when it is None: only the biases of an inner model may be absent."""
    weight = params[2 * layer]
    if weight is None:
        raise ValueError(f"inner weight W{layer + 1} is None: only the biases of an inner model may be absent")
    return weight


@overload
def tmap(fn: Callable[[Tensor], Tensor], first: Params, /) -> Params: ...


@overload
def tmap(fn: Callable[[Tensor, Tensor], Tensor], first: Params, second: Params, /) -> Params: ...


def tmap(fn: Callable[..., Tensor], first: Params, /, *rest: Params) -> Params:
    """Apply fn elementwise over parallel tuples of tensors, keeping None (an absent bias) as None.

    Raises ValueError when an entry of `first` is a tensor and the same entry of another tuple is None."""
    out: list[Tensor | None] = []
    for j, (a, *others) in enumerate(zip(first, *rest)):
        if a is None:
            out.append(None)
        elif any(t is None for t in others):
            raise ValueError(f"tmap: entry {j} is a tensor in the first tuple and None in another")
        else:
            out.append(fn(a, *others))
    return tuple(out)
