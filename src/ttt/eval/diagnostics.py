"""The paper's Fig. 4 diagnostics: how well the inner model fits each token, before and after learning from it.

For every TTT layer and token t (per head, then averaged over heads and sequences):

    ℓ(W0; x_t)       the learned initial weights, no test-time training
    ℓ(W_{t−1}; x_t)  the weights token t−1 read out with (before seeing x_t)
    ℓ(W_t; x_t)      the weights token t reads out with (after its own step)

with ℓ the layer's own self-supervised loss. Whatever the layer's options (inner optimizer, retention / forget gate,
inner LN, residual), the loss and the read-out share their conventions, so

    ℓ(W; k, v) = ½ ‖read_out(k, f(k; W)) − v‖²        (residual: read_out(k, y) = k + LN(y); else LN(y) or y)

and the layer's own inner loop run with the query replaced by the key gives ℓ(W_t; x_t) at every token at once;
with the query of token t−1 replaced by k_t it gives ℓ(W_{t−1}; x_t). The curves therefore follow the layer's form
and options exactly (tested against the naive token-by-token oracle for each option).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers import TTTMLP, TTTBase, TTTLinear
from ..ops import forward_keys, read_out


def _loss(z: Tensor, v: Tensor) -> Tensor:
    """½ ‖z − v‖² per token, mean over batch and heads: z, v [B, T, H, D] -> [T]."""
    return 0.5 * (z - v).pow(2).sum(-1).mean(dim=(0, 2))


@torch.no_grad()
def inner_loss_trace(layer: TTTBase, x: Tensor) -> dict[str, Tensor]:
    """x: the layer's input [B, T, C]. Returns three [T] curves (mean over batch and heads): "W0", "W_prev", "W_t".

    Raises TypeError for a layer type other than TTTLinear / TTTMLP (whose inner model is the stack of affine maps
    these curves are defined for)."""
    if not isinstance(layer, (TTTLinear, TTTMLP)):
        raise TypeError(f"inner-loop diagnostics are defined for TTTLinear and TTTMLP, not {type(layer).__name__}")
    q, k, v, lr, state, _ = layer.projections(x)
    # ℓ(W_t; x_t): the layer's inner loop (its configured form and options) reading out at k_t
    after, _ = layer.inner_loop(x, k, k, v, lr, state, None)
    # ℓ(W_{t−1}; x_t): token t−1 reads out at k_t (the last query is unused)
    before, _ = layer.inner_loop(x, torch.cat([k[:, 1:], k[:, -1:]], 1), k, v, lr, state, None)
    # ℓ(W0; x_t): the initial weights themselves (no step, no retention)
    spec = layer.inner_spec()
    keys = k.transpose(1, 2)  # [B, H, T, D]
    _, preacts = forward_keys(state.params, keys)
    initial = read_out(keys, preacts[-1], spec.norm, spec.residual, spec.eps).transpose(1, 2)
    w0 = _loss(initial, v)
    w_prev = torch.cat([w0[:1], _loss(before[:, :-1], v[:, 1:])])
    return {"W0": w0, "W_prev": w_prev, "W_t": _loss(after, v)}


def layer_inputs(model: nn.Module, input_ids: Tensor) -> list[tuple[TTTBase, Tensor]]:
    """Run the model once and capture every TTT layer's input."""
    captured: list[tuple[TTTBase, Tensor]] = []
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, kwargs: captured.append((mod, args[0] if args else kwargs["hidden_states"])),
            with_kwargs=True,
        )
        for m in model.modules()
        if isinstance(m, TTTBase)
    ]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return captured
