"""Multi-query associative recall (MQAR), the synthetic task of Zoology (Arora et al. 2023), written from its
description.

One example of length T with N key-value pairs over a vocabulary of V tokens:

    keys   k_1..k_N   drawn without replacement from [1, V/2)       (unique within the example)
    values v_1..v_N   drawn without replacement from [V/2, V)
    context   k_1 v_1 k_2 v_2 ... k_N v_N                            (2N tokens)
    queries   the rest (T − 2N tokens) is split into slots of two; key k_i goes to slot g_i, the gaps g_1..g_N
              drawn without replacement from {0, .., S − 1}, S = (T − 2N) / 2, with p(g) ∝ (g + 1)^(a − 1), a = 0.01
    labels    −100 everywhere except at each query's position, where the label is its value (the model must
              answer right after reading the key)
    filler    every other position of the query region holds a uniformly random token from [0, V) (Zoology's
              random non-queries), so the only signal is the queried keys.

Accuracy is measured over the labelled positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100


@dataclass(frozen=True)
class MQARSpec:
    vocab_size: int = 8192
    seq_len: int = 64
    num_kv_pairs: int = 4
    power_a: float = 0.01

    def __post_init__(self) -> None:
        T, N, V = self.seq_len, self.num_kv_pairs, self.vocab_size
        if N < 1:
            raise ValueError(f"num_kv_pairs must be >= 1, got {N}")
        if T % 2:
            raise ValueError(f"seq_len must be even (queries sit in slots of two tokens), got {T}")
        if V <= T:
            raise ValueError(f"vocab_size ({V}) must be larger than seq_len ({T})")
        if 4 * N > T:
            raise ValueError(f"seq_len ({T}) must be at least 4 × num_kv_pairs ({4 * N}): context plus query slots")
        if N > V // 2 - 1:
            raise ValueError(f"num_kv_pairs ({N}) exceeds the {V // 2 - 1} distinct keys of vocab_size {V}")
        if not 0 < self.power_a <= 1:
            raise ValueError(f"power_a must be in (0, 1], got {self.power_a}")

    @property
    def num_slots(self) -> int:
        return (self.seq_len - 2 * self.num_kv_pairs) // 2

    def gap_probabilities(self) -> Tensor:
        """p(g) ∝ (g + 1)^(a − 1) over the query slots g = 0 .. S − 1, [S] float64."""
        g = torch.arange(1, self.num_slots + 1, dtype=torch.float64)
        p = g ** (self.power_a - 1)
        return p / p.sum()


def _distinct(n: int, k: int, low: int, high: int, gen: torch.Generator) -> Tensor:
    """n rows of k distinct integers from [low, high), [n, k] (the first k of a random permutation per row)."""
    return torch.rand(n, high - low, generator=gen).argsort(dim=1)[:, :k] + low


def mqar_examples(spec: MQARSpec, num_examples: int, seed: int) -> tuple[Tensor, Tensor]:
    """`num_examples` MQAR examples: inputs [n, T] int64 and labels [n, T] int64 (−100 except at query positions,
    where the label is the queried key's value). Deterministic in `seed`."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    gen = torch.Generator().manual_seed(seed)
    T, N, V = spec.seq_len, spec.num_kv_pairs, spec.vocab_size
    n, half, context = num_examples, V // 2, 2 * N
    keys = _distinct(n, N, 1, half, gen)  # [n, N]
    values = _distinct(n, N, half, V, gen)  # [n, N]
    inputs = torch.randint(0, V, (n, T), generator=gen)  # the filler everywhere, overwritten below
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    # weighted sampling without replacement, as one draw after another (numpy's choice(replace=False, p=...))
    gaps = torch.multinomial(spec.gap_probabilities().expand(n, -1), N, replacement=False, generator=gen)  # [n, N]
    query_pos = context + 2 * gaps  # [n, N]
    inputs.scatter_(1, query_pos, keys)
    labels = torch.full((n, T), IGNORE, dtype=torch.long)
    labels.scatter_(1, query_pos, values)
    return inputs, labels
