"""Inner-loop optimizers: how the mini-batch gradient sum becomes an update of the inner weights.

Mini-batch TTT takes every gradient of a mini-batch at its start weights W. With G_i = Σ_{j ≤ i} lr_j ∇ℓ_j(W) the
gradient sum up to token i (position i in the mini-batch), c_i ∈ (0, 1] the retention (weight decay / forget
gate, 1 when off) accumulated since the mini-batch start, S the optimizer state and n the number of mini-batches
already closed, token i reads out with

    W_i = c_i W − tf_i U(G_i; S, n)

(the update the optimizer would make if the mini-batch ended at token i), and the mini-batch closes with
W ← W_{b−1}, S ← advance(G_{b−1}; S), n ← n + 1. The optimizer state advances once per mini-batch; every token of
a mini-batch sees the same S. Per parameter tensor (elementwise unless said otherwise):

    gd        U = G                                                                     S = ()
    momentum  U = M' = β M + G                                  advance: M ← M'          S = (M,)   (torch SGD)
    adam      m' = β1 m + (1 − β1) G,   v' = β2 v + (1 − β2) G²,
              U = α (m' / (1 − β1^{n+1})) / (sqrt(v' / (1 − β2^{n+1})) + ε)   advance: m, v ← m', v'   S = (m, v)
    muon      M' = μ M + (1 − μ) G,  U = α √max(1, rows/cols) · NS5((1 − μ) G + μ M')   (Nesterov; M' without)
                                                                advance: M ← M'          S = (M,)

NS5 is the Newton-Schulz quintic iteration (a, b, c) = (3.4445, −4.7750, 2.0315), 5 steps, of X / ‖X‖_F: an
approximate orthogonalisation UVᵀ of X = USVᵀ; biases are 1 × D matrices. With mini-batch size 1, tf = 1, c = 1 these
are exactly torch.optim.SGD(momentum=β), Adam(lr=α) and Muon(lr=α, weight_decay=0) on the per-token losses lr_t ℓ_t
(tested). gd and momentum are linear in G, so the dual form handles them; adam and muon need per-token weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .state import Params, tmap

OPTIMIZERS = ("gd", "momentum", "adam", "muon")
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
BUFFERS = {"gd": (), "momentum": ("momentum",), "adam": ("exp_avg", "exp_avg_sq"), "muon": ("momentum",)}


def newton_schulz(x: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """NS5(X) over the last two dims of x [..., m, n], in x's dtype: X ← X/‖X‖, then X ← a X + (b A + c A²) X with
    A = X Xᵀ (on the wide orientation)."""
    a, b, c = NS_COEFFICIENTS
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.transpose(-1, -2)
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp_min(eps)
    for _ in range(steps):
        gram = x @ x.transpose(-1, -2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.transpose(-1, -2) if tall else x


@dataclass(frozen=True)
class InnerOptimizer:
    """The inner loop's optimizer (see the module docstring). `lr` is α, the step size of adam and muon (gd and
    momentum take their step size from the per-token lr and the token factor, as the paper's GD)."""

    name: str = "gd"
    momentum: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    lr: float = 1e-3
    nesterov: bool = True
    ns_steps: int = 5

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"inner optimizer must be one of {OPTIMIZERS}, got {self.name!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"inner optimizer momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 <= self.beta2 < 1.0:
            raise ValueError(f"inner optimizer beta2 must be in [0, 1), got {self.beta2}")
        if self.eps <= 0 or self.lr <= 0 or self.ns_steps < 1:
            raise ValueError(
                f"inner optimizer needs eps > 0, lr > 0, ns_steps >= 1 (got {self.eps}, {self.lr}, {self.ns_steps})"
            )

    @property
    def buffer_names(self) -> tuple[str, ...]:
        return BUFFERS[self.name]

    @property
    def is_linear(self) -> bool:
        """U is linear in G (the dual form applies)."""
        return self.name in ("gd", "momentum")

    @property
    def needs_steps(self) -> bool:
        return self.name == "adam"

    def init_buffers(self, params: Params) -> tuple[Params, ...]:
        return tuple(tuple(None if p is None else torch.zeros_like(p) for p in params) for _ in self.buffer_names)

    def update(
        self, grads: Params, buffers: tuple[Params, ...], steps: Tensor | None
    ) -> tuple[Params, tuple[Params, ...]]:
        """U(G; S, n) and the advanced state S'. grads: per parameter [B, H, (N,) ...] (N: tokens of a mini-batch,
        optional); buffers: per kind, per parameter, broadcastable to grads; steps: n broadcastable to grads (None
        only for an optimizer that does not count steps: `needs_steps`). Raises ValueError when adam gets no steps."""
        name = self.name
        if name == "gd":
            return grads, ()
        if name == "momentum":
            new = tmap(lambda g, m: self.momentum * m + g, grads, buffers[0])
            return new, (new,)
        if name == "adam":
            if steps is None:
                raise ValueError("the adam inner optimizer needs steps (the number of mini-batches closed so far)")
            b1, b2 = self.momentum, self.beta2
            first = tmap(lambda g, m: b1 * m + (1 - b1) * g, grads, buffers[0])
            second = tmap(lambda g, s: b2 * s + (1 - b2) * g * g, grads, buffers[1])
            dtype = next(g for g in grads if g is not None).dtype
            t = (steps + 1).to(dtype)
            fix1, fix2 = 1 - b1**t, 1 - b2**t

            def step(m: Tensor, s: Tensor) -> Tensor:
                return self.lr * (m / fix1) / ((s / fix2).sqrt() + self.eps)

            return tmap(step, first, second), (first, second)
        mu = self.momentum
        new = tmap(lambda g, m: mu * m + (1 - mu) * g, grads, buffers[0])

        def ortho(g: Tensor, m: Tensor) -> Tensor:
            direction = (1 - mu) * g + mu * m if self.nesterov else m
            scale = max(1.0, g.shape[-2] / g.shape[-1]) ** 0.5
            return self.lr * scale * newton_schulz(direction, self.ns_steps)

        return tmap(ortho, grads, new), (new,)


GD = InnerOptimizer()
