"""The paper's Fig. 4 diagnostics: how well the inner model fits each token, before and after learning from it.

For every TTT layer and token t (per head, then averaged over heads and sequences):

    ℓ(W0; x_t)       the learned initial weights, no test-time training
    ℓ(W_{t−1}; x_t)  the weights token t−1 read out with (before seeing x_t)
    ℓ(W_t; x_t)      the weights token t reads out with (after its own gradient step)

with ℓ(W; x) = ½ ‖LN(f(k; W)) − (v − k)‖² the layer's self-supervised loss. With mini-batch TTT, W_t is token t's
effective weights W − tf_i G (G: the lr-weighted gradient sum of its mini-batch up to t).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..layers import TTTBase
from ..ops import ttt_primal_step
from ..ops.ln import ln_fwd
from ..ops.state import TTTState, forward_keys, tmap


def inner_loss(params: tuple[Tensor, ...], k: Tensor, v: Tensor, ln: tuple[Tensor, Tensor]) -> Tensor:
    """ℓ per row and head for one token: k, v [B, H, D], params [B, H, ...] -> [B, H]."""
    _, preacts = forward_keys(params, k.unsqueeze(-2))
    y = ln_fwd(preacts[-1], ln[0], ln[1])
    return 0.5 * (y - (v - k).unsqueeze(-2)).pow(2).sum(-1).squeeze(-1)


def effective_params(state: TTTState, token_factor: Tensor, position: Tensor) -> tuple[Tensor, ...]:
    """W − tf[position] G per row (W itself where G is None or position < 0)."""
    if state.grad_sums is None:
        return state.params
    tf = torch.where(position >= 0, token_factor[position.clamp(min=0)], torch.zeros_like(token_factor[0]))
    tf = tf.view(-1, 1, 1, 1)
    return tmap(lambda p, g: p - tf * g, state.params, state.grad_sums)


@torch.no_grad()
def inner_loss_trace(layer: TTTBase, x: Tensor) -> dict[str, Tensor]:
    """x: the layer's input [B, T, C]. Returns three [T] curves (mean over batch and heads): "W0", "W_prev", "W_t"."""
    q, k, v, lr, state, _ = layer.views(x)
    tf = layer.token_factor()
    ln = (layer.ttt_norm_weight.unsqueeze(1), layer.ttt_norm_bias.unsqueeze(1))
    w0 = state.params
    curves = {"W0": [], "W_prev": [], "W_t": []}
    for t in range(x.shape[1]):
        curves["W0"].append(inner_loss(w0, k[:, t], v[:, t], ln).mean())
        before = effective_params(state, tf, state.offset - 1)
        curves["W_prev"].append(inner_loss(before, k[:, t], v[:, t], ln).mean())
        tf_t = tf[state.offset].view(-1, 1, 1, 1)
        _, state = ttt_primal_step(
            q[:, t], k[:, t], v[:, t], lr[:, t], tf, layer.ttt_norm_weight, layer.ttt_norm_bias, state
        )
        # token t reads out with W − tf_i G (G including its own gradient); when it closed its mini-batch that is
        # exactly the new W
        closed = (state.offset == 0).view(-1, 1, 1, 1)
        open_weights = tmap(lambda p, g, s=tf_t: p - s * g, state.params, state.grad_sums_or_zeros())
        after = tmap(lambda p, o, c=closed: torch.where(c, p, o), state.params, open_weights)
        curves["W_t"].append(inner_loss(after, k[:, t], v[:, t], ln).mean())
    return {name: torch.stack(values) for name, values in curves.items()}


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
